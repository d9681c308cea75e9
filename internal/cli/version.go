package cli

import (
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

func runVersion(e *env, args []string) error {
	fmt.Fprintf(e.stdout, "ward %s (%s %s/%s)\nimplementation class UID %s, version name %s\n",
		versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH, dicom.ImplementationClassUID, dicom.ImplementationVersionName)
	return nil
}
