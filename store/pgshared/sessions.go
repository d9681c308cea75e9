package pgshared

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The browser sessions of the web front end, kept for every node: a
// browser signed in through one node is signed in on all of them, and a
// session ended on one (sign-out, its user removed) is ended on all.
// Shared has the methods of web.SessionStore; the body is the front end's
// own encoding of a session.

// CreateSession stores a new session under key (the SHA-256 of its ID)
// for user, alive until expires at the latest.
func (s *Shared) CreateSession(ctx context.Context, key [32]byte, user string, body []byte, now, expires time.Time) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO ward_sessions (key, username, body, created, seen, expires) VALUES ($1, $2, $3, $4, $4, $5)`,
		key[:], user, body, now, expires)
	if err != nil {
		return fmt.Errorf("pgshared: storing a session: %w", err)
	}
	return nil
}

// LookupSession returns the body of the session of key, nil when there
// is none alive at now: past its expiry, or not seen for idle (such a
// session is removed). It marks the session seen at now, writing only
// when the time stored is older than SeenEvery.
func (s *Shared) LookupSession(ctx context.Context, key [32]byte, now time.Time, idle time.Duration) ([]byte, error) {
	var body []byte
	var seen, expires time.Time
	err := s.pool.QueryRow(ctx, `SELECT body, seen, expires FROM ward_sessions WHERE key = $1`, key[:]).Scan(&body, &seen, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pgshared: reading a session: %w", err)
	}
	if !now.Before(expires) || now.Sub(seen) >= idle {
		if _, err := s.pool.Exec(ctx, `DELETE FROM ward_sessions WHERE key = $1`, key[:]); err != nil {
			return nil, fmt.Errorf("pgshared: ending a session: %w", err)
		}
		return nil, nil
	}
	if now.Sub(seen) >= s.SeenEvery {
		if _, err := s.pool.Exec(ctx, `UPDATE ward_sessions SET seen = greatest(seen, $2) WHERE key = $1`, key[:], now); err != nil {
			return nil, fmt.Errorf("pgshared: marking a session seen: %w", err)
		}
	}
	return body, nil
}

// EndSession removes the session of key and returns its body (nil when
// there was none).
func (s *Shared) EndSession(ctx context.Context, key [32]byte) ([]byte, error) {
	var body []byte
	err := s.pool.QueryRow(ctx, `DELETE FROM ward_sessions WHERE key = $1 RETURNING body`, key[:]).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pgshared: ending a session: %w", err)
	}
	return body, nil
}

// EndUserSessions removes every session of user.
func (s *Shared) EndUserSessions(ctx context.Context, user string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM ward_sessions WHERE username = $1`, user); err != nil {
		return fmt.Errorf("pgshared: ending the sessions of a user: %w", err)
	}
	return nil
}

// PurgeSessions removes the sessions past their expiry at now, or not
// seen for idle, and says how many.
func (s *Shared) PurgeSessions(ctx context.Context, now time.Time, idle time.Duration) (int64, error) {
	t, err := s.pool.Exec(ctx, `DELETE FROM ward_sessions WHERE expires <= $1 OR seen <= $2`, now, now.Add(-idle))
	if err != nil {
		return 0, fmt.Errorf("pgshared: purging sessions: %w", err)
	}
	return t.RowsAffected(), nil
}
