package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ward-pacs/ward/viewer"
	webviewer "github.com/ward-pacs/ward/web/viewer"
)

// The viewer ([web] viewer): OHIF's bundle, served at / by web/viewer.
// By default it lives in DATA/viewer; ward serve (FetchViewer) fetches it
// there with npm when it is missing, in the background: DIMSE and
// DICOMweb are served meanwhile, and the viewer from when it is in.

// viewerFetchTimeout bounds a first run's fetch.
const viewerFetchTimeout = 10 * time.Minute

// ViewerDir is the viewer directory under a data directory.
func ViewerDir(dataDir string) string { return filepath.Join(dataDir, "viewer") }

// viewerDist is the bundle directory to serve, "" when the viewer is off.
func (s *Server) viewerDist() string {
	w := &s.Config.Web
	switch {
	case w.ViewerOff():
		return ""
	case w.Viewer != "":
		return w.Viewer
	}
	return filepath.Join(ViewerDir(s.Config.DataDir), viewer.DistDir)
}

// setupViewer loads the viewer's bundle into v, or says why there is
// none; it reports whether to fetch it.
func (s *Server) setupViewer(v *webviewer.Viewer) (fetch bool) {
	dist := s.viewerDist()
	if dist == "" {
		return false
	}
	var err error
	if s.Config.Web.Viewer != "" {
		err = checkBundle(dist)
	}
	if err == nil {
		err = v.Install(dist)
	}
	switch {
	case err == nil:
		if s.Config.Web.Viewer == "" {
			if got, want := viewer.Installed(ViewerDir(s.Config.DataDir)), viewer.Want(); got != want {
				s.Logger.Warn("the viewer in the data directory is not the version this Ward pins: ward viewer fetch replaces it", "installed", got, "pinned", want)
			}
		}
		s.Logger.Info("serving the OHIF viewer at /", "bundle", dist)
		return false
	case s.Config.Web.Viewer != "" || !errors.Is(err, os.ErrNotExist) && !errors.Is(err, webviewer.ErrNotOHIF):
		v.SetMissing("the viewer is not available: " + err.Error())
		s.Logger.Error("the viewer is not served", "err", err.Error())
		return false
	}
	v.SetMissing("the viewer is not installed: run ward viewer fetch (it needs npm)")
	if !s.FetchViewer {
		return false
	}
	return true
}

// fetchViewer fetches the viewer into the data directory and installs it
// in v, saying so in the log; without npm, it says how to get it.
func (s *Server) fetchViewer(ctx context.Context, v *webviewer.Viewer) {
	dir := ViewerDir(s.Config.DataDir)
	version, _ := viewer.Version()
	if err := viewer.CheckNPM(); err != nil {
		s.Logger.Warn("the web viewer is not installed and npm is missing: DICOMweb is served without it; install npm, then run ward viewer fetch (or set [web] viewer to an OHIF bundle)", "err", err.Error())
		return
	}
	s.Logger.Warn("first run: fetching the OHIF viewer with npm; DICOMweb is served meanwhile", "package", viewer.Package+"@"+version, "into", dir)
	v.SetMissing("the viewer is being fetched (first run); reload in a minute")
	ctx, cancel := context.WithTimeout(ctx, viewerFetchTimeout)
	defer cancel()
	start := time.Now()
	if err := viewer.Fetch(ctx, dir, debugWriter{s.Logger}); err != nil {
		v.SetMissing("the viewer could not be fetched: run ward viewer fetch (it needs npm and the package registry)")
		s.Logger.Warn("the web viewer could not be fetched: DICOMweb is served without it; run ward viewer fetch to try again", "err", err.Error())
		return
	}
	if err := v.Install(filepath.Join(dir, viewer.DistDir)); err != nil {
		v.SetMissing(fmt.Sprintf("the viewer fetched is unusable: %v", err))
		s.Logger.Error("the web viewer fetched is unusable", "err", err.Error())
		return
	}
	s.Logger.Warn("the OHIF viewer is fetched and served at /", "package", viewer.Package+"@"+version, "took", time.Since(start).Round(time.Millisecond).String())
}

// debugWriter logs what npm prints, at debug level.
type debugWriter struct{ log *slog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			w.log.Debug("npm", "out", l)
		}
	}
	return len(p), nil
}

// errBundleOpen: a bundle others may change.
var errBundleOpen = errors.New("other local users may change it, and its scripts run with the signed-in user's access: chmod -R go-w it")

// checkBundle refuses a viewer bundle ([web] viewer) that group or
// others may write to (the one in the data directory passes its checks).
func checkBundle(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o022 != 0 {
			return fmt.Errorf("%s: %w", p, errBundleOpen)
		}
		return nil
	})
}
