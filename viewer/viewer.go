// Package viewer fetches the web viewer Ward serves: the OHIF viewer's
// prebuilt bundle (the dist/ of the npm package @ohif/app), at the version
// package.json pins and with the integrity package-lock.json records. Both
// files are embedded in the binary, so `ward serve` and `ward viewer
// fetch` can fetch it with npm on a machine that has only the binary. The
// lock file lists @ohif/app alone: its dist/ is built, so none of its
// build dependencies is fetched, and npm runs no install script.
//
// The bundle goes to DATA/viewer/dist, trimmed of what Ward does not
// serve (the AI tools' models and the microscopy viewer), with the modes
// of every file in the data directory (0600, directories 0700).
package viewer

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ward-pacs/ward/durable"
)

//go:embed package.json package-lock.json
var npmFiles embed.FS

// Package is the npm package of the viewer.
const Package = "@ohif/app"

// DistDir is where, in a viewer directory, the bundle lives.
const DistDir = "dist"

// versionFile records, in a viewer directory, what was fetched.
const versionFile = "version"

// Trimmed are the parts of OHIF's dist/ Ward leaves out: the AI tools'
// models and runtime (ort/, 136 MB), the slide microscopy viewer (20 MB),
// and the files of OHIF's own hosting (a service worker Ward does not
// register, and static-host rewrite rules).
var Trimmed = []string{"ort", "dicom-microscopy-viewer", "sw.js", "serve.json", "_headers", "_redirects"}

// ErrNoNPM: npm is not on the PATH.
var ErrNoNPM = errors.New("npm is not installed (apt-get install npm, or install Node.js)")

// Version is the pinned version of Package, and its integrity as the
// lock file records it.
func Version() (version, integrity string) {
	var lock struct {
		Packages map[string]struct {
			Version   string `json:"version"`
			Integrity string `json:"integrity"`
		} `json:"packages"`
	}
	b, err := npmFiles.ReadFile("package-lock.json")
	if err != nil || json.Unmarshal(b, &lock) != nil {
		panic("viewer: the embedded package-lock.json is unreadable")
	}
	p := lock.Packages["node_modules/"+Package]
	return p.Version, p.Integrity
}

// CheckNPM reports ErrNoNPM when npm is not on the PATH.
func CheckNPM() error {
	if _, err := exec.LookPath("npm"); err != nil {
		return ErrNoNPM
	}
	return nil
}

// Installed reports the version fetched into dir (a viewer directory,
// DATA/viewer), "" when there is no bundle there.
func Installed(dir string) string {
	if _, err := os.Stat(filepath.Join(dir, DistDir, "index.html")); err != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(dir, versionFile))
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// Want is what Installed reports once the pinned version is fetched.
func Want() string {
	v, integrity := Version()
	return Package + "@" + v + " " + integrity
}

// Fetch fetches the pinned bundle into dir/dist with npm (npm ci in a
// directory under dir, from the embedded package files, without install
// scripts), trims it and closes its files to other users. npm's output
// goes to out. An older bundle is replaced only once the new one is
// complete.
func Fetch(ctx context.Context, dir string, out io.Writer) error {
	npm, err := exec.LookPath("npm")
	if err != nil {
		return ErrNoNPM
	}
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	removeStale(dir)
	work, err := os.MkdirTemp(dir, ".fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	for _, name := range []string{"package.json", "package-lock.json"} {
		b, _ := npmFiles.ReadFile(name)
		if err := os.WriteFile(filepath.Join(work, name), b, 0o600); err != nil {
			return err
		}
	}
	cmd := exec.CommandContext(ctx, npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev", "--omit=optional", "--no-update-notifier")
	cmd.Dir = work
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false", "npm_config_fund=false")
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("npm ci %s: %w", Package, err)
	}
	pkg := filepath.Join(work, "node_modules", filepath.FromSlash(Package))
	if err := checkVersion(pkg); err != nil {
		return err
	}
	dist := filepath.Join(pkg, "dist")
	if _, err := os.Stat(filepath.Join(dist, "index.html")); err != nil {
		return fmt.Errorf("%s has no dist/index.html: not a viewer bundle", Package)
	}
	for _, t := range Trimmed {
		if err := os.RemoveAll(filepath.Join(dist, t)); err != nil {
			return err
		}
	}
	if err := closeTree(dist); err != nil {
		return err
	}
	// Swap the new bundle in: the old one (if any) moves aside first, so
	// that dir/dist is always either the old bundle or the new one.
	fresh := filepath.Join(work, "fresh")
	if err := os.Rename(dist, fresh); err != nil {
		return err
	}
	target := filepath.Join(dir, DistDir)
	if _, err := os.Lstat(target); err == nil {
		if err := os.Rename(target, filepath.Join(work, "old")); err != nil {
			return err
		}
	}
	if err := os.Rename(fresh, target); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, versionFile), []byte(Want()+"\n"), 0o600); err != nil {
		return err
	}
	return durable.Sync(dir)
}

// staleAfter: a work directory older than this is left from a fetch that
// was killed (one in progress takes a minute or two).
const staleAfter = time.Hour

// removeStale removes the work directories of fetches that did not finish.
func removeStale(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), ".fetch-") {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleAfter {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// checkVersion makes sure npm installed the pinned version.
func checkVersion(pkg string) error {
	b, err := os.ReadFile(filepath.Join(pkg, "package.json"))
	if err != nil {
		return fmt.Errorf("%s not installed by npm: %w", Package, err)
	}
	var p struct {
		Name, Version string
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("%s: package.json: %w", Package, err)
	}
	if want, _ := Version(); p.Name != Package || p.Version != want {
		return fmt.Errorf("npm installed %s@%s, not %s@%s", p.Name, p.Version, Package, want)
	}
	return nil
}

// closeTree gives every directory under root mode 0700 and every file
// 0600, as for everything in a data directory; a link or special file
// is refused (a viewer bundle has none).
func closeTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Chmod(p, 0o700)
		case d.Type().IsRegular():
			return os.Chmod(p, 0o600)
		default:
			return fmt.Errorf("viewer bundle: %s is not a regular file", p)
		}
	})
}
