// Package cli implements the ward command: one file per subcommand.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"github.com/ward-pacs/ward/internal/termsafe"
	"io"
	"log/slog"
	"os"
	"strings"
)

// env is what a subcommand may touch of the process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

type command struct {
	name, summary string
	run           func(e *env, args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"serve", "run the archive (DIMSE)", runServe},
		{"echo", "send C-ECHO to a DICOM peer", runEcho},
		{"store", "send files and folders to a DICOM peer with C-STORE", runStore},
		{"find", "query a DICOM peer with C-FIND", runFind},
		{"move", "ask a DICOM peer to send objects to an AE title with C-MOVE", runMove},
		{"get", "retrieve objects from a DICOM peer into a folder with C-GET", runGet},
		{"peer", "add, list or remove registered peers", runPeer},
		{"user", "add, list or remove users (username + passcode identity)", runUser},
		{"study", "delete, export or verify studies (delete and export are recorded in the audit trail)", runStudy},
		{"backup", "copy the archive into a folder on another disk, while it serves", runBackup},
		{"status", "counts of the archive and its disk space (no patient data)", runStatus},
		{"config", "check the configuration for risky settings", runConfig},
		{"pki", "make a CA, a server certificate and client certificates for DICOM TLS", runPKI},
		{"audit", "verify, tail and search the audit trail (PS3.15 A.5)", runAudit},
		{"scan", "audit hosts you are responsible for for exposed DICOM and web services", runScan},
		{"version", "print the version", runVersion},
	}
}

// errUsage is returned after a usage message was printed.
var errUsage = errors.New("usage")

// exitError carries a specific exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

// Main runs the ward command and returns the process exit status.
func Main(args []string) int {
	closeUmask()
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	return e.main(args)
}

// Run runs the ward command with the given output streams (tests) and
// returns the exit status.
func Run(args []string, stdout, stderr io.Writer) int {
	e := &env{stdin: os.Stdin, stdout: stdout, stderr: stderr}
	return e.main(args)
}

func (e *env) main(args []string) int {
	if len(args) < 1 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		e.usage()
		if len(args) < 1 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			err := c.run(e, args[1:])
			if err == nil {
				return 0
			}
			var ee *exitError
			if errors.As(err, &ee) {
				if ee.err != nil && !errors.Is(ee.err, errUsage) {
					fmt.Fprintf(e.stderr, "ward %s: %s\n", c.name, termsafe.Text(ee.err.Error(), "\n"))
				}
				return ee.code
			}
			if errors.Is(err, errUsage) || errors.Is(err, flag.ErrHelp) {
				return 2
			}
			fmt.Fprintf(e.stderr, "ward %s: %s\n", c.name, termsafe.Text(err.Error(), "\n"))
			return 1
		}
	}
	fmt.Fprintf(e.stderr, "ward: unknown command %q\n\n", args[0])
	e.usage()
	return 2
}

func (e *env) usage() {
	fmt.Fprintln(e.stderr, "Ward: a DICOM archive that is closed by default.\n\nUsage: ward COMMAND [flags] [args]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(e.stderr, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(e.stderr, "\nRun 'ward COMMAND -h' for a command's flags.")
}

// parseInterleaved parses flags that may appear before, between or after
// positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlagSet(e *env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("ward "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: ward %s %s\n\nFlags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// newLogger builds the slog logger for level and format.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: use text or json", format)
}
