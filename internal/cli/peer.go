package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/termsafe"
	"github.com/ward-pacs/ward/policy/tokens"
)

// configFile is the file `ward peer` edits: --config FILE, or
// DATA/ward.toml (DATA is --data, default ./ward-data), as `ward serve`
// reads it.
func configFile(configPath, dataDir string) string {
	if configPath != "" {
		return configPath
	}
	if dataDir == "" {
		dataDir = config.DefaultDataDir
	}
	return filepath.Join(dataDir, config.ConfigFileName)
}

var peerCmd = &command{
	name: "peer", summary: "add, list or remove registered peers",
	help: `Only registered peers may open associations with Ward, each bound to where it
calls from: its --network CIDRs, or else its --host's address, and/or a TLS
client certificate pinned by --cert-fingerprint (the SHA-256 of the
certificate: 'ward pki issue' prints it; a pinned peer may only call over
TLS). A peer may use only the services in --allow; bulk-query lets it list
the whole archive: a query with no key that narrows it, or one below the
top level without the unique keys above. C-MOVE sends
images only to a peer with move-destination, at its HOST and PORT (over TLS
with --tls).
Peers are stored as [[peers]] tables in Ward's configuration file (written
atomically, mode 0600); a ward serve running on the data directory is asked,
over its admin socket, to put the change in effect at once. When [storage]
index is a PostgreSQL URL (a cluster), peers live in that shared index
instead: the command writes there, from any machine with the configuration
(no running node needed), and every node puts the change in effect within
seconds.`,
	subs: []*command{
		{
			name: "add", summary: "register a peer, or change the one with that AE title",
			args:    "TITLE [--host HOST --port PORT [--tls]] [--network CIDR,...] [--cert-fingerprint SHA256] [flags]",
			minArgs: 1, maxArgs: 1,
			help: `Registers the peer with AE title TITLE, bound to --network, --host or
--cert-fingerprint and allowed the services in --allow, or replaces the
registered peer of that title. A peer that ward serve would refuse to
start with is not written.`,
			flags: peerAddFlags,
		},
		{
			name: "list", summary: "list the registered peers",
			args: "[--config FILE | --data DIR]",
			help: `Lists the registered peers: each one's AE title, where Ward reaches it,
the services it may use, what it is bound to, what it requires, and the
de-identification profile what it retrieves leaves under ("-": none;
docs/deidentification.md).`,
			flags: peerListFlags,
		},
		{
			name: "remove", summary: "remove a registered peer",
			args: "TITLE [--config FILE | --data DIR]", minArgs: 1, maxArgs: 1,
			help:  "Removes the peer with AE title TITLE.",
			flags: peerRemoveFlags,
		},
		{
			name: "import", summary: "move the file's peers, users and tokens into a cluster's shared index",
			args: "[--config FILE | --data DIR]",
			help: `For a configuration whose [storage] index is a cluster's PostgreSQL index:
copies the [[peers]] and [[users]] tables of the configuration file, and
the API tokens of the data directory's token file, into the shared index
(an entry already there must be the same, else nothing is copied), then
removes the tables from the file (ward serve refuses them in cluster mode).
Run it once, on the node whose file holds the registrations to keep.`,
			flags: peerImportFlags,
		},
	},
}

// addEditFlags defines --config and --data of the commands that edit the
// configuration file (ward peer, ward user).
func addEditFlags(fs *flag.FlagSet) dataFlags {
	return dataFlags{
		config: fs.String("config", "", "configuration file (TOML; default: DATA/ward.toml)"),
		data:   fs.String("data", "", "data directory (default "+config.DefaultDataDir+")"),
	}
}

// file is the configuration file the flags name, to edit (configFile).
func (f dataFlags) file() string { return configFile(*f.config, *f.data) }

