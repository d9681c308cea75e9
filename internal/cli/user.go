package cli

import (
	"bufio"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/ward-pacs/ward/internal/admin"

	"golang.org/x/term"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/policy/identity"
)

// MinPasscode is the shortest passcode `ward user` accepts, in bytes.
const MinPasscode = 8

var userCmd = &command{
	name: "user", summary: "add, list or remove users (username + passcode identity)",
	help: `Users are the accounts for username + passcode identity (PS3.7 D.3.3.7,
type 2), stored as [[users]] tables in Ward's configuration file with an
argon2id hash of the passcode, never the passcode itself.

add and passwd read the passcode from the first line of standard input when
it is not a terminal (echo "$PASSCODE" | ward user add NAME). On a terminal,
or with --generate, they generate a strong passcode and print it once: it is
not stored anywhere, so give it to the user then.

The file is written atomically with mode 0600; a ward serve running on the
data directory is asked, over its admin socket, to put the change in effect
at once. When [storage] index is a PostgreSQL URL (a cluster), users live
in that shared index instead, and every node puts a change in effect within
seconds.`,
	subs: []*command{
		{
			name: "add", summary: "add a user with a new passcode",
			args: "NAME [--role viewer|uploader|admin] [--generate] [--config FILE | --data DIR]", minArgs: 1, maxArgs: 1,
			help: `Adds the user NAME, with the passcode read from standard input or generated.
--role gives its roles, comma-separated (viewer: query and retrieve;
uploader: also store; admin: everything), for the front ends that
authenticate users and for API tokens (ward token). Without --role the
user is a DIMSE identity only: the calling peer's permissions decide what
it may do there, and it gets no token.`,
			flags: userPasscodeFlags("add"),
		},
		{
			name: "passwd", summary: "give a user a new passcode",
			args: "NAME [--generate] [--config FILE | --data DIR]", minArgs: 1, maxArgs: 1,
			help:  "Replaces the passcode of the user NAME, with one read from standard input\nor generated.",
			flags: userPasscodeFlags("passwd"),
		},
		{
			name: "roles", summary: "set a user's roles",
			args: "NAME --role viewer|uploader|admin [--config FILE | --data DIR]", minArgs: 1, maxArgs: 1,
			help: `Sets the roles of the user NAME, comma-separated (--role "": none, a DIMSE
identity only). Its API tokens grant what the new roles allow at once.`,
			flags: userRolesFlags,
		},
		{
			name: "list", summary: "list the users",
			args:  "[--config FILE | --data DIR]",
			help:  "Lists the users, each with its roles, its hash's scheme and cost (never\nthe hash), and the de-identification profile what it retrieves through\nDICOMweb leaves under (\"-\": none; docs/deidentification.md).",
			flags: userListFlags,
		},
		{
			name: "remove", summary: "remove a user",
			args: "NAME [--config FILE | --data DIR]", minArgs: 1, maxArgs: 1,
			help:  "Removes the user NAME.",
			flags: userRemoveFlags,
		},
	},
}

// userPasscodeFlags is ward user add (sub "add") or passwd.
func userPasscodeFlags(sub string) func(*flag.FlagSet) runFunc {
	return func(fs *flag.FlagSet) runFunc {
		df := addEditFlags(fs)
		generate := fs.Bool("generate", false, "generate the passcode even when standard input is not a terminal")
		var role, deidentify *string
		if sub == "add" {
			role = fs.String("role", "", "roles, comma-separated: viewer, uploader, admin (none: a DIMSE identity only)")
			deidentify = fs.String("deidentify", "", "de-identify what the user retrieves (DICOMweb, and DIMSE associations authenticated as the user) by this profile, basic[,OPTION...], and refuse its searches (needs [deidentify] secret_file)")
		}
		return func(e *env, pos []string) error {
			name := pos[0]
			if err := config.CheckUserName(name); err != nil {
				return err
			}
			var roles []string
			if role != nil {
				var err error
				if roles, err = parseRoleFlag(*role); err != nil {
					return err
				}
			}
			reg, err := openRegistry(df)
			if err != nil {
				return err
			}
			defer reg.close()
			path := reg.String()
			// Fail before asking for a passcode when the user is (not) there.
			c, err := reg.load(true)
			if err != nil {
				return err
			}
			exists := false
			for _, u := range c.Users {
				exists = exists || u.Name == name
			}
			if sub == "add" && exists {
				return fmt.Errorf("user %q already exists in %s (change the passcode with 'ward user passwd %s')", name, path, name)
			}
			if sub == "passwd" && !exists {
				return fmt.Errorf("no user %q in %s", name, path)
			}
			passcode, generated, err := e.passcode(*generate)
			if err != nil {
				return err
			}
			hash, err := identity.HashPasscode(passcode)
			if err != nil {
				return err
			}
			err = reg.editUsers(func(users []config.User) ([]config.User, error) {
				for i := range users {
					if users[i].Name != name {
						continue
					}
					if sub == "add" {
						return nil, fmt.Errorf("user %q already exists in %s", name, path)
					}
					users[i].Hash = hash
					return users, nil
				}
				if sub == "passwd" {
					return nil, fmt.Errorf("no user %q in %s", name, path)
				}
				u := config.User{Name: name, Hash: hash, Roles: roles}
				if deidentify != nil {
					u.Deidentify = *deidentify
				}
				return append(users, u), nil
			})
			if err != nil {
				return err
			}
			verb := "added to"
			if sub == "passwd" {
				verb = "has a new passcode in"
			}
			fmt.Fprintf(e.stdout, "user %s %s %s\n", name, verb, path)
			err = e.applyRunning(*df.config, *df.data, "user "+name, func(r *admin.Reloaded) bool { return slices.Contains(r.Users, name) })
			// The passcode last, and whatever the running ward serve said:
			// the file has its hash.
			if generated {
				fmt.Fprintf(e.stdout, "passcode: %s\n", passcode)
				fmt.Fprintln(e.stderr, "This passcode is shown once and is not stored (only its argon2id hash is): give it to the user now.")
			}
			return err
		}
	}
}

