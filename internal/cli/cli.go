// Package cli implements the ward command. Its commands are a table (one
// file a command, each defining its row): name, summary, usage, help, flags
// and run function; dispatch, help, usage errors and exit statuses are
// generated from the table here, the same for every command.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/ward-pacs/ward/internal/termsafe"
)

// env is what a subcommand may touch of the process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// A command is a row of the command table: a top-level command or one of
// its subcommands. It has either subcommands (a group: ward peer) or a
// flags function (a command that runs: ward peer add, ward echo).
type command struct {
	name    string
	summary string // one line, listed in the parent's help
	// args follows "ward PATH" in the usage line: the positional arguments
	// and the flags worth naming there.
	args string
	help string // what the command does, printed under the usage line
	// minArgs and maxArgs bound the positional arguments (maxArgs anyArgs:
	// no upper bound); outside them is a usage error.
	minArgs, maxArgs int
	// flags defines the command's flags on fs and returns the function that
	// runs it with the positional arguments, after fs is parsed.
	flags func(fs *flag.FlagSet) runFunc
	subs  []*command
}

// runFunc runs a command with its positional arguments. Returning errUsage
// (or an error wrapping it) prints the command's help and exits 2; an
// *exitError exits with its code; any other error is printed and exits 1.
type runFunc func(e *env, args []string) error

// anyArgs is maxArgs of a command that takes any number of arguments.
const anyArgs = -1

// commands is the table: the top-level commands, in the order ward help
// lists them. Each is defined in its own file.
var commands = []*command{
	serveCmd, echoCmd, storeCmd, findCmd, moveCmd, getCmd,
	peerCmd, userCmd, tokenCmd, studyCmd, patientCmd, retentionCmd, deidCmd, backupCmd, migrateCmd, statusCmd, configCmd,
	viewerCmd, pkiCmd, keyCmd, auditCmd, scanCmd, versionCmd,
}

// Exit statuses of the dispatcher; a command may return others with
// *exitError (ward scan: 3 for findings).
const (
	exitFailed = 1 // the command ran and failed
	exitUsage  = 2 // unknown command or flag, wrong arguments
)

// errUsage is returned by a run function for a usage error its own checks
// found: the dispatcher prints the command's help and exits 2.
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

// isHelp says whether arg asks for help where a subcommand is expected.
func isHelp(arg string) bool { return arg == "help" || arg == "-h" || arg == "--help" }

// main dispatches args down the table. Help asked for (ward help [COMMAND
// [SUBCOMMAND]], -h or --help at any level) goes to standard error and
// exits 0, as the flag package does; a usage error prints the help of the
// command it concerns and exits 2.
func (e *env) main(args []string) int {
	path := []*command{{name: "ward", subs: commands, help: "Ward: a DICOM archive that is closed by default."}}
	for {
		c := path[len(path)-1]
		if c.subs == nil {
			return e.run(path, args)
		}
		if len(args) == 0 {
			e.help(path)
			return exitUsage
		}
		if isHelp(args[0]) {
			// ward help peer add: the help of ward peer add.
			for _, name := range args[1:] {
				if path = e.lookup(path, name); path == nil {
					return exitUsage
				}
				if path[len(path)-1].subs == nil {
					break
				}
			}
			e.help(path)
			return 0
		}
		if path = e.lookup(path, args[0]); path == nil {
			return exitUsage
		}
		args = args[1:]
	}
}

// lookup returns path with its last command's subcommand name appended, or
// prints that there is none (with the group's help) and returns nil.
func (e *env) lookup(path []*command, name string) []*command {
	for _, s := range path[len(path)-1].subs {
		if s.name == name {
			return append(path[:len(path):len(path)], s)
		}
	}
	fmt.Fprintf(e.stderr, "%s: unknown command %q\n\n", pathName(path), name)
	e.help(path)
	return nil
}

// run parses the flags and arguments of the command at the end of path and
// runs it.
func (e *env) run(path []*command, args []string) int {
	c := path[len(path)-1]
	fs := flag.NewFlagSet(pathName(path), flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { e.help(path) }
	run := c.flags(fs)
	pos, err := parseInterleaved(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0 // fs printed the help
	case err != nil:
		return exitUsage // fs printed the error and the help
	case len(pos) < c.minArgs || c.maxArgs != anyArgs && len(pos) > c.maxArgs:
		fmt.Fprintf(e.stderr, "%s: %s\n\n", pathName(path), argCount(c, len(pos)))
		e.help(path)
		return exitUsage
	}
	err = run(e, pos)
	if err == nil {
		return 0
	}
	// Errors are named by the top-level command, as they always were.
	name := "ward " + path[1].name
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		if ee.err != nil && !errors.Is(ee.err, errUsage) {
			fmt.Fprintf(e.stderr, "%s: %s\n", name, termsafe.Text(ee.err.Error(), "\n"))
		}
		return ee.code
	case errors.Is(err, errUsage):
		e.help(path)
		return exitUsage
	}
	fmt.Fprintf(e.stderr, "%s: %s\n", name, termsafe.Text(err.Error(), "\n"))
	return exitFailed
}

// argCount says what is wrong with n positional arguments for c.
func argCount(c *command, n int) string {
	want := fmt.Sprint(c.minArgs)
	switch {
	case c.maxArgs == anyArgs:
		want = "at least " + want
	case c.maxArgs == 0:
		want = "no"
	case c.maxArgs != c.minArgs:
		want = fmt.Sprintf("%d to %d", c.minArgs, c.maxArgs)
	}
	s := "s"
	if c.minArgs == 1 && c.maxArgs == 1 {
		s = ""
	}
	return fmt.Sprintf("takes %s argument%s, not %d", want, s, n)
}

// pathName is the command line that names the last command of path.
func pathName(path []*command) string {
	names := make([]string, len(path))
	for i, c := range path {
		names[i] = c.name
	}
	return strings.Join(names, " ")
}

// help prints the help of the last command of path, all generated from
// the table: its usage line(s), its help text, and its subcommands with
// their summaries or its flags.
func (e *env) help(path []*command) {
	c, name, w := path[len(path)-1], pathName(path), e.stderr
	switch {
	case len(path) == 1:
		fmt.Fprintf(w, "%s\n\nUsage: %s COMMAND [flags] [args]\n", c.help, name)
	case c.subs != nil:
		fmt.Fprintln(w, "Usage:")
		for _, s := range c.subs {
			fmt.Fprintf(w, "  %s %s\n", name, strings.TrimSpace(s.name+" "+s.args))
		}
		fmt.Fprintf(w, "\n%s\n", c.help)
	default:
		fmt.Fprintf(w, "Usage: %s\n\n%s\n", strings.TrimSpace(name+" "+c.args), c.help)
	}
	if c.subs != nil {
		fmt.Fprintln(w, "\nCommands:")
		for _, s := range c.subs {
			fmt.Fprintf(w, "  %-9s %s\n", s.name, s.summary)
		}
		fmt.Fprintf(w, "\nRun '%s COMMAND -h' for a command's flags.\n", name)
		return
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c.flags(fs)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
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
