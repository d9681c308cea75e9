package server

// Cluster mode: when [storage] index is PostgreSQL, the nodes share the
// registered peers, the users, the API tokens and the browser sessions
// through the index (store/pgshared), so that every node admits the same
// callers. Each node reads them at start, and again within seconds of a
// change (LISTEN/NOTIFY, with a poll as the fallback), through the same
// reload as ward peer's admin request: the change is audited in each
// node's own trail, naming who made it. The lockout counts are the
// cluster's: each refusal (and each success that forgets refusals) a node
// counts is sent to the others (NOTIFY ward_lockout), which count it too,
// so that guesses spread over the nodes behind a load balancer lock an
// account or a source out as soon as on one node.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/policy"
	"github.com/ward-pacs/ward/policy/tokens"
	"github.com/ward-pacs/ward/store/pgshared"
	"github.com/ward-pacs/ward/web"
)

// The shared state is the web front end's session store.
var _ web.SessionStore = (*pgshared.Shared)(nil)

// The shared state is what config edits and reads.
var _ config.SharedState = (*pgshared.Shared)(nil)

// sharedTimeout bounds one read of the shared state.
const sharedTimeout = 10 * time.Second

// OpenShared opens the shared state of c's cluster: nil, nil when c names
// no shared index. The ward peer, user and token commands use it.
func OpenShared(ctx context.Context, c *config.Config) (*pgshared.Shared, error) {
	if !c.Cluster() {
		return nil, nil
	}
	b, err := c.Storage.IndexBackend()
	if err != nil {
		return nil, err
	}
	sh, err := pgshared.Open(ctx, b.DSN, nil)
	if err != nil {
		return nil, fmt.Errorf("the cluster's shared index: %w", err)
	}
	return sh, nil
}

// openShared opens the shared state when the configuration names a
// shared index.
func (s *Server) openShared(ctx context.Context) error {
	if !s.Config.Cluster() {
		return nil
	}
	b, err := s.Config.Storage.IndexBackend()
	if err != nil {
		return err
	}
	if s.shared, err = pgshared.Open(ctx, b.DSN, s.Logger); err != nil {
		return fmt.Errorf("the cluster's shared index: %w", err)
	}
	s.Logger.Info("cluster mode: peers, users, tokens and sessions are those of the shared index")
	return nil
}

// current is what c puts in effect: c and the token file of its data
// directory, or, in cluster mode, c with the peers and users of the
// shared index, and its tokens.
func (s *Server) current(c *config.Config) (*config.Config, *tokens.Set, error) {
	if s.shared == nil {
		set, err := config.LoadTokens(config.TokenFile(c.DataDir))
		return c, set, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	sh, err := config.LoadShared(ctx, s.shared)
	if err != nil {
		return nil, nil, err
	}
	eff, err := c.WithShared(sh)
	if err != nil {
		return nil, nil, err
	}
	if who := eff.DeidentifyWithoutSecret(); len(who) > 0 {
		s.Logger.Warn("the shared index gives de-identification profiles, but this node's ward.toml names no [deidentify] secret_file: what they retrieve through this node is refused (give every node the same secret file)", "who", who)
	}
	return eff, sh.Tokens, nil
}

// lockoutNote is a lockout event on the wire between nodes.
type lockoutNote struct {
	Node    string `json:"n"`
	Refused bool   `json:"r,omitempty"`
	Source  string `json:"s,omitempty"`
	Key     string `json:"k,omitempty"`
	Account string `json:"a,omitempty"`
}

// lockoutQueue bounds the events waiting to be sent: beyond it (the
// shared index slow or away) they are dropped, and the other nodes count
// only their own.
const lockoutQueue = 1024

// shareLockouts sends what this node's lockout counts to the other nodes
// of the cluster (watchShared counts theirs). Called once the limiter is
// made, before anything is verified.
func (s *Server) shareLockouts() {
	if s.shared == nil || s.limits == nil {
		return
	}
	s.lockoutOut = make(chan policy.LockoutEvent, lockoutQueue)
	s.limits.Share = func(ev policy.LockoutEvent) {
		select {
		case s.lockoutOut <- ev:
		default:
		}
	}
}

// exchangeLockouts sends this node's lockout events and counts the other
// nodes' until ctx ends.
func (s *Server) exchangeLockouts(ctx context.Context) {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-s.lockoutOut:
				n := lockoutNote{Node: s.node, Refused: ev.Refused, Key: ev.Key, Account: ev.Account}
				if ev.Source.IsValid() {
					n.Source = ev.Source.String()
				}
				b, _ := json.Marshal(n)
				nctx, cancel := context.WithTimeout(ctx, sharedTimeout)
				if err := s.shared.Notify(nctx, pgshared.LockoutChannel, string(b)); err != nil && ctx.Err() == nil {
					s.Logger.Debug("a lockout event was not sent to the other nodes", "err", err.Error())
				}
				cancel()
			}
		}
	}()
	s.shared.Listen(ctx, pgshared.LockoutChannel, func(payload string) {
		var n lockoutNote
		if err := json.Unmarshal([]byte(payload), &n); err != nil || n.Node == s.node {
			return // this node's own, or not one of Ward's
		}
		ev := policy.LockoutEvent{Refused: n.Refused, Key: n.Key, Account: n.Account}
		if n.Source != "" {
			a, err := netip.ParseAddr(n.Source)
			if err != nil {
				return
			}
			ev.Source = a
		}
		s.limits.Apply(ev)
	})
}

// watchShared puts changes of the shared state in effect until ctx ends,
// and removes expired sessions every minute.
func (s *Server) watchShared(ctx context.Context) {
	if s.shared == nil {
		return
	}
	if s.lockoutOut != nil {
		go s.exchangeLockouts(ctx)
	}
	go func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if _, err := s.shared.PurgeSessions(ctx, now, web.DefaultSessionIdle); err != nil && ctx.Err() == nil {
					s.Logger.Warn("expired sessions not purged", "err", err.Error())
				}
			}
		}
	}()
	s.shared.Watch(ctx, func(name string) {
		if s.Load == nil {
			s.Logger.Warn("shared state changed, but this ward serve cannot read its configuration again (no Load)", "document", name)
			return
		}
		by, _ := s.shared.UpdatedBy(ctx, name)
		if by == "" {
			by = "unknown"
		}
		if _, err := s.ReloadConfig(by + " (shared index, " + name + ")"); err != nil {
			s.Logger.Error("shared state not put in effect; the previous one stays", "document", name, "err", err.Error())
		}
	})
}

// addSharedUser adds the first administrator to the shared index (the
// first-run set-up in cluster mode). Every node without a user that can
// sign in prints a set-up link: the first one used wins, the others are
// refused in the same transaction, before their nodes learn of it.
func (s *Server) addSharedUser(ctx context.Context, u config.User, by string) error {
	return config.EditSharedUsers(ctx, s.shared, by, func(users []config.User) ([]config.User, error) {
		for _, x := range users {
			if x.Name == u.Name {
				return nil, fmt.Errorf("user %q exists already", u.Name)
			}
			if len(x.Roles) > 0 {
				return nil, web.ErrSetupUsed
			}
		}
		return append(users, u), nil
	})
}
