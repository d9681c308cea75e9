package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/policy/tokens"
)

// DefaultTokenTTL is how long a token lives without --ttl.
const DefaultTokenTTL = 90 * 24 * time.Hour

var tokenCmd = &command{
	name: "token", summary: "issue, list or revoke API tokens",
	help: `API tokens are bearer tokens for scripts and DICOMweb clients, issued to a
user with roles (ward user add --role). A token never grants more than its
user's roles: a read token may query and retrieve, a write token may also
do what else the roles allow (store, administer).

Ward keeps only each token's SHA-256 hash, with its user, scope, creation
and expiry times, in tokens.json in the data directory (mode 0600, written
atomically). A ward serve running on the data directory is asked, over its
admin socket, to read the file again at once, so that a revoked token stops
working there at once. The change is audited as a Security Alert (Security
Configuration): by the running ward serve, or, while none runs, by the
command in the data directory's audit log. When [storage] index is a
PostgreSQL URL (a cluster), tokens live in that shared index instead: every
node accepts a token issued, and refuses it once revoked, within seconds,
and each running node audits the change.`,
	subs: []*command{
		{
			name: "issue", summary: "issue a token and print it",
			args: "NAME [--ttl DURATION] [--scope read|write] [--config FILE | --data DIR]", minArgs: 1, maxArgs: 1,
			help: `Issues a token for the user NAME and prints it, alone, on standard output:
it is shown once and not stored. --ttl is how long it lives (e.g. 12h,
30d; default 90d; 0: until revoked).`,
			flags: tokenIssueFlags,
		},
		{
			name: "list", summary: "list the tokens (never a secret)",
			args:  "[--config FILE | --data DIR]",
			help:  "Lists the tokens: ID, user, scope, times and state.",
			flags: tokenListFlags,
		},
		{
			name: "revoke", summary: "revoke a token",
			args: "ID [--config FILE | --data DIR]", minArgs: 1, maxArgs: 1,
			help:  "Revokes the token ID (as ward token list shows it).",
			flags: tokenRevokeFlags,
		},
	},
}

