// Package postgres is the store.Index backend on PostgreSQL, for several
// Ward nodes that share one index. It registers the "postgres" Index
// backend; the data source name is the whole postgres:// URL, read by
// pgx, so that libpq's PG* environment variables (PGHOST, PGUSER,
// PGPASSWORD, PGSSLMODE, ...) and password file (~/.pgpass, PGPASSFILE)
// fill in what the URL leaves out, and the pool's own settings ride in it
// (pool_max_conns, default 16; pool_min_conns, pool_max_conn_lifetime,
// ...). Keep the password out of the URL: ward.toml is no place for a
// secret.
//
// Open brings the schema up to date (versioned migrations in
// schema_migrations) under a transaction-scoped advisory lock, so that any
// number of nodes may start at once: one migrates, the others wait and
// find it done.
//
// Every write is one transaction at READ COMMITTED, committed durably
// (as the server's synchronous_commit says), and retried from the start
// when it lost a race with another node's: a serialization failure, a
// deadlock, or a parent row deleted as empty under it (a foreign key
// violation). A Put locks the instance row it replaces (SELECT ... FOR
// UPDATE) and inserts a new one with ON CONFLICT DO NOTHING, so that two
// nodes storing the same SOP Instance UID at once leave one row, and the
// blob of the other recorded for deletion in the same transaction.
// Parent rows whose values do not change are not written, so the stores
// of one series on several nodes do not queue on its row.
//
// A transaction or read whose connection failed before its COMMIT (a
// pooled connection the server closed when it restarted) runs again on
// another connection, a few times within about a second; one that failed
// during COMMIT is not run again (it may have committed). Failures of the
// connection or of the server (refused, reset, shut down, restarting,
// too many clients) that remain, and races still lost after the retries,
// are wrapped in store.ErrUnavailable: the archive answers them
// with a transient status, and the caller may try again. A full disk on
// the server matches syscall.ENOSPC, an I/O error syscall.EIO.
//
// Capabilities: Inserter, BlobFinder, DeletionRecorder, DeleteHolder
// (holds are rows, by the database's clock, so every node sees them),
// InstanceWalker, Counter, Querier, KeyMatcher, SequenceIndexer and
// MetadataKeeper (each instance's DICOM JSON in instance_metadata, so that
// a series' metadata is read with its rows). Not offered:
//   - DeferredSyncer: a deferred write is one that the archive redoes
//     after a crash of its own node from the intent kept with the blob.
//     A PostgreSQL server that crashes loses deferred commits of every
//     node, and no node replays another's intents: every write waits for
//     its commit.
//   - Snapshotter and SnapshotFiles: `ward backup` copies an embedded
//     archive (a SQLite file and the object files) and is refused for
//     this index. Back up a PostgreSQL index with the database's own
//     tools (pg_dump, or base backups and WAL archiving such as
//     pgBackRest), and the objects with the bucket's versioning or
//     replication (docs/configuration.md, PostgreSQL index).
//
// Queries (query.go) match as the SQLite index does and are planned by
// the server for the values of each run; TestQueryPlans checks that the
// common ones read through indexes.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ward-pacs/ward/store"
)

func init() {
	store.RegisterIndex("postgres", func(ctx context.Context, dsn string) (store.Index, error) {
		return Open(ctx, dsn)
	})
}

// ErrSchemaTooNew is returned by Open for a database migrated by a newer
// Ward.
var ErrSchemaTooNew = errors.New("postgres: database schema is newer than this binary supports")

// migrationLock is the key of the advisory lock migrations run under
// ("ward" in ASCII).
const migrationLock = 0x77617264

// defaultMaxConns is the pool's size when the URL sets no
// pool_max_conns: enough for the stores of several associations to
// commit at once, and for queries beside them. Connections are opened as
// needed.
const defaultMaxConns = 16

// DB is the PostgreSQL Index. It is safe for concurrent use.
type DB struct {
	pool   *pgxpool.Pool
	closed atomic.Bool
}

var (
	_ store.Index            = (*DB)(nil)
	_ store.Inserter         = (*DB)(nil)
	_ store.BlobFinder       = (*DB)(nil)
	_ store.InstanceWalker   = (*DB)(nil)
	_ store.DeletionRecorder = (*DB)(nil)
	_ store.DeleteHolder     = (*DB)(nil)
	_ store.Counter          = (*DB)(nil)
	_ store.MetadataKeeper   = (*DB)(nil)
	_ store.Exclusive        = (*DB)(nil)
)

