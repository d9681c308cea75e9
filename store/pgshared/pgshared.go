// Package pgshared keeps what the nodes of a cluster share beside the
// archive in its PostgreSQL index: small named documents (the registered
// peers, the users, the API tokens; their encoding is the caller's) and
// the browser sessions of the web front end.
//
// Documents are edited in a transaction that locks the document's row
// (SELECT … FOR UPDATE), so that two editors never lose each other's
// change; every edit bumps the document's version and, in the same
// transaction, sends NOTIFY ward_shared with the document's name. A node
// learns of a change through Watch: LISTEN on a dedicated connection
// (reconnected with backoff when it breaks) and, as a fallback for a
// notification lost with a broken connection, a poll of the versions
// every few seconds.
//
// Sessions are kept by the SHA-256 of their ID: the table holds nothing a
// browser could present. The tables are Ward's own (ward_shared,
// ward_sessions), made by a versioned migration under an advisory lock,
// so several nodes may start at once; they live beside the archive's
// tables in the same database and schema.
package pgshared

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Channel is the NOTIFY channel of document changes; the payload is the
// document's name.
const Channel = "ward_shared"

// LockoutChannel is the NOTIFY channel of the refusals and successes
// one node's lockout counted, for the others (Notify, Listen). Nothing of
// it is stored: a node counts what it hears while it listens.
const LockoutChannel = "ward_lockout"

// Document names Ward uses.
const (
	Peers  = "peers"
	Users  = "users"
	Tokens = "tokens"
)

// MaxDocument bounds a document's size (bytes).
const MaxDocument = 16 << 20

// PollInterval is how often Watch compares the versions, in case a
// notification was lost.
const PollInterval = 3 * time.Second

// advisoryLock is the key of the advisory lock the migration runs under
// ("ward" "sh" as bytes).
const advisoryLock = 0x77617264_7368

// ErrTooLarge: a document beyond MaxDocument.
var ErrTooLarge = errors.New("pgshared: document too large")

// migrations are applied in order, each once; the number of those applied
// is kept in ward_shared_schema.
var migrations = []string{
	`CREATE TABLE ward_shared (
		name       text PRIMARY KEY,
		body       bytea NOT NULL,
		version    bigint NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT now(),
		updated_by text NOT NULL DEFAULT ''
	);
	CREATE TABLE ward_sessions (
		key      bytea PRIMARY KEY,
		username text NOT NULL,
		body     bytea NOT NULL,
		created  timestamptz NOT NULL,
		seen     timestamptz NOT NULL,
		expires  timestamptz NOT NULL
	);
	CREATE INDEX ward_sessions_user ON ward_sessions (username);
	CREATE INDEX ward_sessions_expires ON ward_sessions (expires);`,
}

// Shared is a cluster's shared state in one PostgreSQL database.
type Shared struct {
	pool   *pgxpool.Pool
	cfg    *pgxpool.Config
	logger *slog.Logger
	// SeenEvery is how stale a session's last-seen time may get before a
	// lookup writes it (a write per request would be one per DICOMweb
	// call); the idle timeout is exact to within it.
	SeenEvery time.Duration
}

// Open connects to the database of dsn (a postgres:// URL or a libpq
// key=value string; the PG* environment variables and the password file
// are honoured) and brings Ward's shared tables up to date.
func Open(ctx context.Context, dsn string, logger *slog.Logger) (*Shared, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's error may quote the DSN: say only what it is.
		return nil, errors.New("pgshared: the PostgreSQL DSN does not parse")
	}
	if cfg.MaxConns > 4 {
		cfg.MaxConns = 4
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgshared: %w", err)
	}
	s := &Shared{pool: pool, cfg: cfg, logger: logger, SeenEvery: 30 * time.Second}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connections.
func (s *Shared) Close() { s.pool.Close() }

// migrate applies the migrations not yet applied, under an advisory lock
// held for the transaction.
func (s *Shared) migrate(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(advisoryLock)); err != nil {
			return fmt.Errorf("pgshared: migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS ward_shared_schema (version integer NOT NULL)`); err != nil {
			return fmt.Errorf("pgshared: migration: %w", err)
		}
		var v int
		err := tx.QueryRow(ctx, `SELECT version FROM ward_shared_schema`).Scan(&v)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if _, err := tx.Exec(ctx, `INSERT INTO ward_shared_schema (version) VALUES (0)`); err != nil {
				return fmt.Errorf("pgshared: migration: %w", err)
			}
		case err != nil:
			return fmt.Errorf("pgshared: migration: %w", err)
		}
		if v > len(migrations) {
			return fmt.Errorf("pgshared: the shared tables are at version %d, newer than this Ward knows (%d): upgrade this node", v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return fmt.Errorf("pgshared: migration %d: %w", i+1, err)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE ward_shared_schema SET version = $1`, len(migrations)); err != nil {
			return fmt.Errorf("pgshared: migration: %w", err)
		}
		return nil
	})
}

// Document returns the body and version of the document name (nil and 0
// when it was never written).
func (s *Shared) Document(ctx context.Context, name string) ([]byte, int64, error) {
	var body []byte
	var v int64
	err := s.pool.QueryRow(ctx, `SELECT body, version FROM ward_shared WHERE name = $1`, name).Scan(&body, &v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("pgshared: reading %s: %w", name, err)
	}
	return body, v, nil
}

// EditDocument runs edit on the document name (nil when never written)
// with its row locked, writes what it returns as the next version, noted
// as made by by, and notifies the other nodes, all in one transaction. An
// error from edit leaves the document as it was; edit returning its
// input unchanged (the same bytes) writes nothing.
func (s *Shared) EditDocument(ctx context.Context, name, by string, edit func([]byte) ([]byte, error)) (int64, error) {
	var version int64
	var editErr error
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO ward_shared (name, body, version) VALUES ($1, '', 0) ON CONFLICT (name) DO NOTHING`, name); err != nil {
			return err
		}
		var body []byte
		if err := tx.QueryRow(ctx, `SELECT body, version FROM ward_shared WHERE name = $1 FOR UPDATE`, name).Scan(&body, &version); err != nil {
			return err
		}
		if version == 0 {
			body = nil
		}
		out, err := edit(body)
		if err == nil && len(out) > MaxDocument {
			err = fmt.Errorf("%w: %s would be %d bytes", ErrTooLarge, name, len(out))
		}
		if err != nil {
			editErr = err
			return err
		}
		if version > 0 && string(out) == string(body) {
			return nil
		}
		version++
		if _, err := tx.Exec(ctx, `UPDATE ward_shared SET body = $2, version = $3, updated_at = now(), updated_by = $4 WHERE name = $1`, name, out, version, by); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, name)
		return err
	})
	switch {
	case editErr != nil:
		return 0, editErr
	case err != nil:
		return 0, fmt.Errorf("pgshared: writing %s: %w", name, err)
	}
	return version, nil
}

