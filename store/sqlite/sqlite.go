// Package sqlite is the embedded store.Index backend. It registers the
// "sqlite" Index backend; the data source name is the path of the database
// file, created (with its directory) if missing.
//
// The database runs in WAL mode with synchronous=FULL, so a Put that returned
// nil survives power loss. SQLite has a single writer: every write goes
// through one goroutine that owns the one write connection, and writes that
// arrive while a commit is in progress are committed together in the next
// transaction (group commit), each in its own savepoint so that one failing
// write does not fail the others. Every write returns only after the
// transaction holding it committed. Reads use a separate pool of read-only
// connections and never wait for the writer.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-pacs/ward/durable"
	"github.com/ward-pacs/ward/store"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

func init() {
	store.RegisterIndex("sqlite", func(ctx context.Context, dsn string) (store.Index, error) {
		return Open(ctx, dsn)
	})
}

// ErrSchemaTooNew is returned by Open for a database written by a newer Ward.
var ErrSchemaTooNew = errors.New("sqlite: database schema is newer than this binary supports")

const (
	busyTimeout = 10 * time.Second
	// defaultMaxBatch bounds the writes committed in one transaction.
	defaultMaxBatch = 256
	readConns       = 8
)

// DB is the SQLite Index. It is safe for concurrent use.
type DB struct {
	path string
	rdb  *sql.DB // read-only pool

	// Prepared query statements by SQL text (query.go).
	stmts  sync.Map
	nstmts atomic.Int32
	wdb    *sql.DB // holds the one write connection
	w      *writer

	getStmt     *sql.Stmt
	hasBlobStmt *sql.Stmt
	countStmt   *sql.Stmt
	pendingStmt *sql.Stmt

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	// syncMu serialises Sync; synced is the writer's deferred count its
	// last fsync covered.
	syncMu sync.Mutex
	synced int64
}

var (
	_ store.Index          = (*DB)(nil)
	_ store.Inserter       = (*DB)(nil)
	_ store.BlobFinder     = (*DB)(nil)
	_ store.InstanceWalker = (*DB)(nil)
	_ store.Snapshotter    = (*DB)(nil)
	_ store.DeferredSyncer = (*DB)(nil)
	_ store.Scrubber       = (*DB)(nil)
)

// Open opens (creating if needed) the database at path and brings its schema
// up to date.
func Open(ctx context.Context, path string) (*DB, error) {
	return open(ctx, path, defaultMaxBatch)
}

// uri builds the SQLite URI for the absolute path with query parameters;
// the path is percent-escaped so that '?', '#' and '%' in it are literal.
func uri(path string, query url.Values) string {
	u := url.URL{Path: filepath.ToSlash(path)}
	return "file://" + u.EscapedPath() + "?" + query.Encode()
}

func open(ctx context.Context, path string, maxBatch int) (*DB, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	if err := durable.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	if err := createPrivate(abs); err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	bt := fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds())

	// secure_delete: the bytes of a deleted row are overwritten with
	// zeros, in its page and in pages freed, so that an erased patient's
	// rows do not linger in the file (Scrub clears the write-ahead log).
	wq := url.Values{"_pragma": {bt, "journal_mode(WAL)", "synchronous(FULL)", "foreign_keys(1)", "secure_delete(1)"}}
	wdb, err := sql.Open("sqlite", uri(abs, wq))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	conn, err := wdb.Conn(ctx)
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	fail := func(err error) (*DB, error) {
		conn.Close()
		wdb.Close()
		return nil, err
	}
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fail(fmt.Errorf("sqlite: open: %w", err))
	}
	if !strings.EqualFold(mode, "wal") {
		return fail(fmt.Errorf("sqlite: open: journal_mode is %q, want wal", mode))
	}
	if err := migrate(ctx, conn); err != nil {
		return fail(err)
	}
	w, err := newWriter(conn, maxBatch)
	if err != nil {
		return fail(err)
	}

	rq := url.Values{"_pragma": {bt, "query_only(1)"}}
	rdb, err := sql.Open("sqlite", uri(abs, rq))
	if err != nil {
		w.close()
		wdb.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	rdb.SetMaxOpenConns(readConns)
	rdb.SetMaxIdleConns(readConns)
	db := &DB{path: abs, rdb: rdb, wdb: wdb, w: w}
	for _, p := range []struct {
		s **sql.Stmt
		q string
	}{
		{&db.getStmt, getSQL},
		{&db.hasBlobStmt, `SELECT EXISTS (SELECT 1 FROM instance WHERE blob_key = ?)`},
		{&db.countStmt, `SELECT coalesce(sum(num_instances), 0) FROM patient`},
		{&db.pendingStmt, `SELECT blob_key FROM pending_blob_deletes ORDER BY recorded_at, blob_key LIMIT ?`},
	} {
		if *p.s, err = rdb.PrepareContext(ctx, p.q); err != nil {
			db.Close()
			return nil, fmt.Errorf("sqlite: prepare: %w", err)
		}
	}
	return db, nil
}