// Open connects to the database dsn names (a postgres:// or postgresql://
// URL, or libpq's key=value form) and brings its schema up to date.
func Open(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN, password and all.
		return nil, errors.New("postgres: the index URL cannot be parsed (see docs/configuration.md)")
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "ward"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", classify(err))
	}
	db := &DB{pool: pool}
	if err := db.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// migrate applies the migrations this binary knows and the database
// lacks, in one transaction under an advisory lock, and refuses a
// database whose version is newer.
func (db *DB) migrate(ctx context.Context) error {
	err := db.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    integer PRIMARY KEY,
	applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
			return err
		}
		var v int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
			return err
		}
		if v > len(migrations) {
			return fmt.Errorf("%w (database version %d, supported %d)", ErrSchemaTooNew, v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, i+1); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
		return nil
	})
	if errors.Is(err, ErrSchemaTooNew) {
		return err
	}
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	return nil
}

// SchemaVersion returns the number of migrations this binary knows.
func SchemaVersion() int { return len(migrations) }

// Close closes the pool, waiting for connections in use.
func (db *DB) Close() error {
	if db.closed.CompareAndSwap(false, true) {
		db.pool.Close()
	}
	return nil
}

// errRetry asks tx to run the transaction again (a row it was about to
// insert was inserted by another node meanwhile).
var errRetry = errors.New("postgres: lost a race, retrying")

// maxAttempts bounds how often tx runs a transaction that loses races.
const maxAttempts = 12

// tx runs fn in a transaction and commits it, again from the start when
// it lost a race with another transaction (see retryable), or when the
// connection failed before COMMIT was sent (a pooled connection the
// server closed when it restarted, say: the transaction died with it, so
// running it again on another connection is safe; connTries times, within
// about a second). A failure during COMMIT is not retried: it may have
// committed. Statements run with ctx; a caller whose ctx ends gets its
// error.
func (db *DB) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	if db.closed.Load() {
		return store.ErrClosed
	}
	var err error
	lost := 0
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			// Jittered, growing: racing nodes do not meet again.
			d := time.Duration(rand.Int64N(int64(time.Millisecond)<<min(attempt, 7))) + time.Millisecond
			if lost > 0 {
				d = time.Duration(lost*lost) * 60 * time.Millisecond
			}
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		var committing bool
		committing, err = db.once(ctx, fn)
		if err == nil || ctx.Err() != nil {
			break
		}
		if !committing && connectionLost(err) && lost < connTries {
			lost++
			continue
		}
		if !retryable(err) {
			break
		}
	}
	return classify(err)
}

// read runs f, a read with no effect, again when its connection failed
// (connTries times, as tx).
func (db *DB) read(ctx context.Context, f func() error) error {
	for lost := 0; ; lost++ {
		err := f()
		if err == nil || lost >= connTries || ctx.Err() != nil || !connectionLost(err) {
			return err
		}
		select {
		case <-time.After(time.Duration((lost+1)*(lost+1)) * 60 * time.Millisecond):
		case <-ctx.Done():
			return err
		}
	}
}

// connTries is how often tx runs a transaction again whose connection
// failed before its COMMIT.
const connTries = 3

// once runs fn in one transaction; committing says an error came from
// COMMIT.
func (db *DB) once(ctx context.Context, fn func(pgx.Tx) error) (committing bool, err error) {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	if err := fn(tx); err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = tx.Rollback(rctx)
		cancel()
		return false, err
	}
	return true, tx.Commit(ctx)
}

// connectionLost reports whether err says the connection or the server
// failed (not the statement): what classify calls unavailable, races
// and resource errors apart.
func connectionLost(err error) bool {
	if errors.Is(err, errRetry) || errors.Is(err, errPartial) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P")
	}
	return errors.Is(classify(err), store.ErrUnavailable)
}

// txAsync is tx with synchronous_commit off: for writes a crash may lose
// (SetMetadata).
func (db *DB) txAsync(ctx context.Context, fn func(pgx.Tx) error) error {
	return db.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		return fn(tx)
	})
}

// retryable reports whether a transaction failed only because it raced
// with another: run again, it sees the other's work.
func retryable(err error) bool {
	if errors.Is(err, errRetry) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "40001", // serialization_failure
			"40P01", // deadlock_detected
			"23503": // foreign_key_violation: a parent deleted as empty under us
			return true
		}
	}
	return false
}

