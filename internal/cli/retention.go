package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/termsafe"
)

var retentionCmd = &command{
	name: "retention", summary: "list or delete the studies the [retention] rules say are due",
	help: `The [retention] rules of ward.toml delete studies older than a period, by
study date or by receipt, per source and modality (docs/configuration.md,
"Retention"). ward serve applies them in a background pass (interval,
default daily); these commands show and run a pass by hand. When ward
serve runs on the data directory they ask it over its admin socket;
otherwise they open the data directory themselves.`,
	subs: []*command{
		{
			name: "plan", summary: "list the studies the rules would delete now; changes nothing",
			args: "[--json] [--config FILE | --data DIR]",
			help: `Lists each study the rules would delete now: its UID, study date, newest
receipt, modalities, series and instance counts, and the rule. No patient
names. Changes nothing.`,
			flags: retentionFlags(false),
		},
		{
			name: "run", summary: "delete the studies the rules say are due, audited as Study Deleted",
			args: "[--yes] [--force] [--max N] [--json] [--config FILE | --data DIR]",
			help: `Shows how many studies the rules would delete and, once confirmed (type
yes, or --yes), deletes them as ward study delete does, each recorded as
DICOM Study Deleted (PS3.15 A.5.3.8) with the rule as the reason, at most
[retention] max_deletions (or --max) in one pass. A pass that would delete
more than [retention] max_percent of the archive's studies deletes nothing
unless --force.`,
			flags: retentionFlags(true),
		},
	},
}

func retentionFlags(run bool) func(*flag.FlagSet) runFunc {
	return func(fs *flag.FlagSet) runFunc {
		df := addDataFlags(fs)
		asJSON := fs.Bool("json", false, "print the result as JSON")
		var yes, force *bool
		var maxN *int
		if run {
			yes = fs.Bool("yes", false, "do not ask for confirmation")
			force = fs.Bool("force", false, "delete even when the pass would delete more than [retention] max_percent of the archive")
			maxN = fs.Int("max", 0, "delete at most this many studies in this pass (0: [retention] max_deletions)")
		}
		return func(e *env, _ []string) error {
			c, err := df.load()
			if err != nil {
				return err
			}
			ctx := context.Background()
			call := func(r *admin.StudyRequest) (*admin.RetentionResult, error) {
				return remoteOrHere(ctx, e, c, func() (*admin.RetentionResult, error) { return admin.RemoteRetention(ctx, c.DataDir, r) },
					func(adm *admin.Admin) (*admin.RetentionResult, error) { return adm.Retention(ctx, admin.Operator(), r) })
			}
			plan, err := call(&admin.StudyRequest{Op: "retention-plan"})
			if err != nil {
				return err
			}
			if plan.NoRules {
				if run {
					return errors.New(admin.NoRetentionRules)
				}
				if !*asJSON {
					fmt.Fprintln(e.stdout, admin.NoRetentionRules)
					return nil
				}
			}
			if !run {
				if *asJSON {
					return printJSON(e, plan)
				}
				printPlan(e, plan)
				return nil
			}
			if *maxN < 0 {
				return errors.New("--max must not be negative")
			}
			if plan.Candidates == 0 {
				fmt.Fprintf(e.stdout, "no study is due for deletion (%s in the archive)\n", plural(plan.Studies, "study", "studies"))
				return nil
			}
			if !*yes {
				fmt.Fprintf(e.stdout, "the retention rules would delete %s of %d (ward retention plan lists them)\n", plural(plan.Candidates, "study", "studies"), plan.Studies)
				if !confirm(e, "delete them") {
					return errors.New("nothing deleted: not confirmed")
				}
			}
			res, err := call(&admin.StudyRequest{Op: "retention-run", Force: *force, MaxDeletions: *maxN})
			if err != nil {
				return err
			}
			if *asJSON {
				if err := printJSON(e, res); err != nil {
					return err
				}
			}
			if res.Refused != "" {
				return errors.New(res.Refused)
			}
			var failed []error
			for _, d := range res.Deleted {
				if d.Error != "" {
					failed = append(failed, fmt.Errorf("study %s: %s", d.Study, d.Error))
				} else if !*asJSON {
					fmt.Fprintf(e.stdout, "deleted study %s: %d instances\n", termsafe.Quote(d.Study), d.Instances)
				}
			}
			if !*asJSON {
				fmt.Fprintf(e.stdout, "deleted %s", plural(len(res.Deleted)-len(failed), "study", "studies"))
				if res.Capped {
					fmt.Fprintf(e.stdout, "; the cap of this pass was reached, %d more are due", res.Candidates-len(res.Deleted))
				}
				fmt.Fprintln(e.stdout)
			}
			return errors.Join(failed...)
		}
	}
}

func printPlan(e *env, p *admin.RetentionResult) {
	for _, c := range p.Planned {
		recv := "-"
		if !c.Received.IsZero() {
			recv = c.Received.UTC().Format("2006-01-02T15:04:05Z")
		}
		date := c.StudyDate
		if date == "" {
			date = "-"
		}
		fmt.Fprintf(e.stdout, "study %s date %s received %s modalities %s series %d instances %d rule %s\n",
			termsafe.Quote(c.Study), termsafe.Quote(date), recv, termsafe.Quote(strings.Join(c.Modalities, `\`)), c.Series, c.Instances, termsafe.Quote(c.Rule))
	}
	if n := p.Candidates - len(p.Planned); n > 0 {
		fmt.Fprintf(e.stdout, "... and %d more\n", n)
	}
	fmt.Fprintf(e.stdout, "%s of %d due for deletion\n", plural(p.Candidates, "study", "studies"), p.Studies)
}

func printJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// confirm asks on standard error and reads one line of standard input:
// only "yes" confirms.
func confirm(e *env, what string) bool {
	fmt.Fprintf(e.stderr, "%s? type yes to go on: ", what)
	line, _ := bufio.NewReader(e.stdin).ReadString('\n')
	return strings.TrimSpace(line) == "yes"
}
