package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/ward-pacs/ward/scan"
)

// exitFindings is the exit status when --fail-on matched a finding.
const exitFindings = 3

var scanCmd = &command{
	name: "scan", summary: "audit hosts you are responsible for for exposed DICOM and web services",
	args: "[flags] TARGET... (host, host:port, address, CIDR)", maxArgs: anyArgs,
	help: `Probes the targets (and those of --targets-file) for DICOM and web
services that answer without authentication, and reports what each
exposes, with a severity. Scan only hosts you are responsible for. With
--fail-on it exits 3 when a finding at or above that severity is found.`,
	flags: scanFlags,
}

func scanFlags(fs *flag.FlagSet) runFunc {
	var excludes keyList
	targetsFile := fs.String("targets-file", "", "read more targets from `FILE` (one or more per line, # comments)")
	fs.Var(&excludes, "exclude", "host, address or CIDR never to touch; repeatable, comma-separated")
	ports := fs.String("ports", joinPorts(scan.DefaultPorts), "ports to probe on targets given without a port (list and ranges: 104,11112,8000-8010)")
	allowLarge := fs.Bool("allow-large", false, fmt.Sprintf("allow a scope of more than %d addresses (a /16), up to %d", scan.LargeScope, scan.MaxScope))
	concurrency := fs.Int("concurrency", scan.DefaultConcurrency, "endpoints probed at once")
	rate := fs.Float64("rate", 0, "new connections per second (0: unlimited)")
	timeout := fs.Duration("timeout", scan.DefaultTimeout, "per-connection timeout (connect and each answer)")
	deadline := fs.Duration("deadline", scan.DefaultDeadline, "the whole scan ends by then, complete or not")
	budget := fs.Duration("endpoint-budget", scan.DefaultEndpointBudget, "time allowed for all checks of one host:port")
	findCap := fs.Int("find-cap", scan.DefaultFindCap, "C-FIND responses counted before the query is cancelled")
	discover := fs.Bool("discover-aet", false, "after a rejection, try common called AE titles ("+strings.Join(scan.CommonAETitles[:5], ", ")+", ...)")
	format := fs.String("format", "text", "report format: "+strings.Join(scan.Formats, ", "))
	output := fs.String("o", "", "write the report to `FILE` instead of standard output")
	failOn := fs.String("fail-on", "", "exit with status 3 when a finding at or above `SEVERITY` (critical, high, medium, low, info) is found")
	progress := fs.Bool("progress", false, "show progress on standard error even when it is not a terminal")
	return func(e *env, pos []string) error {
		var threshold scan.Severity
		var err error
		if *failOn != "" {
			if threshold, err = scan.ParseSeverity(*failOn); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--fail-on: %w", err)}
			}
		}
		okFormat := false
		for _, f := range scan.Formats {
			okFormat = okFormat || f == *format
		}
		if !okFormat {
			return &exitError{code: 2, err: fmt.Errorf("format %q: use %s", *format, strings.Join(scan.Formats, ", "))}
		}
		var scope scan.Scope
		for _, p := range pos {
			sp, err := scan.ParseSpec(p)
			if err != nil {
				return err
			}
			scope.Targets = append(scope.Targets, sp)
		}
		if *targetsFile != "" {
			more, err := scan.ReadSpecsFile(*targetsFile)
			if err != nil {
				return err
			}
			scope.Targets = append(scope.Targets, more...)
		}
		if len(scope.Targets) == 0 {
			return errUsage
		}
		for _, x := range excludes {
			for _, f := range strings.Split(x, ",") {
				if f = strings.TrimSpace(f); f == "" {
					continue
				}
				sp, err := scan.ParseSpec(f)
				if err != nil {
					return fmt.Errorf("--exclude: %w", err)
				}
				scope.Exclude = append(scope.Exclude, sp)
			}
		}
		if scope.Ports, err = scan.ParsePorts(*ports); err != nil {
			return err
		}
		scope.AllowLarge = *allowLarge

		opt := scan.Options{Concurrency: *concurrency, Rate: *rate, Timeout: *timeout, Deadline: *deadline, EndpointBudget: *budget, FindCap: *findCap, DiscoverAET: *discover}
		showProgress := *progress
		if f, ok := e.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			showProgress = true
		}
		var pmu sync.Mutex
		var last time.Time
		if showProgress {
			opt.Progress = func(done, total int64) {
				pmu.Lock()
				defer pmu.Unlock()
				if done < total && time.Since(last) < 200*time.Millisecond {
					return
				}
				last = time.Now()
				fmt.Fprintf(e.stderr, "\rward scan: %d/%d endpoints", done, total)
				if done >= total {
					fmt.Fprintln(e.stderr)
				}
			}
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		rep, err := scan.Run(ctx, scope, opt)
		if err != nil {
			return err
		}
		var w io.Writer = e.stdout
		if *output != "" {
			f, err := os.OpenFile(*output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		if err := rep.Write(w, *format); err != nil {
			return err
		}
		if *output != "" {
			if err := w.(*os.File).Close(); err != nil {
				return err
			}
			if *format != "text" {
				_ = rep.WriteText(e.stderr)
			}
		}
		if *failOn != "" {
			if m, ok := rep.Max(); ok && m >= threshold {
				return &exitError{code: exitFindings, err: errors.New("findings at or above " + threshold.String())}
			}
		}
		return nil
	}
}

func joinPorts(ps []int) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}