// classify wraps a failure of the server or the connection in
// store.ErrUnavailable (or ENOSPC, EIO), and a closed pool's in
// store.ErrClosed. Other errors (constraint violations, ctx's) are kept.
func classify(err error) error {
	if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInstanceExists) ||
		errors.Is(err, store.ErrUnsupportedKey) || errors.Is(err, store.ErrClosed) || errors.Is(err, ErrSchemaTooNew) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, errRetry) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	if strings.Contains(err.Error(), "closed pool") {
		return fmt.Errorf("%w: %w", store.ErrClosed, err)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "53100": // disk_full
			return fmt.Errorf("%w (%w)", err, syscall.ENOSPC)
		case pe.Code == "58030": // io_error
			return fmt.Errorf("%w (%w)", err, syscall.EIO)
		case strings.HasPrefix(pe.Code, "08"), // connection_exception
			strings.HasPrefix(pe.Code, "57P"), // admin/crash shutdown, cannot connect now
			strings.HasPrefix(pe.Code, "53"),  // insufficient resources (too many connections, out of memory)
			pe.Code == "40001", pe.Code == "40P01", pe.Code == "23503",
			pe.Code == "25006": // read_only_sql_transaction: a standby promoted or in recovery
			return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
		return err
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	if errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ENOENT) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	if strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "unexpected EOF") {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

// fail wraps a read's error for the caller: ErrClosed after Close,
// else classified.
func (db *DB) fail(what string, err error) error {
	if db.closed.Load() {
		return fmt.Errorf("postgres: %s: %w", what, errors.Join(store.ErrClosed, err))
	}
	return fmt.Errorf("postgres: %s: %w", what, classify(err))
}

// checkText refuses keys PostgreSQL text cannot hold (a NUL byte, bytes
// that are not UTF-8): UIDs and the blob key name rows, and are never
// changed.
func checkText(in *store.Instance) error {
	for _, s := range []string{in.SOPInstanceUID, in.SeriesInstanceUID, in.StudyInstanceUID, in.BlobKey, in.Checksum} {
		if !validText(s) {
			return errors.New("a UID or the blob key holds a NUL byte or bytes that are not UTF-8")
		}
	}
	return nil
}

// textOf is s as PostgreSQL text can hold it: a NUL byte and each run of
// bytes that are not UTF-8 become U+FFFD. Store.Instance strings are
// UTF-8 already (decoded from the object's character set); only a
// malformed value changes, in the index alone (the object keeps its
// bytes), and a query for the same value is changed the same way.
func textOf(s string) string {
	if validText(s) {
		return s
	}
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", "\uFFFD"), "\uFFFD")
}

// texts is in with every string but the keys (checkText) made text.
func texts(in *store.Instance) *store.Instance {
	c := *in
	for _, p := range []*string{&c.SOPClassUID, &c.TransferSyntaxUID, &c.InstanceNumber, &c.ContentDate,
		&c.ContentTime, &c.NumberOfFrames, &c.Modality, &c.SeriesNumber, &c.SeriesDescription,
		&c.SeriesDate, &c.SeriesTime, &c.BodyPartExamined, &c.PerformedProcedureStepStartDate,
		&c.StudyDate, &c.StudyTime, &c.AccessionNumber, &c.StudyID, &c.StudyDescription, &c.ReferringPhysicianName,
		&c.PatientID, &c.IssuerOfPatientID, &c.PatientName, &c.PatientBirthDate, &c.PatientSex, &c.SpecificCharacterSet,
		&c.SourceAET, &c.SourceAddr} {
		*p = textOf(*p)
	}
	if len(in.Sequences) > 0 {
		c.Sequences = make([]store.SequenceItem, len(in.Sequences))
		for i, it := range in.Sequences {
			it.Attribute = textOf(it.Attribute)
			vals := make(map[string]string, len(it.Values))
			for k, v := range it.Values {
				vals[textOf(k)] = textOf(v)
			}
			it.Values = vals
			c.Sequences[i] = it
		}
	}
	return &c
}

func validText(s string) bool {
	return strings.IndexByte(s, 0) < 0 && utf8.ValidString(s)
}

const getSQL = `
SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.instance_number,
	i.content_date, i.content_time, i.number_of_frames, i.pixel_rows, i.pixel_columns,
	se.series_instance_uid, se.modality, se.series_number, se.series_description,
	se.series_date, se.series_time, se.body_part_examined, se.performed_procedure_step_start_date,
	st.study_instance_uid, st.study_date, st.study_time, st.accession_number, st.study_id,
	st.study_description, st.referring_physician_name,
	p.patient_id, p.issuer_of_patient_id, p.patient_name, p.patient_birth_date, p.patient_sex,
	i.specific_character_set, i.charset_unsupported, i.source_aet, i.source_addr, i.received_at,
	i.blob_key, i.size, i.blob_checksum
FROM instance i
JOIN series se ON se.pk = i.series_fk
JOIN study st ON st.pk = se.study_fk
JOIN patient p ON p.pk = st.patient_fk
WHERE `

func scanInstance(row pgx.Row) (*store.Instance, error) {
	var in store.Instance
	var recv *int64
	err := row.Scan(
		&in.SOPInstanceUID, &in.SOPClassUID, &in.TransferSyntaxUID, &in.InstanceNumber,
		&in.ContentDate, &in.ContentTime, &in.NumberOfFrames, &in.Rows, &in.Columns,
		&in.SeriesInstanceUID, &in.Modality, &in.SeriesNumber, &in.SeriesDescription,
		&in.SeriesDate, &in.SeriesTime, &in.BodyPartExamined, &in.PerformedProcedureStepStartDate,
		&in.StudyInstanceUID, &in.StudyDate, &in.StudyTime, &in.AccessionNumber, &in.StudyID,
		&in.StudyDescription, &in.ReferringPhysicianName,
		&in.PatientID, &in.IssuerOfPatientID, &in.PatientName, &in.PatientBirthDate, &in.PatientSex,
		&in.SpecificCharacterSet, &in.CharsetUnsupported, &in.SourceAET, &in.SourceAddr, &recv,
		&in.BlobKey, &in.Size, &in.Checksum,
	)
	if err != nil {
		return nil, err
	}
	if recv != nil {
		in.ReceivedAt = time.Unix(0, *recv).UTC()
	}
	return &in, nil
}

// Get returns the instance with that SOP Instance UID. Its patient, study
// and series attributes are those of the newest instance Put in them.
func (db *DB) Get(ctx context.Context, uid string) (*store.Instance, error) {
	if !validText(uid) {
		return nil, fmt.Errorf("postgres: get: %w", store.ErrNotFound)
	}
	var in *store.Instance
	err := db.read(ctx, func() (err error) {
		in, err = scanInstance(db.pool.QueryRow(ctx, getSQL+`i.sop_instance_uid = $1`, uid))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: get: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, db.fail("get", err)
	}
	return in, nil
}

// InstanceByBlob implements store.BlobFinder.
func (db *DB) InstanceByBlob(ctx context.Context, key string) (*store.Instance, error) {
	if !validText(key) {
		return nil, fmt.Errorf("postgres: instance by blob: %w", store.ErrNotFound)
	}
	var in *store.Instance
	err := db.read(ctx, func() (err error) {
		in, err = scanInstance(db.pool.QueryRow(ctx, getSQL+`i.blob_key = $1`, key))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: instance by blob: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, db.fail("instance by blob", err)
	}
	return in, nil
}

// BlobKeysWithPrefix implements store.BlobKeyLister.
func (db *DB) BlobKeysWithPrefix(ctx context.Context, prefix string) ([]string, error) {
	end := store.PrefixEnd(prefix)
	if end == "" || !validText(prefix) {
		return nil, fmt.Errorf("postgres: blob keys with prefix %q: %w", prefix, store.ErrInvalidKey)
	}
	var keys []string
	err := db.read(ctx, func() error {
		keys = keys[:0]
		rows, err := db.pool.Query(ctx, `SELECT blob_key FROM instance WHERE blob_key >= $1 AND blob_key < $2 ORDER BY blob_key`, prefix, end)
		if err != nil {
			return err
		}
		keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, db.fail("blob keys with prefix", err)
	}
	return keys, nil
}

// HasBlob reports whether an instance references the blob key.
func (db *DB) HasBlob(ctx context.Context, key string) (bool, error) {
	if !validText(key) {
		return false, nil
	}
	var ok bool
	if err := db.read(ctx, func() error {
		return db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM instance WHERE blob_key = $1)`, key).Scan(&ok)
	}); err != nil {
		return false, db.fail("has blob", err)
	}
	return ok, nil
}

// CountInstances returns the number of stored instances: a count of the
// instance table's rows (by its smallest index), which takes time in
// proportion to their number.
func (db *DB) CountInstances(ctx context.Context) (int64, error) {
	var n int64
	if err := db.read(ctx, func() error { return db.pool.QueryRow(ctx, `SELECT count(*) FROM instance`).Scan(&n) }); err != nil {
		return 0, db.fail("count", err)
	}
	return n, nil
}

// Counts implements store.Counter.
func (db *DB) Counts(ctx context.Context) (store.Counts, error) {
	var c store.Counts
	err := db.read(ctx, func() error {
		return db.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM patient), (SELECT count(*) FROM study),
		(SELECT count(*) FROM series), (SELECT count(*) FROM instance)`).
			Scan(&c.Patients, &c.Studies, &c.Series, &c.Instances)
	})
	if err != nil {
		return store.Counts{}, db.fail("counts", err)
	}
	return c, nil
}

// PendingBlobDeletes returns up to limit keys of blobs to delete, oldest
// first; limit <= 0 means all.
func (db *DB) PendingBlobDeletes(ctx context.Context, limit int) ([]string, error) {
	var lim *int
	if limit > 0 {
		lim = &limit
	}
	var keys []string
	err := db.read(ctx, func() (err error) {
		rows, _ := db.pool.Query(ctx, `SELECT blob_key FROM pending_blob_deletes ORDER BY seq LIMIT $1`, lim)
		keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, db.fail("pending blob deletes", err)
	}
	return keys, nil
}

// BlobsDeleted forgets pending blob deletes.
func (db *DB) BlobsDeleted(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	valid := make([]string, 0, len(keys))
	for _, k := range keys {
		if validText(k) {
			valid = append(valid, k)
		}
	}
	err := db.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM pending_blob_deletes WHERE blob_key = ANY ($1)`, valid)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: blobs deleted: %w", err)
	}
	return nil
}

// walkBatch is how many instances WalkInstances reads per query.
const walkBatch = 1000

// WalkInstances implements store.InstanceWalker, in batches by key, each
// its own query (no transaction outlives one batch).
func (db *DB) WalkInstances(ctx context.Context, fn func(*store.Instance) error) error {
	var after int64
	for {
		var batch []store.Instance
		last := after
		err := db.read(ctx, func() (err error) {
			rows, _ := db.pool.Query(ctx, `
SELECT i.pk, i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, st.study_instance_uid,
	p.patient_id, i.blob_key, i.size, i.blob_checksum
FROM instance i
JOIN series se ON se.pk = i.series_fk
JOIN study st ON st.pk = se.study_fk
JOIN patient p ON p.pk = st.patient_fk
WHERE i.pk > $1 ORDER BY i.pk LIMIT $2`, after, walkBatch)
			batch, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Instance, error) {
				var in store.Instance
				err := r.Scan(&last, &in.SOPInstanceUID, &in.SOPClassUID, &in.TransferSyntaxUID, &in.StudyInstanceUID,
					&in.PatientID, &in.BlobKey, &in.Size, &in.Checksum)
				return in, err
			})
			return err
		})
		if err != nil {
			return db.fail("walk instances", err)
		}
		for i := range batch {
			if err := fn(&batch[i]); err != nil {
				return err
			}
		}
		if len(batch) < walkBatch {
			return nil
		}
		after = last
	}
}

// DeleteRecorded implements store.DeletionRecorder: one transaction
// deletes the instances and inserts the note.
func (db *DB) DeleteRecorded(ctx context.Context, uids []string, note []byte) (int64, error) {
	if note == nil {
		note = []byte{}
	}
	var id int64
	err := db.tx(ctx, func(tx pgx.Tx) error {
		for _, uid := range uids {
			if err := deleteInstance(ctx, tx, uid); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		return tx.QueryRow(ctx, `INSERT INTO recorded_deletion (note) VALUES ($1) RETURNING pk`, note).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: delete: %w", err)
	}
	return id, nil
}

// RecordedDeletions implements store.DeletionRecorder.
func (db *DB) RecordedDeletions(ctx context.Context) ([]store.RecordedDeletion, error) {
	var out []store.RecordedDeletion
	err := db.read(ctx, func() (err error) {
		rows, _ := db.pool.Query(ctx, `SELECT pk, note FROM recorded_deletion ORDER BY pk`)
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.RecordedDeletion, error) {
			var d store.RecordedDeletion
			err := r.Scan(&d.ID, &d.Note)
			return d, err
		})
		return err
	})
	if err != nil {
		return nil, db.fail("recorded deletions", err)
	}
	return out, nil
}

// ForgetDeletion implements store.DeletionRecorder.
func (db *DB) ForgetDeletion(ctx context.Context, id int64) error {
	err := db.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM recorded_deletion WHERE pk = $1`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: forget deletion: %w", err)
	}
	return nil
}

// HoldDeletes implements store.DeleteHolder: a row of delete_hold that
// lapses by the database's clock, the one clock every node shares.
func (db *DB) HoldDeletes(ctx context.Context, node string, ttl time.Duration) (int64, error) {
	if !validText(node) {
		return 0, errors.New("postgres: hold deletes: invalid node ID")
	}
	var id int64
	err := db.tx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `INSERT INTO delete_hold (node, expires_at)
VALUES ($1, clock_timestamp() + $2 * interval '1 microsecond') RETURNING pk`, node, ttl.Microseconds()).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: hold deletes: %w", err)
	}
	return id, nil
}

