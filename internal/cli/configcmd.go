package cli

import (
	"errors"
	"flag"
	"fmt"

	"github.com/ward-pacs/ward/internal/config"
)

// errRisky: `ward config check` found settings ward serve refuses.
var errRisky = errors.New("risky settings found")

func runConfig(e *env, args []string) error {
	usage := func() error {
		fmt.Fprintln(e.stderr, `Usage:
  ward config check [--config FILE | --data DIR] [--loopback-any-ae]

Lists every risky setting of the configuration that 'ward serve' would run
with (DATA/ward.toml, or --config FILE), most severe first, each with its
severity and the fix. It exits 1 when a setting is one 'ward serve' refuses
to start with, 0 otherwise. 'ward serve' runs the same check at every start
and logs the findings it starts with as warnings.`)
		return errUsage
	}
	if len(args) < 1 {
		return usage()
	}
	sub, args := args[0], args[1:]
	if sub == "-h" || sub == "--help" || sub == "help" {
		usage()
		return flag.ErrHelp
	}
	if sub != "check" {
		return usage()
	}
	fs := newFlagSet(e, "config check", "[flags]")
	configPath := fs.String("config", "", "configuration file (TOML; default: DATA/ward.toml when present)")
	dataDir := fs.String("data", "", "data directory (default "+config.DefaultDataDir+")")
	anyAE := fs.Bool("loopback-any-ae", false, "check as if ward serve ran with --loopback-any-ae")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usage()
	}
	c, err := loadConfig(*configPath, *dataDir)
	if err != nil {
		return err
	}
	if *anyAE {
		c.DICOM.LoopbackAnyAE = true
	}
	findings := c.Check()
	if len(findings) == 0 {
		fmt.Fprintln(e.stdout, "no risky settings")
		return nil
	}
	for _, f := range findings {
		fmt.Fprintln(e.stdout, f.String())
	}
	if n := len(config.Refused(findings)); n > 0 {
		fmt.Fprintf(e.stdout, "%d setting(s) ward serve refuses to start with\n", n)
		return errRisky
	}
	return nil
}
