package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ward-pacs/ward/store"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// writer owns the single write connection. One goroutine (loop) takes write
// requests and commits them in batches: it receives one request, then every
// request already waiting (up to maxBatch), and runs them in one transaction,
// each inside a savepoint. A request's done channel receives its result only
// after COMMIT returned, so a nil result means the write is durable.
//
// Statements run with context.Background: cancelling one caller's context
// must not interrupt a transaction shared with others. A request whose
// context is already done when the writer reaches it is skipped.
//
// A deferred request (store.DeferredSyncer) is answered once COMMIT
// returned without waiting for the disk: a batch of deferred requests only
// commits with synchronous=NORMAL (no fsync of the WAL); any other batch
// commits with synchronous=FULL, which makes every earlier commit durable
// too, since the WAL is written in order.
type writer struct {
	conn     *sql.Conn
	maxBatch int
	reqs     chan *request // unbuffered: a send succeeds only if loop takes it
	quit     chan struct{}
	quitOnce sync.Once
	wg       sync.WaitGroup

	stmts map[string]*sql.Stmt

	// cache holds the parent rows last written (cache.go); touched says
	// whether it changed since the current savepoint or transaction began.
	cache       parentCache
	touched     bool
	dataVersion int64

	// normal: the connection is at synchronous=NORMAL; deferred counts
	// the batches committed so.
	normal   bool
	deferred atomic.Int64
}

type request struct {
	ctx      context.Context
	fn       func(*writer) error
	deferred bool
	done     chan error
}

var reqPool = sync.Pool{New: func() any { return &request{done: make(chan error, 1)} }}

const (
	sqlFindInstance  = `SELECT blob_key, series_fk FROM instance WHERE sop_instance_uid = ?`
	sqlFindStudy     = `SELECT patient_fk FROM study WHERE study_instance_uid = ?`
	sqlFindSeries    = `SELECT study_fk FROM series WHERE series_instance_uid = ?`
	sqlDataVersion   = `PRAGMA data_version`
	sqlUpsertPatient = `INSERT INTO patient (patient_id, issuer_of_patient_id, patient_name, patient_name_norm,
	patient_birth_date, patient_sex, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (patient_id, issuer_of_patient_id) DO UPDATE SET
	patient_name = excluded.patient_name, patient_name_norm = excluded.patient_name_norm,
	patient_birth_date = excluded.patient_birth_date, patient_sex = excluded.patient_sex,
	updated_at = excluded.updated_at
RETURNING pk`
	sqlUpsertStudy = `INSERT INTO study (patient_fk, study_instance_uid, study_date, study_time, accession_number,
	study_id, study_description, referring_physician_name, referring_physician_name_norm, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (study_instance_uid) DO UPDATE SET
	patient_fk = excluded.patient_fk, study_date = excluded.study_date, study_time = excluded.study_time,
	accession_number = excluded.accession_number, study_id = excluded.study_id,
	study_description = excluded.study_description,
	referring_physician_name = excluded.referring_physician_name,
	referring_physician_name_norm = excluded.referring_physician_name_norm,
	updated_at = excluded.updated_at
RETURNING pk`
	sqlUpsertSeries = `INSERT INTO series (study_fk, series_instance_uid, modality, series_number,
	series_description, series_date, series_time, body_part_examined,
	performed_procedure_step_start_date, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (series_instance_uid) DO UPDATE SET
	study_fk = excluded.study_fk, modality = excluded.modality, series_number = excluded.series_number,
	series_description = excluded.series_description, series_date = excluded.series_date,
	series_time = excluded.series_time, body_part_examined = excluded.body_part_examined,
	performed_procedure_step_start_date = excluded.performed_procedure_step_start_date,
	updated_at = excluded.updated_at
RETURNING pk`
	sqlUpsertInstance = `INSERT INTO instance (series_fk, sop_instance_uid, sop_class_uid, transfer_syntax_uid,
	instance_number, content_date, content_time, number_of_frames, rows, columns,
	specific_character_set, charset_unsupported, source_aet, source_addr, received_at, blob_key, size, blob_checksum)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (sop_instance_uid) DO UPDATE SET
	series_fk = excluded.series_fk, sop_class_uid = excluded.sop_class_uid,
	transfer_syntax_uid = excluded.transfer_syntax_uid, instance_number = excluded.instance_number,
	content_date = excluded.content_date, content_time = excluded.content_time,
	number_of_frames = excluded.number_of_frames, rows = excluded.rows, columns = excluded.columns,
	specific_character_set = excluded.specific_character_set,
	charset_unsupported = excluded.charset_unsupported, source_aet = excluded.source_aet,
	source_addr = excluded.source_addr, received_at = excluded.received_at,
	blob_key = excluded.blob_key, size = excluded.size, blob_checksum = excluded.blob_checksum`
	sqlDeleteSequences = `DELETE FROM sequence_value WHERE level = ? AND owner_fk = ?`
	sqlInsertSequence  = `INSERT OR REPLACE INTO sequence_value (level, owner_fk, attribute, item, keyword, value)
VALUES (?, ?, ?, ?, ?, ?)`
	sqlAddPendingDelete  = `INSERT OR IGNORE INTO pending_blob_deletes (blob_key, recorded_at) VALUES (?, ?)`
	sqlDropPendingDelete = `DELETE FROM pending_blob_deletes WHERE blob_key = ?`
	sqlDeleteInstance    = `DELETE FROM instance WHERE sop_instance_uid = ? RETURNING blob_key`
)

