package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/ward-pacs/ward/internal/server"
	"github.com/ward-pacs/ward/viewer"
)

var viewerCmd = &command{
	name: "viewer", summary: "fetch the OHIF web viewer",
	help: `ward serve serves the OHIF viewer at / of its web listener, from
DATA/viewer (or [web] viewer). The viewer is OHIF's prebuilt bundle, the
npm package ` + viewer.Package + ` at the version this Ward pins, checked
against the integrity its package-lock.json records (both are built into
ward). On its first run ward serve fetches it with npm, in the background;
ward viewer fetch does it by hand.`,
	subs: []*command{
		{
			name: "fetch", summary: "fetch the pinned OHIF bundle into DATA/viewer with npm",
			args: "[--config FILE | --data DIR]",
			help: `Runs npm ci (no install scripts) for the pinned ` + viewer.Package + ` in a
directory under DATA/viewer, keeps its dist/ without the AI tools and the
microscopy viewer, closes its files (0600, directories 0700) and puts it
in place of the bundle there was: restart a running ward serve after it
(it serves the bundle it loaded at start). Needs npm and the package
registry.`,
			flags: viewerFetchFlags,
		},
	},
}

func viewerFetchFlags(fs *flag.FlagSet) runFunc {
	df := addDataFlags(fs)
	return func(e *env, _ []string) error {
		c, err := df.load()
		if err != nil {
			return err
		}
		dir := server.ViewerDir(c.DataDir)
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		version, integrity := viewer.Version()
		fmt.Fprintf(e.stderr, "fetching %s@%s (%s) with npm into %s\n", viewer.Package, version, integrity, dir)
		if err := viewer.Fetch(ctx, dir, e.stderr); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s@%s is in %s\n", viewer.Package, version, filepath.Join(dir, viewer.DistDir))
		return nil
	}
}