// parseTTL is time.ParseDuration, with whole days as "Nd".
func parseTTL(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 || n > 100*365 {
			return 0, fmt.Errorf("--ttl %q: give a duration such as 12h or 30d", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	t, err := time.ParseDuration(s)
	if err != nil || t < 0 {
		return 0, fmt.Errorf("--ttl %q: give a duration such as 12h or 30d", s)
	}
	return t, nil
}

func tokenIssueFlags(fs *flag.FlagSet) runFunc {
	df := addEditFlags(fs)
	ttl := fs.String("ttl", "90d", "how long the token lives (e.g. 12h, 30d; 0: until revoked)")
	scope := fs.String("scope", "read", "read (query, retrieve) or write (also what else the user's roles allow)")
	return func(e *env, pos []string) error {
		d, err := parseTTL(*ttl)
		if err != nil {
			return err
		}
		sc, err := tokens.ParseScope(*scope)
		if err != nil {
			return err
		}
		reg, err := openRegistry(df)
		if err != nil {
			return err
		}
		defer reg.close()
		c, err := reg.load(*df.config == "")
		if err != nil {
			return err
		}
		name := pos[0]
		i := slices.IndexFunc(c.Users, func(u config.User) bool { return u.Name == name })
		switch {
		case i < 0:
			return fmt.Errorf("no user %q (add it with 'ward user add %s --role viewer')", name, name)
		case len(c.Users[i].Roles) == 0:
			return fmt.Errorf("user %q has no role, so a token would grant nothing (a user without roles is a DIMSE identity only)", name)
		}
		var tok string
		var rec tokens.Record
		err = reg.editTokens(func(s *tokens.Set) error {
			var err error
			tok, rec, err = s.Issue(name, sc, d, time.Now())
			return err
		})
		if err != nil {
			return err
		}
		exp := "never (until revoked)"
		if !rec.Expires.IsZero() {
			exp = rec.Expires.Format(time.RFC3339)
		}
		fmt.Fprintf(e.stderr, "token %s issued to %s (%s), expires %s; it is shown once and not stored:\n", rec.ID, name, sc, exp)
		fmt.Fprintln(e.stdout, tok)
		return e.tokensRunning(*df.config, *df.data, "token "+rec.ID, "tokens issued: "+describeToken(rec), func(r *admin.Reloaded) bool { return slices.Contains(r.Tokens, rec.ID) })
	}
}

func tokenRevokeFlags(fs *flag.FlagSet) runFunc {
	df := addEditFlags(fs)
	return func(e *env, pos []string) error {
		reg, err := openRegistry(df)
		if err != nil {
			return err
		}
		defer reg.close()
		id := strings.ToLower(strings.TrimSpace(pos[0]))
		var rec tokens.Record
		err = reg.editTokens(func(s *tokens.Set) error {
			var err error
			rec, err = s.Revoke(id, time.Now())
			return err
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "token %s of %s revoked\n", rec.ID, rec.User)
		return e.tokensRunning(*df.config, *df.data, "the revocation of token "+id, "tokens revoked: "+describeToken(rec), func(r *admin.Reloaded) bool { return !slices.Contains(r.Tokens, id) })
	}
}

func tokenListFlags(fs *flag.FlagSet) runFunc {
	df := addEditFlags(fs)
	return func(e *env, _ []string) error {
		reg, err := openRegistry(df)
		if err != nil {
			return err
		}
		defer reg.close()
		sh, err := reg.load(*df.config == "")
		if err != nil {
			return err
		}
		s := sh.Tokens
		now := time.Now()
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tUSER\tSCOPE\tCREATED\tEXPIRES\tSTATE")
		for _, r := range s.Tokens {
			exp, state := "never", "active"
			if !r.Expires.IsZero() {
				exp = r.Expires.Format(time.RFC3339)
				if !now.Before(r.Expires) {
					state = "expired"
				}
			}
			if !r.Revoked.IsZero() {
				state = "revoked " + r.Revoked.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.User, r.Scope, r.Created.Format(time.RFC3339), exp, state)
		}
		return tw.Flush()
	}
}

// describeToken names a token in the audit trail as the running ward
// serve does: ID, user and scope, never the token.
func describeToken(r tokens.Record) string {
	return r.ID + " (user " + r.User + ", " + string(r.Scope) + ")"
}

// tokensRunning asks the ward serve running on the data directory to read
// the token file again (with its configuration), as applyRunning does,
// and says so on standard error (standard output of ward token issue
// holds the token alone). The running ward serve audits the change; when
// none runs, change is audited here, in the data directory's audit log.
func (e *env) tokensRunning(configPath, dataDir, what, change string, inEffect func(*admin.Reloaded) bool) error {
	c, err := loadConfig(configPath, dataDir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := admin.RemoteReload(ctx, c.DataDir)
	var out io.Writer = e.stderr
	switch {
	case errors.Is(err, admin.ErrNoServer) && c.Cluster():
		// Every running node audits the change as it puts it in effect.
		e.clusterNote()
		return nil
	case errors.Is(err, admin.ErrNoServer):
		err := offline(ctx, e, c, func(adm *admin.Admin) error {
			return adm.Record(audit.SecurityConfigChanged(adm.Node(), audit.Node{ID: admin.Operator()}, change, time.Now()))
		})
		if err != nil {
			return fmt.Errorf("%s is written, but not audited: %w", what, err)
		}
		fmt.Fprintf(out, "no ward serve is running on %s: the change takes effect when it starts\n", c.DataDir)
		return nil
	case err != nil:
		return fmt.Errorf("%s is written, but the running ward serve did not take it: %w", what, err)
	case !inEffect(r):
		return fmt.Errorf("%s is written, but the ward serve running on %s did not put it in effect", what, c.DataDir)
	}
	fmt.Fprintf(out, "in effect in the running ward serve (%d tokens not revoked)\n", len(r.Tokens))
	if c.Cluster() {
		e.clusterNote()
	}
	return nil
}