// RenewHold implements store.DeleteHolder. A hold released is
// store.ErrNotFound.
func (db *DB) RenewHold(ctx context.Context, id int64, ttl time.Duration) error {
	var n int64
	err := db.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE delete_hold SET expires_at = clock_timestamp() + $2 * interval '1 microsecond'
WHERE pk = $1`, id, ttl.Microseconds())
		n = tag.RowsAffected()
		return err
	})
	if err == nil && n == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("postgres: renew hold: %w", err)
	}
	return nil
}

// ReleaseHold implements store.DeleteHolder; releasing a hold twice is
// not an error.
func (db *DB) ReleaseHold(ctx context.Context, id int64) error {
	err := db.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM delete_hold WHERE pk = $1`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: release hold: %w", err)
	}
	return nil
}

// ReleaseNodeHolds implements store.DeleteHolder.
func (db *DB) ReleaseNodeHolds(ctx context.Context, node string) error {
	err := db.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM delete_hold WHERE node = $1`, node)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: release holds: %w", err)
	}
	return nil
}

// DeletesHeld implements store.DeleteHolder.
func (db *DB) DeletesHeld(ctx context.Context) (bool, error) {
	var held bool
	err := db.read(ctx, func() error {
		return db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM delete_hold WHERE expires_at > clock_timestamp())`).Scan(&held)
	})
	if err != nil {
		return false, db.fail("deletes held", err)
	}
	return held, nil
}

