package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/server"
)

var migrateCmd = &command{
	name: "migrate", summary: "copy the archive into another store (PostgreSQL and S3), resumable and verified",
	args: "--to CONFIG [--verify-only] [--parallel N] [--report FILE] [--config FILE | --data DIR]", maxArgs: 0,
	help: `Copies every instance of the archive (the data directory of --data or
--config, normally SQLite and files) into the store configured by the
ward.toml given with --to ([storage] index and blobs, e.g. PostgreSQL and
S3), with its index row, as that store's Ward would store it. Each object
is read back from the destination and its CRC-32C compared with the one
recorded when it was stored; at the end the patients, studies, series and
instances of both are counted and compared.
Ward must be stopped on the source's data directory (and on the
destination's): the command refuses otherwise. Interrupted (Ctrl-C, a
crash, a lost connection), it is run again: what the destination holds
already with the same checksum is skipped, the rest copied.
--verify-only copies nothing: it reads every object back from the
destination and compares it with the source.
The objects copied are recorded in the source's audit trail (Export, one
message per patient, naming the operating-system user). A problem
(an object that cannot be copied or does not match) makes the command
exit 1; the SOP Instance UIDs concerned are written only to a report file
(0600; --report, default DATA/migrate-report-TIME.txt), never to the
terminal.`,
	flags: migrateFlags,
}

func migrateFlags(fs *flag.FlagSet) runFunc {
	df := addDataFlags(fs)
	to := fs.String("to", "", "the destination's configuration file (ward.toml naming its [storage] index and blobs)")
	verifyOnly := fs.Bool("verify-only", false, "copy nothing: check every instance in the destination against the source")
	parallel := fs.Int("parallel", 4, "objects copied at once (1 to 64)")
	report := fs.String("report", "", "file for the problems found, with their SOP Instance UIDs (0600; default DATA/migrate-report-TIME.txt)")
	quiet := fs.Bool("quiet", false, "no progress bar")
	return func(e *env, _ []string) error {
		if *to == "" {
			return fmt.Errorf("%w: --to CONFIG is required", errUsage)
		}
		if *parallel < 1 || *parallel > 64 {
			return fmt.Errorf("%w: --parallel must be 1 to 64", errUsage)
		}
		c, err := df.load()
		if err != nil {
			return err
		}
		dst, err := config.Load(*to, false)
		if err != nil {
			return fmt.Errorf("destination: %w", err)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runMigrate(ctx, e, c, dst, migrateRun{verifyOnly: *verifyOnly, parallel: *parallel, report: *report, quiet: *quiet})
	}
}

// migrateRun is what ward migrate was asked for.
type migrateRun struct {
	verifyOnly bool
	parallel   int
	report     string
	quiet      bool
	// done, when set, is called after each instance (tests stop a run
	// part-way with it).
	done func(archive.MigrateReport)
}

// runMigrate migrates (or verifies) c's archive into dst's store.
func runMigrate(ctx context.Context, e *env, c, dst *config.Config, r migrateRun) error {
	// A running ward serve would go on storing and deleting, beside the
	// copy: the source must be stopped (admin.Open refuses too, through the
	// audit log's lock, when the trail is on).
	if _, err := admin.RemoteStatus(ctx, c.DataDir); err == nil {
		return fmt.Errorf("ward serve is running on %s: stop it first (ward migrate copies a stopped archive; a rerun copies only what is new)", c.DataDir)
	} else if !errors.Is(err, admin.ErrNoServer) {
		return err
	}
	log, err := newLogger(e.stderr, "warn", "text")
	if err != nil {
		return err
	}
	rf := &reportFile{path: r.report}
	if rf.path == "" {
		rf.path = filepath.Join(c.DataDir, "migrate-report-"+time.Now().UTC().Format("20060102T150405Z")+".txt")
	}
	defer rf.close()
	var rep archive.MigrateReport
	var dest string
	start := time.Now()
	err = offline(ctx, e, c, func(adm *admin.Admin) error {
		tgt, err := server.OpenMigrationTarget(ctx, c, dst, log)
		if err != nil {
			return err
		}
		dest = tgt.Describe
		total, err := adm.Archive.Index.CountInstances(ctx)
		if err != nil {
			return errors.Join(err, tgt.Close())
		}
		bar := migrateBar(e.stderr, total, r)
		o := archive.MigrateOptions{VerifyOnly: r.verifyOnly, Workers: r.parallel,
			Problem: rf.problem,
			Done: func(p archive.MigrateReport) {
				if bar != nil {
					_ = bar.Set64(p.Instances)
				}
				if r.done != nil {
					r.done(p)
				}
			}}
		rep, err = adm.Migrate(ctx, admin.Operator(), tgt.Archive, dest, o)
		if bar != nil {
			_ = bar.Finish()
		}
		return errors.Join(err, tgt.Close())
	})
	what := "migration"
	if r.verifyOnly {
		what = "verification"
	}
	if dest != "" {
		fmt.Fprintf(e.stdout, "%s of %s into %s in %s\n", what, c.DataDir, dest, time.Since(start).Round(time.Second))
		if r.verifyOnly {
			fmt.Fprintf(e.stdout, "  %s, %s verified, %d with problems\n",
				count(rep.Instances, "instance"), count(rep.Verified, "instance"), rep.Problems)
		} else {
			fmt.Fprintf(e.stdout, "  %s, %s copied (%.1f MB) and read back, %s there already, %d with problems\n",
				count(rep.Instances, "instance"), count(rep.Copied, "object"), float64(rep.Bytes)/1e6,
				count(rep.Present, "instance"), rep.Problems)
		}
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			err = errors.New("interrupted")
		}
		rerr := rf.close()
		if rf.used {
			err = fmt.Errorf("%w; problems so far are in %s", err, rf.path)
		}
		return errors.Join(fmt.Errorf("%s not finished (run it again to resume): %w", what, err), rerr)
	}
	for _, l := range []struct {
		name     string
		src, dst int64
	}{{"patients", rep.Source.Patients, rep.Destination.Patients}, {"studies", rep.Source.Studies, rep.Destination.Studies},
		{"series", rep.Source.Series, rep.Destination.Series}, {"instances", rep.Source.Instances, rep.Destination.Instances}} {
		mark := ""
		if l.src < 0 || l.dst < 0 {
			mark = "  (not counted by one of the indexes)"
		} else if l.src != l.dst {
			mark = "  MISMATCH"
		}
		fmt.Fprintf(e.stdout, "  %-9s source %d, destination %d%s\n", l.name, l.src, l.dst, mark)
	}
	if !rep.CountsMatch() {
		rf.line(fmt.Sprintf("counts differ: source %+v, destination %+v", rep.Source, rep.Destination))
	}
	if err := rf.close(); err != nil {
		return err
	}
	if rep.Problems > 0 || !rep.CountsMatch() {
		return &exitError{code: 1, err: fmt.Errorf("%s failed: %d instances with problems, counts %s; the SOP Instance UIDs are in %s",
			what, rep.Problems, map[bool]string{true: "equal", false: "differ"}[rep.CountsMatch()], rf.path)}
	}
	return nil
}

