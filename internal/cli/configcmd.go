package cli

import (
	"errors"
	"flag"
	"fmt"

	"github.com/ward-pacs/ward/internal/config"
)

// errRisky: `ward config check` found settings ward serve refuses.
var errRisky = errors.New("risky settings found")

var configCmd = &command{
	name: "config", summary: "check the configuration for risky settings",
	help: "Checks the configuration that 'ward serve' runs with.",
	subs: []*command{{
		name: "check", summary: "list the risky settings ward serve would run with, most severe first",
		args: "[--config FILE | --data DIR] [any other ward serve flag]",
		help: `Lists every risky setting of the configuration that 'ward serve' would run
with (DATA/ward.toml, or --config FILE, with the same flags applied over
it as ward serve applies), most severe first, each with its
severity and the fix. It exits 1 when a setting is one 'ward serve' refuses
to start with, 0 otherwise. 'ward serve' runs the same check at every start
and logs the findings it starts with as warnings.`,
		flags: configCheckFlags,
	}},
}

func configCheckFlags(fs *flag.FlagSet) runFunc {
	load := serveFlags(fs) // the same flags as ward serve: check what it would run
	return func(e *env, _ []string) error {
		c, err := load()
		if err != nil {
			return err
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
}