// SetMetadata implements store.MetadataKeeper: a row of
// instance_metadata, committed without waiting for the disk (a crash of
// the server may lose it, never an instance's row). The instance row is
// read FOR SHARE: a replacing Put that commits first changes its blob key
// and nothing is kept; one that comes later waits, then drops the row.
func (db *DB) SetMetadata(ctx context.Context, uid, blobKey string, b []byte) error {
	if b == nil {
		b = []byte{}
	}
	if !validText(uid) || !validText(blobKey) {
		return nil
	}
	err := db.txAsync(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `WITH i AS (
	SELECT pk FROM instance WHERE sop_instance_uid = $1 AND blob_key = $2 FOR SHARE
)
INSERT INTO instance_metadata (instance_fk, metadata) SELECT pk, $3 FROM i
ON CONFLICT (instance_fk) DO UPDATE SET metadata = excluded.metadata`, uid, blobKey, b)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: set metadata: %w", err)
	}
	return nil
}

// TryExclusive implements store.Exclusive with a session-level advisory
// lock on a connection of its own, held until release: a node that dies
// or loses its connection loses the lock with it.
func (db *DB) TryExclusive(ctx context.Context, key int64) (func(), bool, error) {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("postgres: lock: %w", classify(err))
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
		conn.Release()
		return nil, false, fmt.Errorf("postgres: lock: %w", classify(err))
	}
	if !ok {
		conn.Release()
		return nil, false, nil
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
			// The lock is the session's: a connection in doubt is closed,
			// which drops it.
			conn.Conn().Close(ctx)
		}
		conn.Release()
	}, true, nil
}