func peerAddFlags(fs *flag.FlagSet) runFunc {
	df := addEditFlags(fs)
	host := fs.String("host", "", "host (IP address or name) where Ward reaches the peer; without --network, the peer must call from its address")
	port := fs.Int("port", 0, "port where Ward reaches the peer")
	allow := fs.String("allow", "", "services the peer may use, comma-separated: "+strings.Join(config.Services, ","))
	network := fs.String("network", "", "source networks the peer may call from, comma-separated CIDRs (e.g. 10.1.2.0/24)")
	fingerprint := fs.String("cert-fingerprint", "", "SHA-256 fingerprint of the peer's TLS client certificate (64 hex digits, colons allowed)")
	requireTLS := fs.Bool("require-tls", false, "refuse the peer on the plain listener")
	useTLS := fs.Bool("tls", false, "Ward reaches the peer (as a C-MOVE destination) over TLS, checking its certificate against [dicom] tls_peer_ca")
	requireIdentity := fs.Bool("require-identity", false, "refuse associations without a verified user identity (passcode or JWT)")
	maxAssoc := fs.Int("max-associations", 0, "concurrent associations of this peer (default [dicom] max_associations_per_peer)")
	maxResults := fs.Int("max-results", 0, "matches per C-FIND for this peer (default [query] max_results)")
	deidentify := fs.String("deidentify", "", "de-identify everything the peer retrieves by this profile, basic[,OPTION...], and refuse its queries (needs [deidentify] secret_file; docs/deidentification.md)")
	return func(e *env, pos []string) error {
		p := config.Peer{AETitle: pos[0], Host: *host, Port: *port, RequireTLS: *requireTLS, RequireIdentity: *requireIdentity, TLS: *useTLS,
			MaxAssociations: *maxAssoc, MaxResults: *maxResults, Deidentify: *deidentify}
		for _, s := range strings.Split(*allow, ",") {
			if s = strings.ToLower(strings.TrimSpace(s)); s != "" {
				p.Allow = append(p.Allow, s)
			}
		}
		for _, n := range strings.Split(*network, ",") {
			if n = strings.TrimSpace(n); n != "" {
				p.Networks = append(p.Networks, n)
			}
		}
		if *fingerprint != "" {
			fp, err := config.ParseFingerprint(*fingerprint)
			if err != nil {
				return err
			}
			p.CertFingerprint = fp
		}
		if err := p.Validate(); err != nil {
			return err
		}
		// What ward serve would refuse to start (or reload) with is not
		// written: a peer bound to every address, or to a large part of
		// the internet, without a pinned certificate.
		check := config.Default()
		check.Peers = []config.Peer{p}
		for _, f := range config.Refused(check.Check()) {
			if strings.HasPrefix(f.Setting, "peer "+p.AETitle) {
				return fmt.Errorf("peer %s not added: %s", p.AETitle, f)
			}
		}
		reg, err := openRegistry(df)
		if err != nil {
			return err
		}
		defer reg.close()
		verb := "added"
		err = reg.editPeers(func(peers []config.Peer) ([]config.Peer, error) {
			for i := range peers {
				if peers[i].AETitle == p.AETitle {
					peers[i] = p
					verb = "updated"
					return peers, nil
				}
			}
			return append(peers, p), nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "peer %s %s in %s\n", p.AETitle, verb, reg)
		if p.Host == "" && len(p.Networks) == 0 && p.CertFingerprint == "" {
			fmt.Fprintf(e.stderr, "warning: peer %s is bound to no host, network or certificate: Ward refuses its associations until it is (it can still be a C-MOVE destination, with --host, --port and move-destination)\n", p.AETitle)
		}
		if _, err := p.Destination(); err != nil && (p.Port != 0 || p.Allows(config.MoveDestination)) {
			fmt.Fprintf(e.stderr, "note: %v: C-MOVE to it is refused\n", err)
		}
		return e.applyRunning(*df.config, *df.data, "peer "+p.AETitle, func(r *admin.Reloaded) bool { return slices.Contains(r.Peers, p.AETitle) })
	}
}

func peerRemoveFlags(fs *flag.FlagSet) runFunc {
	df := addEditFlags(fs)
	return func(e *env, pos []string) error {
		reg, err := openRegistry(df)
		if err != nil {
			return err
		}
		defer reg.close()
		err = reg.editPeers(func(peers []config.Peer) ([]config.Peer, error) {
			return removeNamed(peers, func(p config.Peer) string { return p.AETitle }, pos[0], "peer", reg.String())
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "peer %s removed from %s\n", pos[0], reg)
		return e.applyRunning(*df.config, *df.data, "the removal of peer "+pos[0], func(r *admin.Reloaded) bool { return !slices.Contains(r.Peers, pos[0]) })
	}
}

func peerListFlags(fs *flag.FlagSet) runFunc {
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
		fmt.Fprintln(tw, "AET\tHOST\tPORT\tALLOW\tBOUND TO\tREQUIRES\tDEIDENTIFY")
		for _, p := range c.Peers {
			port := ""
			if p.Port != 0 {
				port = fmt.Sprint(p.Port)
			}
			var bound, req []string
			switch {
			case len(p.Networks) > 0:
				bound = append(bound, strings.Join(p.Networks, ","))
			case p.Host != "" && p.CertFingerprint == "":
				bound = append(bound, "host")
			}
			if p.CertFingerprint != "" {
				bound = append(bound, "cert "+p.CertFingerprint[:16]+"…")
			}
			if len(bound) == 0 {
				bound = append(bound, "NOTHING (refused)")
			}
			if p.RequireTLS || p.CertFingerprint != "" {
				req = append(req, "tls")
			}
			if p.RequireIdentity {
				req = append(req, "identity")
			}
			if p.TLS && port != "" {
				port += " (tls)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", termsafe.Quote(p.AETitle), termsafe.Quote(p.Host), port, strings.Join(p.Allow, ","), strings.Join(bound, " + "), strings.Join(req, ","), deidShown(p.Deidentify))
		}
		return tw.Flush()
	}
}

// deidShown is a de-identification profile as ward peer list and ward
// user list show it: "-" for none (the registration is read from a
// shared index too, so it is quoted like any text from there).
func deidShown(profile string) string {
	if profile == "" {
		return "-"
	}
	return termsafe.Quote(profile)
}

// removeNamed returns items without the one whose name is name, or an
// error saying that path has no such kind.
func removeNamed[T any](items []T, nameOf func(T) string, name, kind, path string) ([]T, error) {
	for i := range items {
		if nameOf(items[i]) == name {
			return append(items[:i], items[i+1:]...), nil
		}
	}
	return nil, fmt.Errorf("no %s %q in %s", kind, name, path)
}

// applyRunning asks the ward serve running on the configuration's data
// directory to read the file again, so that a change ward peer or ward
// user just wrote takes effect at once (as SIGHUP would). inEffect says
// whether the reloaded server has the change. Without a running ward
// serve the file alone holds the change, for the next start.
func (e *env) applyRunning(configPath, dataDir, what string, inEffect func(*admin.Reloaded) bool) error {
	c, err := loadConfig(configPath, dataDir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := admin.RemoteReload(ctx, c.DataDir)
	switch {
	case errors.Is(err, admin.ErrNoServer) && c.Cluster():
		e.clusterNote()
		return nil
	case errors.Is(err, admin.ErrNoServer):
		fmt.Fprintf(e.stdout, "no ward serve is running on %s: the change takes effect when it starts\n", c.DataDir)
		return nil
	case err != nil:
		return fmt.Errorf("%s is written, but the running ward serve did not take it: %w", what, err)
	case !inEffect(r):
		return fmt.Errorf("%s is written, but the ward serve running on %s reads another configuration file (it was started with another --config): the change is not in effect there", what, c.DataDir)
	}
	fmt.Fprintf(e.stdout, "in effect in the running ward serve (%d peers, %d users)\n", len(r.Peers), len(r.Users))
	if c.Cluster() {
		e.clusterNote()
	}
	return nil
}

func peerImportFlags(fs *flag.FlagSet) runFunc {
	df := addEditFlags(fs)
	return func(e *env, _ []string) error {
		reg, err := openRegistry(df)
		if err != nil {
			return err
		}
		defer reg.close()
		if reg.shared == nil {
			return fmt.Errorf("ward peer import moves registrations into a cluster's shared index: %s names none ([storage] index = \"postgres://…\")", reg.path)
		}
		c, err := config.Load(reg.path, false)
		if err != nil {
			return err
		}
		tokenFile := config.TokenFile(reg.c.DataDir)
		set, err := config.LoadTokens(tokenFile)
		if err != nil {
			return err
		}
		var np, nu, nt int
		if err := reg.editPeers(func(have []config.Peer) ([]config.Peer, error) {
			var err error
			have, np, err = mergeNamed(have, c.Peers, func(p config.Peer) string { return p.AETitle }, "peer")
			return have, err
		}); err != nil {
			return err
		}
		if err := reg.editUsers(func(have []config.User) ([]config.User, error) {
			var err error
			have, nu, err = mergeNamed(have, c.Users, func(u config.User) string { return u.Name }, "user")
			return have, err
		}); err != nil {
			return err
		}
		if err := reg.editTokens(func(have *tokens.Set) error {
			var err error
			have.Tokens, nt, err = mergeNamed(have.Tokens, set.Tokens, func(r tokens.Record) string { return r.ID }, "token")
			return err
		}); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "copied into the cluster's shared index: %d peers, %d users, %d tokens (those already there and the same were kept)\n", np, nu, nt)
		if len(c.Peers) > 0 {
			if err := config.EditPeers(reg.path, func([]config.Peer) ([]config.Peer, error) { return nil, nil }); err != nil {
				return fmt.Errorf("imported, but the [[peers]] tables are still in %s (remove them: ward serve refuses them in cluster mode): %w", reg.path, err)
			}
		}
		if len(c.Users) > 0 {
			if err := config.EditUsers(reg.path, func([]config.User) ([]config.User, error) { return nil, nil }); err != nil {
				return fmt.Errorf("imported, but the [[users]] tables are still in %s (remove them: ward serve refuses them in cluster mode): %w", reg.path, err)
			}
		}
		if len(c.Peers)+len(c.Users) > 0 {
			fmt.Fprintf(e.stdout, "[[peers]] and [[users]] removed from %s\n", reg.path)
		}
		if len(set.Tokens) > 0 {
			fmt.Fprintf(e.stdout, "%s is no longer read (cluster mode): remove it once every node runs\n", tokenFile)
		}
		e.clusterNote()
		return nil
	}
}

// mergeNamed adds to have the items of add not in it (by name); an item
// of the same name that differs is an error. It returns the merged items
// and how many were added.
func mergeNamed[T any](have, add []T, nameOf func(T) string, kind string) ([]T, int, error) {
	byName := map[string]T{}
	for _, h := range have {
		byName[nameOf(h)] = h
	}
	n := 0
	for _, a := range add {
		h, ok := byName[nameOf(a)]
		switch {
		case !ok:
			have = append(have, a)
			byName[nameOf(a)] = a
			n++
		case !reflect.DeepEqual(h, a):
			return nil, 0, fmt.Errorf("%s %q is in the shared index already, registered differently: remove one of the two, then import again (what was copied before stays, and is skipped)", kind, nameOf(a))
		}
	}
	return have, n, nil
}