// parseRoleFlag splits --role into role names and checks them.
func parseRoleFlag(v string) ([]string, error) {
	var roles []string
	for _, r := range strings.Split(v, ",") {
		if r = strings.ToLower(strings.TrimSpace(r)); r != "" {
			roles = append(roles, r)
		}
	}
	if _, err := config.ParseRoles(roles); err != nil {
		return nil, err
	}
	return roles, nil
}

func userRolesFlags(fs *flag.FlagSet) runFunc {
	df := addEditFlags(fs)
	role := fs.String("role", "", "roles, comma-separated: viewer, uploader, admin (\"\": none, a DIMSE identity only)")
	return func(e *env, pos []string) error {
		roleSet := false
		fs.Visit(func(f *flag.Flag) { roleSet = roleSet || f.Name == "role" })
		if !roleSet {
			return errors.New("give the roles with --role (--role \"\" for none)")
		}
		roles, err := parseRoleFlag(*role)
		if err != nil {
			return err
		}
		reg, err := openRegistry(df)
		if err != nil {
			return err
		}
		defer reg.close()
		path, name := reg.String(), pos[0]
		err = reg.editUsers(func(users []config.User) ([]config.User, error) {
			for i := range users {
				if users[i].Name == name {
					users[i].Roles = roles
					return users, nil
				}
			}
			return nil, fmt.Errorf("no user %q in %s", name, path)
		})
		if err != nil {
			return err
		}
		shown := strings.Join(roles, ",")
		if shown == "" {
			shown = "none (a DIMSE identity only)"
		}
		fmt.Fprintf(e.stdout, "user %s has roles %s in %s\n", name, shown, path)
		return e.applyRunning(*df.config, *df.data, "the roles of user "+name, func(r *admin.Reloaded) bool { return slices.Contains(r.Users, name) })
	}
}

func userRemoveFlags(fs *flag.FlagSet) runFunc {
	df := addEditFlags(fs)
	return func(e *env, pos []string) error {
		reg, err := openRegistry(df)
		if err != nil {
			return err
		}
		defer reg.close()
		path := reg.String()
		err = reg.editUsers(func(users []config.User) ([]config.User, error) {
			return removeNamed(users, func(u config.User) string { return u.Name }, pos[0], "user", path)
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "user %s removed from %s\n", pos[0], path)
		return e.applyRunning(*df.config, *df.data, "the removal of user "+pos[0], func(r *admin.Reloaded) bool { return !slices.Contains(r.Users, pos[0]) })
	}
}

func userListFlags(fs *flag.FlagSet) runFunc {
	df := addEditFlags(fs)
	return func(e *env, _ []string) error {
		reg, err := openRegistry(df)
		if err != nil {
			return err
		}
		defer reg.close()
		c, err := reg.load(*df.config == "")
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tHASH\tROLES\tDEIDENTIFY")
		for _, u := range c.Users {
			roles := strings.Join(u.Roles, ",")
			if roles == "" {
				roles = "- (DIMSE identity only)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Name, hashKind(u.Hash), roles, deidShown(u.Deidentify))
		}
		return tw.Flush()
	}
}

// hashKind names a stored hash's scheme and cost, never the hash.
func hashKind(h string) string {
	if config.CheckPasscodeHash(h) != nil {
		return "invalid"
	}
	if f := strings.Split(h, "$"); strings.HasPrefix(h, "$argon2id$") {
		return "argon2id " + f[3]
	}
	return "bcrypt cost " + h[4:6]
}

// passcode reads the passcode from the first line of standard input, or
// generates one when standard input is a terminal or generate is set.
func (e *env) passcode(generate bool) (string, bool, error) {
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		generate = true
	}
	if generate {
		// 26 characters of base32: 130 bits from crypto/rand.
		return rand.Text(), true, nil
	}
	r := bufio.NewReaderSize(io.LimitReader(e.stdin, identity.MaxPasscode+2), identity.MaxPasscode+2)
	line, err := r.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", false, fmt.Errorf("reading the passcode from standard input: %w", err)
	}
	if err != nil && len(line) > identity.MaxPasscode {
		return "", false, fmt.Errorf("the passcode on standard input is longer than %d bytes", identity.MaxPasscode)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", false, errors.New("no passcode on the first line of standard input (pipe one in, or use --generate)")
	}
	if len(line) > identity.MaxPasscode {
		return "", false, fmt.Errorf("the passcode on standard input is longer than %d bytes", identity.MaxPasscode)
	}
	if len(line) < MinPasscode {
		return "", false, fmt.Errorf("the passcode on standard input is shorter than %d bytes (or use --generate)", MinPasscode)
	}
	return line, false, nil
}
