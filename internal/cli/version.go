package cli

import (
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/ward-pacs/ward/dicom"
)

// Version is set at build time with -ldflags "-X github.com/ward-pacs/ward/internal/cli.Version=...".
var Version = "dev"

func versionString() string {
	v := Version
	if v == "dev" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" && len(s.Value) >= 12 {
					v = "dev-" + s.Value[:12]
				}
			}
		}
	}
	return v
}

var versionCmd = &command{
	name: "version", summary: "print the version",
	help:  "Prints Ward's version, the Go version and platform it was built with, and\nthe implementation class UID and version name it sends its peers.",
	flags: func(*flag.FlagSet) runFunc { return printVersion },
}

func printVersion(e *env, _ []string) error {
	fmt.Fprintf(e.stdout, "ward %s (%s %s/%s)\nimplementation class UID %s, version name %s\n",
		versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH, dicom.ImplementationClassUID, dicom.ImplementationVersionName)
	return nil
}