func newWriter(conn *sql.Conn, maxBatch int) (*writer, error) {
	if maxBatch < 1 {
		maxBatch = 1
	}
	w := &writer{
		conn:     conn,
		maxBatch: maxBatch,
		reqs:     make(chan *request),
		quit:     make(chan struct{}),
		stmts:    map[string]*sql.Stmt{},
	}
	ctx := context.Background()
	for _, q := range []string{
		"BEGIN IMMEDIATE", "COMMIT", "ROLLBACK", "SAVEPOINT w", "RELEASE w", "ROLLBACK TO w",
		sqlFindInstance, sqlFindStudy, sqlFindSeries, sqlDataVersion, sqlUpsertPatient, sqlUpsertStudy, sqlUpsertSeries, sqlUpsertInstance,
		sqlAddPendingDelete, sqlDropPendingDelete, sqlDeleteInstance, sqlDeleteSequences, sqlInsertSequence,
	} {
		s, err := conn.PrepareContext(ctx, q)
		if err != nil {
			w.closeStmts()
			return nil, fmt.Errorf("sqlite: prepare: %w", err)
		}
		w.stmts[q] = s
	}
	if v, err := w.queryInt(sqlDataVersion); err == nil {
		w.dataVersion = v
	}
	w.wg.Add(1)
	go w.loop()
	return w, nil
}

func (w *writer) closeStmts() {
	for _, s := range w.stmts {
		s.Close()
	}
}

// do runs fn in the writer and waits until its transaction committed
// durably.
func (w *writer) do(ctx context.Context, fn func(*writer) error) error {
	return w.send(ctx, fn, false)
}

// send runs fn in the writer and waits until its transaction committed:
// durably, or, if deferred, perhaps not yet.
func (w *writer) send(ctx context.Context, fn func(*writer) error, deferred bool) error {
	r := reqPool.Get().(*request)
	r.ctx, r.fn, r.deferred = ctx, fn, deferred
	select {
	case w.reqs <- r:
	case <-ctx.Done():
		r.ctx, r.fn = nil, nil
		reqPool.Put(r)
		return ctx.Err()
	case <-w.quit:
		r.ctx, r.fn = nil, nil
		reqPool.Put(r)
		return store.ErrClosed
	}
	// Once taken, the request is always answered; wait for it whatever ctx
	// does, so that an error always means "not committed".
	err := <-r.done
	r.ctx, r.fn = nil, nil
	reqPool.Put(r)
	return osError(err)
}