// migrate brings the schema to len(migrations) in one transaction. It is
// idempotent, and refuses a database whose version is newer than this
// binary's.
func migrate(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	err := func() error {
		if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
			version    INTEGER NOT NULL,
			applied_at INTEGER NOT NULL
		)`); err != nil {
			return err
		}
		var v int
		if err := conn.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&v); err != nil {
			return err
		}
		if v > len(migrations) {
			return fmt.Errorf("%w (database version %d, supported %d)", ErrSchemaTooNew, v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := conn.ExecContext(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
			if _, err := conn.ExecContext(ctx, `INSERT INTO schema_version (version, applied_at) VALUES (?, ?)`,
				i+1, time.Now().UnixNano()); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
		return nil
	}()
	if err != nil {
		conn.ExecContext(context.Background(), "ROLLBACK")
		if errors.Is(err, ErrSchemaTooNew) {
			return err
		}
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		conn.ExecContext(context.Background(), "ROLLBACK")
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	return nil
}

// SchemaVersion returns the number of migrations this binary knows.
func SchemaVersion() int { return len(migrations) }

const getSQL = `
SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.instance_number,
	i.content_date, i.content_time, i.number_of_frames, i.rows, i.columns,
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
WHERE i.sop_instance_uid = ?`

// Get returns the instance with that SOP Instance UID. Its patient, study and
// series attributes are those of the newest instance Put in them.
func (db *DB) Get(ctx context.Context, uid string) (*store.Instance, error) {
	var in store.Instance
	var recv sql.NullInt64
	err := db.getStmt.QueryRowContext(ctx, uid).Scan(
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
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: get: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get: %w", db.closedErr(err))
	}
	if recv.Valid {
		in.ReceivedAt = time.Unix(0, recv.Int64).UTC()
	}
	return &in, nil
}

// InstanceByBlob implements store.BlobFinder.
func (db *DB) InstanceByBlob(ctx context.Context, key string) (*store.Instance, error) {
	var uid string
	err := db.rdb.QueryRowContext(ctx, `SELECT sop_instance_uid FROM instance WHERE blob_key = ?`, key).Scan(&uid)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: instance by blob: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: instance by blob: %w", db.closedErr(err))
	}
	return db.Get(ctx, uid)
}

// BlobKeysWithPrefix implements store.BlobKeyLister.
func (db *DB) BlobKeysWithPrefix(ctx context.Context, prefix string) ([]string, error) {
	end := store.PrefixEnd(prefix)
	if end == "" {
		return nil, fmt.Errorf("sqlite: blob keys with prefix %q: %w", prefix, store.ErrInvalidKey)
	}
	rows, err := db.rdb.QueryContext(ctx, `SELECT blob_key FROM instance WHERE blob_key >= ? AND blob_key < ? ORDER BY blob_key`, prefix, end)
	if err != nil {
		return nil, fmt.Errorf("sqlite: blob keys with prefix: %w", db.closedErr(err))
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("sqlite: blob keys with prefix: %w", db.closedErr(err))
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: blob keys with prefix: %w", db.closedErr(err))
	}
	return keys, nil
}

// HasBlob reports whether an instance references the blob key.
func (db *DB) HasBlob(ctx context.Context, key string) (bool, error) {
	var ok bool
	if err := db.hasBlobStmt.QueryRowContext(ctx, key).Scan(&ok); err != nil {
		return false, fmt.Errorf("sqlite: has blob: %w", db.closedErr(err))
	}
	return ok, nil
}

// Snapshot implements store.Snapshotter: VACUUM INTO path from a
// connection of its own, whose read transaction sees one committed state
// and, the database being in WAL mode, does not hold up the writer. The
// copy is synced, then opened.
func (db *DB) Snapshot(ctx context.Context, path string) (store.Index, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: snapshot: %w", err)
	}
	if _, err := os.Lstat(abs); !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("sqlite: snapshot: %s exists already", abs)
	}
	// VACUUM INTO fills an empty file: made 0600 here, the copy is never
	// readable by others, whatever the umask.
	if err := createPrivate(abs); err != nil {
		return nil, fmt.Errorf("sqlite: snapshot: %w", err)
	}
	bt := fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds())
	c, err := sql.Open("sqlite", uri(db.path, url.Values{"_pragma": {bt}}))
	if err != nil {
		return nil, fmt.Errorf("sqlite: snapshot: %w", err)
	}
	_, err = c.ExecContext(ctx, "VACUUM INTO ?", abs)
	c.Close()
	if err != nil {
		os.Remove(abs)
		return nil, fmt.Errorf("sqlite: snapshot: %w", db.closedErr(err))
	}
	if err := durable.Sync(abs); err != nil {
		os.Remove(abs)
		return nil, fmt.Errorf("sqlite: snapshot: %w", err)
	}
	snap, err := Open(ctx, abs)
	if err != nil {
		return nil, err
	}
	// The holds on deletion are this archive's nodes' (the backup's own
	// among them), not the copy's.
	if err := snap.w.do(ctx, func(w *writer) error {
		_, err := w.conn.ExecContext(ctx, `DELETE FROM delete_hold`)
		return err
	}); err != nil {
		snap.Close()
		return nil, fmt.Errorf("sqlite: snapshot: %w", err)
	}
	return snap, nil
}

// createPrivate creates the database file at path, empty and mode 0600,
// unless it exists. SQLite creates a missing database file 0644 (less the
// umask) and gives its write-ahead log and shared-memory files the mode of
// the database file: created first, all three are closed to other users.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = f.Chmod(0o600) // whatever the umask
	if err = errors.Join(err, f.Close()); err != nil {
		return err
	}
	return durable.Sync(filepath.Dir(path)) // the new entry, before any row is acknowledged
}

// walkBatch is how many instances WalkInstances reads per transaction.
const walkBatch = 512

// WalkInstances implements store.InstanceWalker, in batches by row id so
// that no read transaction outlives one batch (a long one would keep the
// WAL from being checkpointed while Ward stores).
func (db *DB) WalkInstances(ctx context.Context, fn func(*store.Instance) error) error {
	var after int64
	for {
		batch, last, err := db.walkBatch(ctx, after)
		if err != nil {
			return err
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

func (db *DB) walkBatch(ctx context.Context, after int64) ([]store.Instance, int64, error) {
	rows, err := db.rdb.QueryContext(ctx, `
SELECT i.pk, i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, st.study_instance_uid,
	p.patient_id, i.blob_key, i.size, i.blob_checksum
FROM instance i
JOIN series se ON se.pk = i.series_fk
JOIN study st ON st.pk = se.study_fk
JOIN patient p ON p.pk = st.patient_fk
WHERE i.pk > ? ORDER BY i.pk LIMIT ?`, after, walkBatch)
	if err != nil {
		return nil, 0, fmt.Errorf("sqlite: walk instances: %w", db.closedErr(err))
	}
	defer rows.Close()
	batch := make([]store.Instance, 0, walkBatch)
	last := after
	for rows.Next() {
		var in store.Instance
		if err := rows.Scan(&last, &in.SOPInstanceUID, &in.SOPClassUID, &in.TransferSyntaxUID, &in.StudyInstanceUID,
			&in.PatientID, &in.BlobKey, &in.Size, &in.Checksum); err != nil {
			return nil, 0, fmt.Errorf("sqlite: walk instances: %w", err)
		}
		batch = append(batch, in)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("sqlite: walk instances: %w", db.closedErr(err))
	}
	return batch, last, nil
}

// CountInstances returns the number of stored instances.
func (db *DB) CountInstances(ctx context.Context) (int64, error) {
	var n int64
	if err := db.countStmt.QueryRowContext(ctx).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: count: %w", db.closedErr(err))
	}
	return n, nil
}

// PendingBlobDeletes returns up to limit keys of blobs to delete, oldest
// first; limit <= 0 means all.
func (db *DB) PendingBlobDeletes(ctx context.Context, limit int) ([]string, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := db.pendingStmt.QueryContext(ctx, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: pending blob deletes: %w", db.closedErr(err))
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("sqlite: pending blob deletes: %w", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: pending blob deletes: %w", err)
	}
	return keys, nil
}

// Put inserts or replaces one instance; see store.Index. Patient, study and
// series attributes are overwritten by those of the instance (the newest
// wins); a series that names another study, or a study that names another
// patient, moves there, and parents left empty are removed.
//
// When the replaced instance had the same blob key as the new one, nothing
// is recorded for deletion and OldBlobKey is empty.
func (db *DB) Put(ctx context.Context, in *store.Instance) (store.PutResult, error) {
	return db.put(ctx, in, false)
}

// PutDeferred implements store.DeferredSyncer.
func (db *DB) PutDeferred(ctx context.Context, in *store.Instance) (store.PutResult, error) {
	return db.put(ctx, in, true)
}

func (db *DB) put(ctx context.Context, in *store.Instance, deferred bool) (store.PutResult, error) {
	switch {
	case in == nil:
		return store.PutResult{}, errors.New("sqlite: put: nil instance")
	case in.SOPInstanceUID == "":
		return store.PutResult{}, errors.New("sqlite: put: empty SOP Instance UID")
	case in.SeriesInstanceUID == "":
		return store.PutResult{}, errors.New("sqlite: put: empty Series Instance UID")
	case in.StudyInstanceUID == "":
		return store.PutResult{}, errors.New("sqlite: put: empty Study Instance UID")
	case in.BlobKey == "":
		return store.PutResult{}, errors.New("sqlite: put: empty blob key")
	}
	var res store.PutResult
	err := db.w.send(ctx, func(w *writer) error {
		var err error
		res, err = w.put(in, false)
		return err
	}, deferred)
	if err != nil {
		return store.PutResult{}, fmt.Errorf("sqlite: put: %w", err)
	}
	return res, nil
}

// Insert implements store.Inserter: Put for a new instance only.
func (db *DB) Insert(ctx context.Context, in *store.Instance) error {
	return db.insert(ctx, in, false)
}

// InsertDeferred implements store.DeferredSyncer.
func (db *DB) InsertDeferred(ctx context.Context, in *store.Instance) error {
	return db.insert(ctx, in, true)
}

// Sync implements store.DeferredSyncer: it fsyncs the WAL, which holds
// every deferred commit not yet checkpointed (a checkpoint fsyncs the
// database file before the WAL is reused).
func (db *DB) Sync(ctx context.Context) error {
	if db.closed.Load() {
		return fmt.Errorf("sqlite: sync: %w", store.ErrClosed)
	}
	db.syncMu.Lock()
	defer db.syncMu.Unlock()
	n := db.w.deferred.Load()
	if n == db.synced {
		return nil
	}
	f, err := os.Open(db.path + "-wal")
	if errors.Is(err, fs.ErrNotExist) {
		// No WAL: SQLite checkpointed it into the database, with an fsync.
		db.synced = n
		return nil
	}
	if err != nil {
		return fmt.Errorf("sqlite: sync: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sqlite: sync: %w", osError(err))
	}
	db.synced = n
	return nil
}

func (db *DB) insert(ctx context.Context, in *store.Instance, deferred bool) error {
	if err := store.CheckInstance(in); err != nil {
		return fmt.Errorf("sqlite: insert: %w", err)
	}
	err := db.w.send(ctx, func(w *writer) error {
		_, err := w.put(in, true)
		return err
	}, deferred)
	if errors.Is(err, store.ErrInstanceExists) {
		return err
	}
	if err != nil {
		return fmt.Errorf("sqlite: insert: %w", err)
	}
	return nil
}

// Delete removes one instance and the parents it leaves empty, recording its
// blob key for deletion. A missing instance is store.ErrNotFound.
func (db *DB) Delete(ctx context.Context, uid string) error {
	err := db.w.do(ctx, func(w *writer) error { return w.delete(uid) })
	if err != nil {
		return fmt.Errorf("sqlite: delete: %w", err)
	}
	return nil
}

var _ store.DeletionRecorder = (*DB)(nil)

// DeleteRecorded implements store.DeletionRecorder: one transaction,
// committed durably, deletes the instances and inserts the note.
func (db *DB) DeleteRecorded(ctx context.Context, uids []string, note []byte) (int64, error) {
	var id int64
	err := db.w.do(ctx, func(w *writer) error {
		for _, uid := range uids {
			if err := w.delete(uid); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		var err error
		id, err = w.recordDeletion(note)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: delete: %w", err)
	}
	return id, nil
}

// RecordedDeletions implements store.DeletionRecorder.
func (db *DB) RecordedDeletions(ctx context.Context) ([]store.RecordedDeletion, error) {
	rows, err := db.rdb.QueryContext(ctx, `SELECT pk, note FROM recorded_deletion ORDER BY pk`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: recorded deletions: %w", db.closedErr(err))
	}
	defer rows.Close()
	var out []store.RecordedDeletion
	for rows.Next() {
		var d store.RecordedDeletion
		if err := rows.Scan(&d.ID, &d.Note); err != nil {
			return nil, fmt.Errorf("sqlite: recorded deletions: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: recorded deletions: %w", err)
	}
	return out, nil
}

// ForgetDeletion implements store.DeletionRecorder.
func (db *DB) ForgetDeletion(ctx context.Context, id int64) error {
	err := db.w.do(ctx, func(w *writer) error { return w.forgetDeletion(id) })
	if err != nil {
		return fmt.Errorf("sqlite: forget deletion: %w", err)
	}
	return nil
}

// BlobsDeleted forgets pending blob deletes.
func (db *DB) BlobsDeleted(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	err := db.w.do(ctx, func(w *writer) error { return w.blobsDeleted(keys) })
	if err != nil {
		return fmt.Errorf("sqlite: blobs deleted: %w", err)
	}
	return nil
}

// Close waits for writes in progress, then closes the database.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.closed.Store(true)
		var errs []error
		if db.w != nil {
			errs = append(errs, db.w.close())
		}
		for _, s := range []*sql.Stmt{db.getStmt, db.hasBlobStmt, db.countStmt, db.pendingStmt} {
			if s != nil {
				s.Close()
			}
		}
		db.stmts.Range(func(_, v any) bool { v.(*sql.Stmt).Close(); return true })
		errs = append(errs, db.rdb.Close(), db.wdb.Close())
		if err := errors.Join(errs...); err != nil {
			db.closeErr = fmt.Errorf("sqlite: close: %w", err)
		}
	})
	return db.closeErr
}

// closedErr marks errors of reads racing with or following Close.
func (db *DB) closedErr(err error) error {
	if db.closed.Load() {
		return errors.Join(store.ErrClosed, err)
	}
	return err
}

var _ store.Counter = (*DB)(nil)

// Counts implements store.Counter.
func (db *DB) Counts(ctx context.Context) (store.Counts, error) {
	var c store.Counts
	// Instances from the patients' maintained counts (as CountInstances):
	// counting the instance table's rows reads an index of every instance.
	err := db.rdb.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM patient), (SELECT count(*) FROM study),
		(SELECT count(*) FROM series), (SELECT coalesce(sum(num_instances), 0) FROM patient)`).
		Scan(&c.Patients, &c.Studies, &c.Series, &c.Instances)
	if err != nil {
		return store.Counts{}, fmt.Errorf("sqlite: counts: %w", db.closedErr(err))
	}
	return c, nil
}

