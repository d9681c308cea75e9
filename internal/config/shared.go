package config

import (
	"context"
	"fmt"

	"github.com/BurntSushi/toml"

	"github.com/ward-pacs/ward/policy/tokens"
)

// Cluster mode: when [storage] index is PostgreSQL, the registered peers,
// the users and the API tokens live in the shared index, as three
// documents every node reads (store/pgshared): "peers" and "users" hold
// [[peers]] and [[users]] tables as ward.toml would, "tokens" the token
// file's JSON. ward peer, ward user and ward token edit them there, and
// each running node puts a change in effect within seconds.

// Shared document names (store/pgshared's).
const (
	SharedPeers  = "peers"
	SharedUsers  = "users"
	SharedTokens = "tokens"
)

// SharedState is the shared index's documents (store/pgshared.Shared).
type SharedState interface {
	Document(ctx context.Context, name string) ([]byte, int64, error)
	EditDocument(ctx context.Context, name, by string, edit func([]byte) ([]byte, error)) (int64, error)
}

// Shared is what a cluster shares: its peers, users and tokens.
type Shared struct {
	Peers  []Peer
	Users  []User
	Tokens *tokens.Set
}

// LoadShared reads the peers, users and tokens of the shared index. A
// document never written holds none.
func LoadShared(ctx context.Context, st SharedState) (*Shared, error) {
	out := &Shared{}
	var err error
	if out.Peers, err = sharedTables(ctx, st, SharedPeers, func(c *Config) []Peer { return c.Peers }); err != nil {
		return nil, err
	}
	if out.Users, err = sharedTables(ctx, st, SharedUsers, func(c *Config) []User { return c.Users }); err != nil {
		return nil, err
	}
	b, _, err := st.Document(ctx, SharedTokens)
	if err != nil {
		return nil, err
	}
	if out.Tokens, err = decodeTokens(b); err != nil {
		return nil, err
	}
	return out, nil
}

func decodeTokens(b []byte) (*tokens.Set, error) {
	if len(b) == 0 {
		return &tokens.Set{}, nil
	}
	s, err := tokens.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("the shared index's tokens: %w", err)
	}
	return s, nil
}

// sharedTables decodes the [[name]] tables of a shared document.
func sharedTables[T any](ctx context.Context, st SharedState, name string, field func(*Config) []T) ([]T, error) {
	b, _, err := st.Document(ctx, name)
	if err != nil {
		return nil, err
	}
	return decodeShared(name, b, field)
}

func decodeShared[T any](name string, b []byte, field func(*Config) []T) ([]T, error) {
	var c Config
	md, err := toml.Decode(string(b), &c)
	if err != nil {
		return nil, fmt.Errorf("the shared index's %s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("the shared index's %s: unknown keys %v (written by a newer Ward?)", name, und)
	}
	return field(&c), nil
}

// EditSharedPeers lets edit change the shared peers, checks them as
// EditPeers does, and writes them back, noted as made by by.
func EditSharedPeers(ctx context.Context, st SharedState, by string, edit func([]Peer) ([]Peer, error)) error {
	return editShared(ctx, st, SharedPeers, by, func(c *Config) []Peer { return c.Peers }, func(peers []Peer) error {
		seen := map[string]bool{}
		for i := range peers {
			if len(peers[i].Allow) == 0 {
				peers[i].Allow = nil
			}
			if err := peers[i].Validate(); err != nil {
				return err
			}
			if seen[peers[i].AETitle] {
				return fmt.Errorf("peer %q is registered twice", peers[i].AETitle)
			}
			seen[peers[i].AETitle] = true
		}
		return nil
	}, edit)
}

// EditSharedUsers lets edit change the shared users, checks them as
// EditUsers does, and writes them back.
func EditSharedUsers(ctx context.Context, st SharedState, by string, edit func([]User) ([]User, error)) error {
	return editShared(ctx, st, SharedUsers, by, func(c *Config) []User { return c.Users }, func(users []User) error {
		check := Config{Users: users}
		return check.ValidateUsers()
	}, edit)
}

func editShared[T any](ctx context.Context, st SharedState, name, by string, field func(*Config) []T, check func([]T) error, edit func([]T) ([]T, error)) error {
	_, err := st.EditDocument(ctx, name, by, func(b []byte) ([]byte, error) {
		items, err := decodeShared(name, b, field)
		if err != nil {
			return nil, err
		}
		if items, err = edit(items); err != nil {
			return nil, err
		}
		if err := check(items); err != nil {
			return nil, err
		}
		enc, err := encodeTables(name, items)
		if err != nil {
			return nil, err
		}
		if enc == nil {
			enc = []byte{}
		}
		return enc, nil
	})
	return err
}

// EditSharedTokens lets edit change the shared tokens and writes them
// back.
func EditSharedTokens(ctx context.Context, st SharedState, by string, edit func(*tokens.Set) error) error {
	_, err := st.EditDocument(ctx, SharedTokens, by, func(b []byte) ([]byte, error) {
		s, err := decodeTokens(b)
		if err != nil {
			return nil, err
		}
		if err := edit(s); err != nil {
			return nil, err
		}
		return s.Encode()
	})
	return err
}

// DeidentifyWithoutSecret names the peers ("peer AET") and users ("user
// NAME") that have a de-identification profile while c names no
// [deidentify] secret_file: what they retrieve is refused. A file's own
// configuration cannot have them (Validate refuses it); the shared
// index's peers and users can, on a node set up without the secret.
func (c *Config) DeidentifyWithoutSecret() []string {
	if c.Deidentify.SecretFile != "" {
		return nil
	}
	var out []string
	for _, p := range c.Peers {
		if p.Deidentify != "" {
			out = append(out, "peer "+p.AETitle)
		}
	}
	for _, u := range c.Users {
		if u.Deidentify != "" {
			out = append(out, "user "+u.Name)
		}
	}
	return out
}

// WithShared is c with the peers and users of sh in place of the file's
// (c names a shared index: the file has none), checked as Validate and
// Check check a file's: a peer or user ward serve would refuse is an
// error.
func (c *Config) WithShared(sh *Shared) (*Config, error) {
	eff := *c
	eff.Peers = append([]Peer(nil), sh.Peers...)
	eff.Users = append([]User(nil), sh.Users...)
	if err := eff.ValidateUsers(); err != nil {
		return nil, fmt.Errorf("the shared index's users: %w", err)
	}
	seen := map[string]bool{}
	for i := range eff.Peers {
		p := &eff.Peers[i]
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("the shared index's peers: %w", err)
		}
		if seen[p.AETitle] {
			return nil, fmt.Errorf("the shared index's peers: peer %q is registered twice", p.AETitle)
		}
		seen[p.AETitle] = true
	}
	// The findings on peers and users alone (the file's own settings
	// were checked with it).
	alone := *Default()
	alone.Peers, alone.Users, alone.Identity = eff.Peers, eff.Users, eff.Identity
	if r := Refused(alone.Check()); len(r) > 0 {
		return nil, fmt.Errorf("the shared index's peers or users: refusing risky settings: %s", r[0])
	}
	return &eff, nil
}