// osError makes SQLite's "disk full" and "I/O error" results match
// syscall.ENOSPC and syscall.EIO with errors.Is, so that callers map them
// to an out-of-resources status without knowing the backend.
func osError(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("%w (%w)", err, syscall.ENOSPC)
	case sqlite3.SQLITE_IOERR:
		return fmt.Errorf("%w (%w)", err, syscall.EIO)
	}
	return err
}

func (w *writer) close() error {
	w.quitOnce.Do(func() { close(w.quit) })
	w.wg.Wait()
	w.closeStmts()
	return w.conn.Close()
}

func (w *writer) loop() {
	defer w.wg.Done()
	batch := make([]*request, 0, w.maxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-w.reqs:
			batch = append(batch, r)
		case <-w.quit:
			return
		}
	fill:
		for len(batch) < w.maxBatch {
			select {
			case r := <-w.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		w.run(batch)
	}
}

func (w *writer) exec(q string, args ...any) error {
	_, err := w.stmts[q].ExecContext(context.Background(), args...)
	return err
}

// run commits a batch and answers every request in it.
func (w *writer) run(batch []*request) {
	errs := make([]error, len(batch))
	deferred := true
	for _, r := range batch {
		deferred = deferred && r.deferred
	}
	if err := w.setNormal(deferred); err != nil {
		for _, r := range batch {
			r.done <- err
		}
		return
	}
	if len(batch) == 1 {
		errs[0] = w.runOne(batch[0])
	} else if lost := w.runBatch(batch, errs); lost >= 0 {
		// SQLite rolled the whole transaction back (disk full, I/O error):
		// the writes before lost are undone, those after it did not run.
		// Run each of them in its own transaction.
		for i, r := range batch {
			if i != lost && (i > lost || errs[i] == nil) {
				errs[i] = w.runOne(r)
			}
		}
	}
	if deferred && slices.Contains(errs, nil) {
		// Counted once committed: a Sync that reads the count afterwards
		// covers this batch.
		w.deferred.Add(1)
	}
	for i, r := range batch {
		r.done <- errs[i]
	}
}

// setNormal sets synchronous=NORMAL (deferred batches) or FULL.
func (w *writer) setNormal(normal bool) error {
	if w.normal == normal {
		return nil
	}
	q := "PRAGMA synchronous = FULL"
	if normal {
		q = "PRAGMA synchronous = NORMAL"
	}
	if _, err := w.conn.ExecContext(context.Background(), q); err != nil {
		return fmt.Errorf("sqlite: %s: %w", q, err)
	}
	w.normal = normal
	return nil
}

func (w *writer) runOne(r *request) error {
	if err := r.ctx.Err(); err != nil {
		return err
	}
	if err := w.begin(); err != nil {
		return err
	}
	if err := r.fn(w); err != nil {
		// Keep the cache if fn left it alone (an Insert of a stored
		// instance, say): it still describes the rows rolled back to.
		w.exec("ROLLBACK")
		if w.touched {
			w.cache.clear()
		}
		return err
	}
	if err := w.exec("COMMIT"); err != nil {
		w.rollback()
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// begin starts a write transaction, dropping the parent cache if another
// connection committed since this one last looked.
func (w *writer) begin() error {
	if err := w.exec("BEGIN IMMEDIATE"); err != nil {
		return err
	}
	w.touched = false
	if w.cache.empty() {
		return nil
	}
	v, err := w.queryInt(sqlDataVersion)
	if err != nil || v != w.dataVersion {
		w.cache.clear()
		w.dataVersion = v
	}
	return nil
}

// rollback rolls the transaction back and drops the parent cache, which
// may name rows written in it.
func (w *writer) rollback() {
	w.exec("ROLLBACK")
	w.cache.clear()
}

// rollbackTo rolls back to the savepoint of the current request, dropping
// the parent cache if that request changed it.
func (w *writer) rollbackTo() error {
	if w.touched {
		w.cache.clear()
	}
	return w.exec("ROLLBACK TO w")
}

// runBatch runs the batch in one transaction, each request in a savepoint,
// setting errs. It returns the index of the request during which the
// transaction was lost, or -1.
func (w *writer) runBatch(batch []*request, errs []error) int {
	if err := w.begin(); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return -1
	}
	ok := 0
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		if err := w.exec("SAVEPOINT w"); err != nil {
			errs[i] = err
			w.rollback()
			return i
		}
		w.touched = false
		if err := r.fn(w); err != nil {
			errs[i] = err
			if rerr := w.rollbackTo(); rerr != nil {
				w.rollback()
				return i
			}
		} else {
			ok++
		}
		if err := w.exec("RELEASE w"); err != nil {
			w.rollback()
			if errs[i] == nil {
				errs[i] = err
			}
			return i
		}
	}
	if ok == 0 {
		w.rollback()
		return -1
	}
	if err := w.exec("COMMIT"); err != nil {
		w.rollback()
		for i := range errs {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("commit: %w", err)
			}
		}
	}
	return -1
}