// Scrub implements store.Scrubber. Deleted rows are zeroed in the pages
// that held them (secure_delete, on the write connection), but earlier
// versions of those pages stay in the write-ahead log until it is
// overwritten: Scrub checkpoints the log into the database and truncates
// it to nothing, waiting (up to the busy timeout, then trying again a few
// times) for readers of older versions to finish. With rewrite, it first
// runs VACUUM (from a connection of its own, holding the write lock: a
// store waiting longer than the busy timeout, 10 s, fails meanwhile): the
// file is rebuilt from its live rows, leaving nothing that an older Ward,
// without secure_delete, freed.
func (db *DB) Scrub(ctx context.Context, rewrite bool) error {
	if db.closed.Load() {
		return store.ErrClosed
	}
	bt := fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds())
	c, err := sql.Open("sqlite", uri(db.path, url.Values{"_pragma": {bt}}))
	if err != nil {
		return fmt.Errorf("sqlite: scrub: %w", err)
	}
	defer c.Close()
	if rewrite {
		if _, err := c.ExecContext(ctx, "VACUUM"); err != nil {
			return fmt.Errorf("sqlite: scrub: vacuum: %w", db.closedErr(err))
		}
	}
	for try := 0; ; try++ {
		var busy, logFrames, done int
		err := c.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done)
		if err != nil {
			return fmt.Errorf("sqlite: scrub: %w", db.closedErr(err))
		}
		if busy == 0 {
			return nil
		}
		if try == 4 {
			return errors.New("sqlite: scrub: readers kept the write-ahead log from being truncated; it is overwritten by later writes")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
