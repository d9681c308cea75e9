package server

// Cluster mode: when [storage] index is PostgreSQL, the nodes share the
// registered peers, the users, the API tokens and the browser sessions
// through the index (store/pgshared), so that every node admits the same
// callers. Each node reads them at start, and again within seconds of a
// change (LISTEN/NOTIFY, with a poll as the fallback), through the same
// reload as ward peer's admin request: the change is audited in each
// node's own trail, naming who made it. The lockout counters stay each
// node's own.

import (
	"context"
	"fmt"
	"time"

	"github.com/ward-pacs/ward/internal/config"
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
	return eff, sh.Tokens, nil
}

// watchShared puts changes of the shared state in effect until ctx ends,
// and removes expired sessions every minute.
func (s *Server) watchShared(ctx context.Context) {
	if s.shared == nil {
		return
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