func (w *writer) queryInt(q string, args ...any) (int64, error) {
	var v int64
	err := w.stmts[q].QueryRowContext(context.Background(), args...).Scan(&v)
	return v, err
}

// put inserts or replaces an instance; with newOnly it refuses (changing
// nothing) an instance that exists.
func (w *writer) put(in *store.Instance, newOnly bool) (store.PutResult, error) {
	var res store.PutResult
	now := time.Now().UnixNano()
	for _, it := range in.Sequences {
		if it.Level < store.LevelPatient || it.Level > store.LevelSeries {
			return res, fmt.Errorf("sequences: %s is kept at the %s level; sequences belong to a patient, study or series", it.Attribute, it.Level)
		}
	}

	var oldKey string
	var oldSeries int64
	err := w.stmts[sqlFindInstance].QueryRowContext(context.Background(), in.SOPInstanceUID).Scan(&oldKey, &oldSeries)
	switch {
	case err == nil:
		if newOnly {
			return res, store.ErrInstanceExists
		}
		res.Replaced = true
	case errors.Is(err, sql.ErrNoRows):
	default:
		return res, err
	}

	seqs := levelSequences(in.Sequences)
	// moved: a row changed parent, so triggers may have deleted the parent
	// it left; the cache is dropped once this Put's rows are written.
	moved := false

	pkey := patientKey{in.PatientID, in.IssuerOfPatientID}
	pv := patientVals{in.PatientName, in.PatientBirthDate, in.PatientSex, seqs[store.LevelPatient]}
	patient, hit := w.cache.patient(pkey, pv)
	if !hit {
		w.touched = true
		patient, err = w.queryInt(sqlUpsertPatient, in.PatientID, in.IssuerOfPatientID, in.PatientName,
			store.NormalizePN(in.PatientName), in.PatientBirthDate, in.PatientSex, now)
		if err != nil {
			return res, fmt.Errorf("patient: %w", err)
		}
		if err := w.putSequences(in, store.LevelPatient, patient); err != nil {
			return res, fmt.Errorf("sequences: %w", err)
		}
	}

	stv := studyVals{patient, in.StudyDate, in.StudyTime, in.AccessionNumber, in.StudyID,
		in.StudyDescription, in.ReferringPhysicianName, seqs[store.LevelStudy]}
	study, hit := w.cache.study(in.StudyInstanceUID, stv)
	if !hit {
		w.touched = true
		if old, err := w.queryInt(sqlFindStudy, in.StudyInstanceUID); err == nil && old != patient {
			moved = true
		} else if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return res, fmt.Errorf("study: %w", err)
		}
		study, err = w.queryInt(sqlUpsertStudy, patient, in.StudyInstanceUID, in.StudyDate, in.StudyTime,
			in.AccessionNumber, in.StudyID, in.StudyDescription, in.ReferringPhysicianName,
			store.NormalizePN(in.ReferringPhysicianName), now)
		if err != nil {
			return res, fmt.Errorf("study: %w", err)
		}
		if err := w.putSequences(in, store.LevelStudy, study); err != nil {
			return res, fmt.Errorf("sequences: %w", err)
		}
	}

	sev := seriesVals{study, in.Modality, in.SeriesNumber, in.SeriesDescription, in.SeriesDate,
		in.SeriesTime, in.BodyPartExamined, in.PerformedProcedureStepStartDate, seqs[store.LevelSeries]}
	series, hit := w.cache.seriesPK(in.SeriesInstanceUID, sev)
	if !hit {
		w.touched = true
		if old, err := w.queryInt(sqlFindSeries, in.SeriesInstanceUID); err == nil && old != study {
			moved = true
		} else if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return res, fmt.Errorf("series: %w", err)
		}
		series, err = w.queryInt(sqlUpsertSeries, study, in.SeriesInstanceUID, in.Modality, in.SeriesNumber,
			in.SeriesDescription, in.SeriesDate, in.SeriesTime, in.BodyPartExamined,
			in.PerformedProcedureStepStartDate, now)
		if err != nil {
			return res, fmt.Errorf("series: %w", err)
		}
		if err := w.putSequences(in, store.LevelSeries, series); err != nil {
			return res, fmt.Errorf("sequences: %w", err)
		}
	}
	if res.Replaced && oldSeries != series {
		moved = true
	}

	var recv sql.NullInt64
	if !in.ReceivedAt.IsZero() {
		recv = sql.NullInt64{Int64: in.ReceivedAt.UnixNano(), Valid: true}
	}
	if err := w.exec(sqlUpsertInstance, series, in.SOPInstanceUID, in.SOPClassUID, in.TransferSyntaxUID,
		in.InstanceNumber, in.ContentDate, in.ContentTime, in.NumberOfFrames, in.Rows, in.Columns,
		in.SpecificCharacterSet, in.CharsetUnsupported, in.SourceAET, in.SourceAddr, recv,
		in.BlobKey, in.Size, in.Checksum); err != nil {
		return res, fmt.Errorf("instance: %w", err)
	}
	// A key being reused must not be deleted later.
	if err := w.exec(sqlDropPendingDelete, in.BlobKey); err != nil {
		return res, err
	}
	if res.Replaced && oldKey != in.BlobKey {
		res.OldBlobKey = oldKey
		if err := w.exec(sqlAddPendingDelete, oldKey, now); err != nil {
			return res, err
		}
	}
	// The rows of all three levels now hold these values.
	w.touched = true
	if moved {
		w.cache.clear()
	}
	w.cache.setPatient(pkey, patient, pv)
	w.cache.setStudy(in.StudyInstanceUID, study, stv)
	w.cache.setSeries(in.SeriesInstanceUID, series, sev)
	return res, nil
}

