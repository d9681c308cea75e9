package cli

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/server"
	"github.com/ward-pacs/ward/policy/tokens"
	"github.com/ward-pacs/ward/store/pgshared"
)

// registry is where ward peer, ward user and ward token keep what they
// edit: the configuration file and the data directory's token file, or,
// when the configuration names a cluster's shared PostgreSQL index, that
// index (no running node needed: every running node puts a change in
// effect within seconds).
type registry struct {
	path   string         // the configuration file
	c      *config.Config // as read (not validated)
	shared *pgshared.Shared
}

// registryTimeout bounds the shared index's work for one command.
const registryTimeout = time.Minute

// openRegistry opens what the flags name.
func openRegistry(df dataFlags) (*registry, error) {
	c, err := loadConfig(*df.config, *df.data)
	if err != nil {
		return nil, err
	}
	r := &registry{path: df.file(), c: c}
	if c.Cluster() {
		ctx, cancel := context.WithTimeout(context.Background(), registryTimeout)
		defer cancel()
		if r.shared, err = server.OpenShared(ctx, c); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (r *registry) close() {
	if r.shared != nil {
		r.shared.Close()
	}
}

// String names where the entries are kept, for messages.
func (r *registry) String() string {
	if r.shared != nil {
		return "the cluster's shared index"
	}
	return r.path
}

func ctxOp() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), registryTimeout)
}

func (r *registry) editPeers(edit func([]config.Peer) ([]config.Peer, error)) error {
	if r.shared == nil {
		return config.EditPeers(r.path, edit)
	}
	ctx, cancel := ctxOp()
	defer cancel()
	return config.EditSharedPeers(ctx, r.shared, operator(), edit)
}

func (r *registry) editUsers(edit func([]config.User) ([]config.User, error)) error {
	if r.shared == nil {
		return config.EditUsers(r.path, edit)
	}
	ctx, cancel := ctxOp()
	defer cancel()
	return config.EditSharedUsers(ctx, r.shared, operator(), edit)
}

func (r *registry) editTokens(edit func(*tokens.Set) error) error {
	if r.shared == nil {
		return config.EditTokens(config.TokenFile(r.c.DataDir), edit)
	}
	ctx, cancel := ctxOp()
	defer cancel()
	return config.EditSharedTokens(ctx, r.shared, operator(), edit)
}

// load reads the peers, users and tokens.
func (r *registry) load(optional bool) (*config.Shared, error) {
	if r.shared == nil {
		c, err := config.Load(r.path, optional)
		if err != nil {
			return nil, err
		}
		set, err := config.LoadTokens(config.TokenFile(r.c.DataDir))
		if err != nil {
			return nil, err
		}
		return &config.Shared{Peers: c.Peers, Users: c.Users, Tokens: set}, nil
	}
	ctx, cancel := ctxOp()
	defer cancel()
	return config.LoadShared(ctx, r.shared)
}

// clusterNote says, after a change to the shared index, that the nodes
// put it in effect: through the local ward serve at once (as applyRunning
// asks it), the others within seconds.
func (e *env) clusterNote() {
	fmt.Fprintf(e.stderr, "the nodes of the cluster put the change in effect within %s (each audits it)\n", 2*pgshared.PollInterval)
}

// operator names who edits the shared index, for the nodes' audit
// trails: the user running the command, and on which machine (edits come
// from any machine with the cluster's configuration).
func operator() string {
	op := admin.Operator()
	if h, err := os.Hostname(); err == nil && h != "" {
		op += "@" + h
	}
	return op
}