// migrateBar is a progress bar on a terminal (nil elsewhere, or quiet).
func migrateBar(w io.Writer, total int64, r migrateRun) *progressbar.ProgressBar {
	f, ok := w.(*os.File)
	if r.quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	desc := "copying"
	if r.verifyOnly {
		desc = "verifying"
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(fmt.Sprintf("%s %d instances", desc, total)),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionFullWidth(),
		progressbar.OptionClearOnFinish())
}

// reportFile is where a migration's problems go, with their UIDs (patient
// data rules: UIDs, never names), created 0600 at the first line.
type reportFile struct {
	path string
	f    *os.File
	err  error
	used bool
}

func (rf *reportFile) problem(p archive.VerifyProblem) {
	rf.line(fmt.Sprintf("instance %s (study %s, object %s): %s", p.SOPInstanceUID, p.StudyInstanceUID, p.BlobKey, p.Problem))
}

func (rf *reportFile) line(s string) {
	if rf.err != nil {
		return
	}
	if rf.f == nil {
		rf.f, rf.err = os.OpenFile(rf.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if rf.err != nil {
			return
		}
		rf.used = true
	}
	_, rf.err = fmt.Fprintln(rf.f, s)
}

func (rf *reportFile) close() error {
	if rf.f == nil {
		if rf.err != nil {
			return fmt.Errorf("migration report: %w", rf.err)
		}
		return nil
	}
	err := errors.Join(rf.err, rf.f.Sync(), rf.f.Close())
	rf.f, rf.err = nil, err
	if err != nil {
		return fmt.Errorf("migration report %s: %w", rf.path, err)
	}
	return nil
}