// putSequences replaces the sequences of the row at level (patient, study
// or series) whose key is owner with those of in: the newest instance
// wins, as for every other attribute of these levels.
func (w *writer) putSequences(in *store.Instance, level store.Level, owner int64) error {
	if err := w.exec(sqlDeleteSequences, int(level), owner); err != nil {
		return err
	}
	for _, it := range in.Sequences {
		if it.Level != level {
			continue
		}
		for kw, v := range it.Values {
			if err := w.exec(sqlInsertSequence, int(it.Level), owner, it.Attribute, it.Item, kw, v); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *writer) delete(uid string) error {
	// Triggers delete the parents the instance leaves empty.
	w.touched = true
	w.cache.clear()
	var key string
	err := w.stmts[sqlDeleteInstance].QueryRowContext(context.Background(), uid).Scan(&key)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	return w.exec(sqlAddPendingDelete, key, time.Now().UnixNano())
}

func (w *writer) blobsDeleted(keys []string) error {
	for _, k := range keys {
		if err := w.exec(sqlDropPendingDelete, k); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) recordDeletion(note []byte) (int64, error) {
	var id int64
	err := w.conn.QueryRowContext(context.Background(),
		`INSERT INTO recorded_deletion (note, recorded_at) VALUES (?, ?) RETURNING pk`, note, time.Now().UnixNano()).Scan(&id)
	return id, err
}

func (w *writer) forgetDeletion(id int64) error {
	_, err := w.conn.ExecContext(context.Background(), `DELETE FROM recorded_deletion WHERE pk = ?`, id)
	return err
}
