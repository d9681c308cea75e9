package cli

import (
	"flag"
	"strings"
	"testing"
)

// walk calls fn with the path of every command in the table, parents
// before their subcommands.
func walk(path []string, cmds []*command, fn func(path []string, c *command)) {
	for _, c := range cmds {
		p := append(path[:len(path):len(path)], c.name)
		fn(p, c)
		walk(p, c.subs, fn)
	}
}

// TestCommandTableRows checks every row of the table: a name unique among
// its siblings, a one-line summary, a help text, and either subcommands or
// flags and a run function, with sane argument bounds.
func TestCommandTableRows(t *testing.T) {
	n := 0
	walk(nil, commands, func(path []string, c *command) {
		n++
		name := strings.Join(path, " ")
		if c.name == "" || strings.ContainsAny(c.name, " \t\n") || isHelp(c.name) {
			t.Errorf("%q: bad name", name)
		}
		if c.summary == "" || strings.Contains(c.summary, "\n") {
			t.Errorf("ward %s: summary %q: want one line", name, c.summary)
		}
		if strings.TrimSpace(c.help) == "" {
			t.Errorf("ward %s: no help", name)
		}
		if (c.subs == nil) == (c.flags == nil) {
			t.Errorf("ward %s: want subcommands or flags, not both nor neither", name)
		}
		if c.subs != nil && (c.args != "" || c.minArgs != 0 || c.maxArgs != 0) {
			t.Errorf("ward %s: a group takes no arguments of its own", name)
		}
		if c.minArgs < 0 || c.maxArgs != anyArgs && c.maxArgs < c.minArgs {
			t.Errorf("ward %s: arguments %d to %d", name, c.minArgs, c.maxArgs)
		}
		if c.flags != nil && c.flags(flag.NewFlagSet(name, flag.ContinueOnError)) == nil {
			t.Errorf("ward %s: no run function", name)
		}
		seen := map[string]bool{}
		for _, s := range c.subs {
			if seen[s.name] {
				t.Errorf("ward %s %s: twice", name, s.name)
			}
			seen[s.name] = true
		}
	})
	seen := map[string]bool{}
	for _, c := range commands {
		if seen[c.name] {
			t.Errorf("ward %s: twice", c.name)
		}
		seen[c.name] = true
	}
	if n < len(commands) {
		t.Fatalf("walked %d commands", n)
	}
}

// TestHelpGeneratedFromTable: -h, --help and ward help print a command's
// help (usage line, help text, and its subcommands or flags) on standard
// error and exit 0, for every command and subcommand.
func TestHelpGeneratedFromTable(t *testing.T) {
	walk(nil, commands, func(path []string, c *command) {
		name := "ward " + strings.Join(path, " ")
		for _, args := range [][]string{append(path, "-h"), append(path, "--help"), append([]string{"help"}, path...)} {
			out, errs, code := runCLI(t, args...)
			if code != 0 || out != "" {
				t.Errorf("ward %s: exit %d, stdout %q; want 0 and help on stderr", strings.Join(args, " "), code, out)
			}
			if !strings.Contains(errs, name) || !strings.Contains(errs, strings.TrimSpace(c.help)) {
				t.Errorf("ward %s: help without its usage or text:\n%s", strings.Join(args, " "), errs)
			}
			for _, s := range c.subs {
				if !strings.Contains(errs, "  "+s.name+" ") || !strings.Contains(errs, s.summary) || !strings.Contains(errs, name+" "+s.name) {
					t.Errorf("ward %s: help does not list %s with its summary and usage:\n%s", strings.Join(args, " "), s.name, errs)
				}
			}
			if c.flags != nil {
				fs := flag.NewFlagSet(name, flag.ContinueOnError)
				c.flags(fs)
				fs.VisitAll(func(f *flag.Flag) {
					if !strings.Contains(errs, "  -"+f.Name) {
						t.Errorf("ward %s: help does not list -%s:\n%s", strings.Join(args, " "), f.Name, errs)
					}
				})
			}
		}
		if c.subs != nil {
			// ward peer help: the group's help, as ward peer -h.
			if _, _, code := runCLI(t, append(path, "help")...); code != 0 {
				t.Errorf("%s help: exit %d, want 0", name, code)
			}
		}
	})
}

// TestHelpListsEveryCommand: ward help, ward -h and ward alone list every
// command with its summary; ward alone is a usage error.
func TestHelpListsEveryCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{{[]string{"help"}, 0}, {[]string{"-h"}, 0}, {[]string{"--help"}, 0}, {nil, 2}} {
		out, errs, code := runCLI(t, tc.args...)
		if code != tc.code || out != "" {
			t.Errorf("ward %v: exit %d, stdout %q; want %d", tc.args, code, out, tc.code)
		}
		for _, c := range commands {
			if !strings.Contains(errs, "  "+c.name+" ") || !strings.Contains(errs, c.summary) {
				t.Errorf("ward %v: %s not listed:\n%s", tc.args, c.name, errs)
			}
		}
	}
}

// TestUsageErrorsExit2: an unknown command or subcommand, a group without
// a subcommand, an unknown flag and the wrong number of arguments are usage
// errors: the help of the command concerned, and exit 2. Nothing runs.
func TestUsageErrorsExit2(t *testing.T) {
	check := func(want string, args ...string) {
		t.Helper()
		out, errs, code := runCLI(t, args...)
		if code != exitUsage || out != "" || !strings.Contains(errs, want) || !strings.Contains(errs, "Usage:") {
			t.Errorf("ward %s: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and %q with the usage", strings.Join(args, " "), code, out, errs, want)
		}
	}
	check(`ward: unknown command "nosuch"`, "nosuch")
	check(`ward: unknown command "nosuch"`, "help", "nosuch")
	walk(nil, commands, func(path []string, c *command) {
		name := "ward " + strings.Join(path, " ")
		if c.subs != nil {
			check(name+`: unknown command "nosuch"`, append(path, "nosuch")...)
			check(name+`: unknown command "nosuch"`, append(append([]string{"help"}, path...), "nosuch")...)
			check("Usage:", path...)
			return
		}
		check("flag provided but not defined: -no-such-flag", append(path, "--no-such-flag")...)
		if c.maxArgs != anyArgs {
			args := append([]string(nil), path...)
			for range c.maxArgs + 1 {
				args = append(args, "1.2.3")
			}
			check(name+": takes ", args...)
		}
		if c.minArgs > 0 {
			check(name+": takes ", path...)
		}
	})
	// A run function's own usage checks: the same.
	check("Usage: ward move", "move", "127.0.0.1:1")
	check("Usage: ward get", "get", "127.0.0.1:1")
	check("Usage: ward store", "store", "--parallel", "0", "127.0.0.1:1", "x")
	check("Usage: ward scan", "scan")
}