// UpdatedBy says who wrote the document's current version ("" when none).
func (s *Shared) UpdatedBy(ctx context.Context, name string) (string, error) {
	var by string
	err := s.pool.QueryRow(ctx, `SELECT updated_by FROM ward_shared WHERE name = $1`, name).Scan(&by)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return by, err
}

// Versions returns the version of every document written.
func (s *Shared) Versions(ctx context.Context) (map[string]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, version FROM ward_shared`)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	var name string
	var v int64
	_, err = pgx.ForEachRow(rows, []any{&name, &v}, func() error {
		out[name] = v
		return nil
	})
	return out, err
}

// Watch calls changed with a document's name after another version of it
// was written (by any node, this one included), until ctx ends. It listens
// on a connection of its own, reconnecting with backoff (1 s doubling to
// 30 s) when it breaks, and compares the versions every PollInterval as
// well, so that a change is seen within seconds even while the listening
// connection is down. After a reconnection every document is reported as
// changed (a notification may have been missed). changed runs on Watch's
// goroutine, one call at a time.
func (s *Shared) Watch(ctx context.Context, changed func(name string)) {
	known := map[string]int64{}
	failing := false
	// check reports every document whose version differs from the one
	// last seen; all reports every document.
	check := func(all bool) {
		v, err := s.Versions(ctx)
		if err != nil {
			// Said once per outage, not at every poll.
			if ctx.Err() == nil && !failing {
				s.logger.Warn("shared state unreachable: the peers, users and tokens last read stay in effect", "err", err.Error())
			}
			failing = true
			return
		}
		if failing {
			s.logger.Info("shared state reachable again")
			all, failing = true, false
		}
		var names []string
		for n, ver := range v {
			if all || known[n] != ver {
				names = append(names, n)
			}
			known[n] = ver
		}
		for _, n := range names {
			changed(n)
		}
	}
	if v, err := s.Versions(ctx); err == nil {
		known = v
	}
	notes := make(chan string, 16)
	go s.listen(ctx, Channel, notes)
	poll := time.NewTicker(PollInterval)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-notes:
			// "" reports a reconnection: compare everything.
			check(n == "")
		case <-poll.C:
			check(false)
		}
	}
}

// Notify sends payload on channel to every node listening (Listen).
func (s *Shared) Notify(ctx context.Context, channel, payload string) error {
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, payload); err != nil {
		return fmt.Errorf("pgshared: notify %s: %w", channel, err)
	}
	return nil
}

// Listen calls fn with the payload of each notification on channel (its
// own node's included) until ctx ends, in one goroutine, reconnecting as
// Watch does; what is sent while the connection is broken is lost.
func (s *Shared) Listen(ctx context.Context, channel string, fn func(payload string)) {
	notes := make(chan string, 64)
	go s.listen(ctx, channel, notes)
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-notes:
			if n != "" {
				fn(n)
			}
		}
	}
}

// listen LISTENs to channel on a dedicated connection and sends each
// notification's payload to notes, and "" after each (re)connection.
func (s *Shared) listen(ctx context.Context, channel string, notes chan<- string) {
	backoff := time.Second
	first := true
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, s.cfg.ConnConfig)
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize())
		}
		if err == nil {
			backoff = time.Second
			if !first {
				s.logger.Info("shared state: listening again", "channel", channel)
			}
			select {
			case notes <- "":
			case <-ctx.Done():
			}
			first = false
			for {
				n, werr := conn.WaitForNotification(ctx)
				if werr != nil {
					err = werr
					break
				}
				select {
				case notes <- n.Payload:
				case <-ctx.Done():
				}
			}
		}
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(cctx)
			cancel()
		}
		if ctx.Err() != nil {
			return
		}
		s.logger.Warn("shared state: notifications lost until the connection is back", "channel", channel, "err", err.Error(), "retry_in", backoff.String())
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// TerminateOthers ends every other connection to the database (tests of
// reconnection; it needs the right to signal those backends).
func (s *Shared) TerminateOthers(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	return err
}
