package postgres

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/ward-pacs/ward/store"
)

// Put inserts or replaces one instance; see store.Index. Patient, study
// and series attributes are overwritten by those of the instance (the
// newest wins); a series that names another study, or a study that names
// another patient, moves there, and parents left empty are removed.
//
// When the replaced instance had the same blob key as the new one,
// nothing is recorded for deletion and OldBlobKey is empty.
func (db *DB) Put(ctx context.Context, in *store.Instance) (store.PutResult, error) {
	if err := validInstance(in); err != nil {
		return store.PutResult{}, fmt.Errorf("postgres: put: %w", err)
	}
	in = texts(in)
	var res store.PutResult
	err := db.tx(ctx, func(tx pgx.Tx) error {
		var err error
		res, err = put(ctx, tx, in, false)
		return err
	})
	if err != nil {
		return store.PutResult{}, fmt.Errorf("postgres: put: %w", err)
	}
	return res, nil
}

// Insert implements store.Inserter: Put for a new instance only.
func (db *DB) Insert(ctx context.Context, in *store.Instance) error {
	if err := validInstance(in); err != nil {
		return fmt.Errorf("postgres: insert: %w", err)
	}
	in = texts(in)
	err := db.tx(ctx, func(tx pgx.Tx) error {
		_, err := put(ctx, tx, in, true)
		return err
	})
	if errors.Is(err, store.ErrInstanceExists) {
		return err
	}
	if err != nil {
		return fmt.Errorf("postgres: insert: %w", err)
	}
	return nil
}

// Delete removes one instance and the parents it leaves empty, recording
// its blob key for deletion. A missing instance is store.ErrNotFound.
func (db *DB) Delete(ctx context.Context, uid string) error {
	if !validText(uid) {
		return fmt.Errorf("postgres: delete: %w", store.ErrNotFound)
	}
	err := db.tx(ctx, func(tx pgx.Tx) error { return deleteInstance(ctx, tx, uid) })
	if err != nil {
		return fmt.Errorf("postgres: delete: %w", err)
	}
	return nil
}

func validInstance(in *store.Instance) error {
	if err := store.CheckInstance(in); err != nil {
		return err
	}
	for _, it := range in.Sequences {
		if it.Level < store.LevelPatient || it.Level > store.LevelSeries {
			return fmt.Errorf("sequences: %s is kept at the %s level; sequences belong to a patient, study or series", it.Attribute, it.Level)
		}
	}
	return checkText(in)
}

// levelSequences is the signature of the sequence items of each level
// (patient, study, series) of an instance: equal signatures, equal
// sequences. It is kept in the level's row (seq_sig).
func levelSequences(items []store.SequenceItem) [3]string {
	var out [3]string
	if len(items) == 0 {
		return out
	}
	sorted := make([]store.SequenceItem, len(items))
	copy(sorted, items)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].Attribute != sorted[j].Attribute {
			return sorted[i].Attribute < sorted[j].Attribute
		}
		return sorted[i].Item < sorted[j].Item
	})
	var b [3]strings.Builder
	field := func(sb *strings.Builder, s string) {
		sb.WriteString(strconv.Itoa(len(s)))
		sb.WriteByte(':')
		sb.WriteString(s)
	}
	for _, it := range sorted {
		sb := &b[it.Level]
		field(sb, it.Attribute)
		field(sb, strconv.Itoa(it.Item))
		kws := make([]string, 0, len(it.Values))
		for kw := range it.Values {
			kws = append(kws, kw)
		}
		sort.Strings(kws)
		for _, kw := range kws {
			field(sb, kw)
			field(sb, it.Values[kw])
		}
		sb.WriteByte(';')
	}
	for i := range out {
		out[i] = b[i].String()
	}
	return out
}

const (
	sqlLockInstance = `SELECT pk, blob_key, series_fk FROM instance WHERE sop_instance_uid = $1 FOR UPDATE`
	sqlFindPatient  = `SELECT pk, patient_name, patient_birth_date, patient_sex, seq_sig
FROM patient WHERE patient_id = $1 AND issuer_of_patient_id = $2`
	sqlFindStudy = `SELECT pk, patient_fk, study_date, study_time, accession_number, study_id, study_description,
	referring_physician_name, seq_sig FROM study WHERE study_instance_uid = $1`
	sqlFindSeries = `SELECT pk, study_fk, modality, series_number, series_description, series_date, series_time,
	body_part_examined, performed_procedure_step_start_date, seq_sig FROM series WHERE series_instance_uid = $1`

	// The upserts return the parent the row had before (NULL for a new
	// row): the row is locked first, so that value is the one replaced.
	sqlUpsertPatient = `INSERT INTO patient (patient_id, issuer_of_patient_id, patient_name, patient_name_norm,
	patient_birth_date, patient_sex, seq_sig) VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (patient_id, issuer_of_patient_id) DO UPDATE SET
	patient_name = excluded.patient_name, patient_name_norm = excluded.patient_name_norm,
	patient_birth_date = excluded.patient_birth_date, patient_sex = excluded.patient_sex,
	seq_sig = excluded.seq_sig, updated_at = now()
RETURNING pk`
	sqlLockStudy   = `SELECT patient_fk FROM study WHERE study_instance_uid = $1 FOR UPDATE`
	sqlUpsertStudy = `INSERT INTO study (patient_fk, study_instance_uid, study_date, study_time, accession_number,
	study_id, study_description, referring_physician_name, referring_physician_name_norm, seq_sig)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (study_instance_uid) DO UPDATE SET
	patient_fk = excluded.patient_fk, study_date = excluded.study_date, study_time = excluded.study_time,
	accession_number = excluded.accession_number, study_id = excluded.study_id,
	study_description = excluded.study_description,
	referring_physician_name = excluded.referring_physician_name,
	referring_physician_name_norm = excluded.referring_physician_name_norm,
	seq_sig = excluded.seq_sig, updated_at = now()
RETURNING pk`
	sqlLockSeries   = `SELECT study_fk FROM series WHERE series_instance_uid = $1 FOR UPDATE`
	sqlUpsertSeries = `INSERT INTO series (study_fk, series_instance_uid, modality, series_number,
	series_description, series_date, series_time, body_part_examined,
	performed_procedure_step_start_date, seq_sig)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (series_instance_uid) DO UPDATE SET
	study_fk = excluded.study_fk, modality = excluded.modality, series_number = excluded.series_number,
	series_description = excluded.series_description, series_date = excluded.series_date,
	series_time = excluded.series_time, body_part_examined = excluded.body_part_examined,
	performed_procedure_step_start_date = excluded.performed_procedure_step_start_date,
	seq_sig = excluded.seq_sig, updated_at = now()
RETURNING pk`
	sqlInsertInstance = `INSERT INTO instance (series_fk, sop_instance_uid, sop_class_uid, transfer_syntax_uid,
	instance_number, content_date, content_time, number_of_frames, pixel_rows, pixel_columns,
	specific_character_set, charset_unsupported, source_aet, source_addr, received_at, blob_key, size, blob_checksum)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
ON CONFLICT (sop_instance_uid) DO NOTHING
RETURNING pk`
	sqlUpdateInstance = `UPDATE instance SET series_fk = $1, sop_class_uid = $3, transfer_syntax_uid = $4,
	instance_number = $5, content_date = $6, content_time = $7, number_of_frames = $8, pixel_rows = $9,
	pixel_columns = $10, specific_character_set = $11, charset_unsupported = $12, source_aet = $13,
	source_addr = $14, received_at = $15, blob_key = $16, size = $17, blob_checksum = $18
WHERE sop_instance_uid = $2`
	sqlDropMetadata      = `DELETE FROM instance_metadata WHERE instance_fk = $1`
	sqlDropPendingDelete = `DELETE FROM pending_blob_deletes WHERE blob_key = $1`
	sqlAddPendingDelete  = `INSERT INTO pending_blob_deletes (blob_key) VALUES ($1) ON CONFLICT (blob_key) DO NOTHING`
	sqlDeleteSequences   = `DELETE FROM sequence_value WHERE level = $1 AND owner_fk = $2`
	sqlInsertSequence    = `INSERT INTO sequence_value (level, owner_fk, attribute, item, keyword, value)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (level, owner_fk, attribute, item, keyword) DO UPDATE SET value = excluded.value`
)

// put inserts or replaces an instance in tx; with newOnly it refuses
// (store.ErrInstanceExists) an instance that exists. The instance row, if
// any, is locked first; then the parents are read in one round trip, and
// only those whose values change are written (and locked).
func put(ctx context.Context, tx pgx.Tx, in *store.Instance, newOnly bool) (store.PutResult, error) {
	var res store.PutResult
	seqs := levelSequences(in.Sequences)

	var (
		oldPK, oldSeries int64
		oldKey           string
		found            bool
		pat              struct {
			pk                    int64
			name, birth, sex, sig string
			ok                    bool
		}
		st struct {
			pk, patient                               int64
			date, time, acc, id, desc, referring, sig string
			ok                                        bool
		}
		se struct {
			pk, study                                          int64
			modality, number, desc, date, time, body, pps, sig string
			ok                                                 bool
		}
	)
	b := &pgx.Batch{}
	b.Queue(sqlLockInstance, in.SOPInstanceUID).QueryRow(func(r pgx.Row) error {
		err := r.Scan(&oldPK, &oldKey, &oldSeries)
		found = err == nil
		return ignoreNoRows(err)
	})
	b.Queue(sqlFindPatient, in.PatientID, in.IssuerOfPatientID).QueryRow(func(r pgx.Row) error {
		err := r.Scan(&pat.pk, &pat.name, &pat.birth, &pat.sex, &pat.sig)
		pat.ok = err == nil
		return ignoreNoRows(err)
	})
	b.Queue(sqlFindStudy, in.StudyInstanceUID).QueryRow(func(r pgx.Row) error {
		err := r.Scan(&st.pk, &st.patient, &st.date, &st.time, &st.acc, &st.id, &st.desc, &st.referring, &st.sig)
		st.ok = err == nil
		return ignoreNoRows(err)
	})
	b.Queue(sqlFindSeries, in.SeriesInstanceUID).QueryRow(func(r pgx.Row) error {
		err := r.Scan(&se.pk, &se.study, &se.modality, &se.number, &se.desc, &se.date, &se.time, &se.body, &se.pps, &se.sig)
		se.ok = err == nil
		return ignoreNoRows(err)
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return res, err
	}
	if found {
		if newOnly {
			return res, store.ErrInstanceExists
		}
		res.Replaced = true
	}

	// Parents emptied by a move, removed at the end if still empty.
	var emptiedSeries, emptiedStudy, emptiedPatient int64

	patient := pat.pk
	if !pat.ok || pat.name != in.PatientName || pat.birth != in.PatientBirthDate || pat.sex != in.PatientSex ||
		pat.sig != seqs[store.LevelPatient] {
		if err := tx.QueryRow(ctx, sqlUpsertPatient, in.PatientID, in.IssuerOfPatientID, in.PatientName,
			store.NormalizePN(in.PatientName), in.PatientBirthDate, in.PatientSex, seqs[store.LevelPatient]).Scan(&patient); err != nil {
			return res, fmt.Errorf("patient: %w", err)
		}
		if err := putSequences(ctx, tx, in, store.LevelPatient, patient, !pat.ok || pat.sig != ""); err != nil {
			return res, fmt.Errorf("sequences: %w", err)
		}
	}

	study := st.pk
	if !st.ok || st.patient != patient || st.date != in.StudyDate || st.time != in.StudyTime ||
		st.acc != in.AccessionNumber || st.id != in.StudyID || st.desc != in.StudyDescription ||
		st.referring != in.ReferringPhysicianName || st.sig != seqs[store.LevelStudy] {
		var before *int64
		if err := ignoreNoRows(tx.QueryRow(ctx, sqlLockStudy, in.StudyInstanceUID).Scan(&before)); err != nil {
			return res, fmt.Errorf("study: %w", err)
		}
		if before != nil && *before != patient {
			emptiedPatient = *before
		}
		if err := tx.QueryRow(ctx, sqlUpsertStudy, patient, in.StudyInstanceUID, in.StudyDate, in.StudyTime,
			in.AccessionNumber, in.StudyID, in.StudyDescription, in.ReferringPhysicianName,
			store.NormalizePN(in.ReferringPhysicianName), seqs[store.LevelStudy]).Scan(&study); err != nil {
			return res, fmt.Errorf("study: %w", err)
		}
		if err := putSequences(ctx, tx, in, store.LevelStudy, study, !st.ok || st.sig != ""); err != nil {
			return res, fmt.Errorf("sequences: %w", err)
		}
	}

	series := se.pk
	if !se.ok || se.study != study || se.modality != in.Modality || se.number != in.SeriesNumber ||
		se.desc != in.SeriesDescription || se.date != in.SeriesDate || se.time != in.SeriesTime ||
		se.body != in.BodyPartExamined || se.pps != in.PerformedProcedureStepStartDate || se.sig != seqs[store.LevelSeries] {
		var before *int64
		if err := ignoreNoRows(tx.QueryRow(ctx, sqlLockSeries, in.SeriesInstanceUID).Scan(&before)); err != nil {
			return res, fmt.Errorf("series: %w", err)
		}
		if before != nil && *before != study {
			emptiedStudy = *before
		}
		if err := tx.QueryRow(ctx, sqlUpsertSeries, study, in.SeriesInstanceUID, in.Modality, in.SeriesNumber,
			in.SeriesDescription, in.SeriesDate, in.SeriesTime, in.BodyPartExamined,
			in.PerformedProcedureStepStartDate, seqs[store.LevelSeries]).Scan(&series); err != nil {
			return res, fmt.Errorf("series: %w", err)
		}
		if err := putSequences(ctx, tx, in, store.LevelSeries, series, !se.ok || se.sig != ""); err != nil {
			return res, fmt.Errorf("sequences: %w", err)
		}
	}
	if found && oldSeries != series {
		emptiedSeries = oldSeries
	}

	var recv *int64
	if !in.ReceivedAt.IsZero() {
		ns := in.ReceivedAt.UnixNano()
		recv = &ns
	}
	args := []any{series, in.SOPInstanceUID, in.SOPClassUID, in.TransferSyntaxUID,
		in.InstanceNumber, in.ContentDate, in.ContentTime, in.NumberOfFrames, in.Rows, in.Columns,
		in.SpecificCharacterSet, in.CharsetUnsupported, in.SourceAET, in.SourceAddr, recv,
		in.BlobKey, in.Size, in.Checksum}
	b = &pgx.Batch{}
	if found {
		b.Queue(sqlUpdateInstance, args...)
		b.Queue(sqlDropMetadata, oldPK)
	} else {
		b.Queue(sqlInsertInstance, args...).QueryRow(func(r pgx.Row) error {
			var pk int64
			err := r.Scan(&pk)
			if errors.Is(err, pgx.ErrNoRows) {
				// Another node inserted it since we looked: run again,
				// to replace it (or refuse, for Insert).
				return errRetry
			}
			return err
		})
	}
	// A key being reused must not be deleted later.
	b.Queue(sqlDropPendingDelete, in.BlobKey)
	if found && oldKey != in.BlobKey {
		res.OldBlobKey = oldKey
		b.Queue(sqlAddPendingDelete, oldKey)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return res, fmt.Errorf("instance: %w", err)
	}
	if err := dropEmpty(ctx, tx, emptiedSeries, emptiedStudy, emptiedPatient); err != nil {
		return res, err
	}
	return res, nil
}

func ignoreNoRows(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	return err
}

// putSequences replaces the sequences of the row at level (patient,
// study or series) whose key is owner with those of in: the newest
// instance wins, as for every other attribute of these levels. had says
// the row may hold some (its signature was not empty, or the row was not
// there when the transaction looked: another may have made it since).
func putSequences(ctx context.Context, tx pgx.Tx, in *store.Instance, level store.Level, owner int64, had bool) error {
	b := &pgx.Batch{}
	if had {
		b.Queue(sqlDeleteSequences, int16(level), owner)
	}
	for _, it := range in.Sequences {
		if it.Level != level {
			continue
		}
		for kw, v := range it.Values {
			b.Queue(sqlInsertSequence, int16(it.Level), owner, it.Attribute, it.Item, kw, v)
		}
	}
	if b.Len() == 0 {
		return nil
	}
	return tx.SendBatch(ctx, b).Close()
}

// deleteInstance deletes one instance in tx, records its blob for
// deletion, and removes the parents it leaves empty.
func deleteInstance(ctx context.Context, tx pgx.Tx, uid string) error {
	var key string
	var series int64
	err := tx.QueryRow(ctx, `DELETE FROM instance WHERE sop_instance_uid = $1 RETURNING blob_key, series_fk`, uid).Scan(&key, &series)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, sqlAddPendingDelete, key); err != nil {
		return err
	}
	return dropEmpty(ctx, tx, series, 0, 0)
}

// dropEmpty removes the series, study and patient rows (0: none) if they
// are empty, and then their parents left empty, children first. A row
// another transaction is filling meanwhile makes one of them fail on a
// foreign key, and run again (see retryable).
func dropEmpty(ctx context.Context, tx pgx.Tx, series, study, patient int64) error {
	if series != 0 {
		var parent int64
		err := tx.QueryRow(ctx, `DELETE FROM series WHERE pk = $1
AND NOT EXISTS (SELECT 1 FROM instance WHERE series_fk = $1) RETURNING study_fk`, series).Scan(&parent)
		if err == nil {
			if err := dropEmpty(ctx, tx, 0, parent, 0); err != nil {
				return err
			}
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
	}
	if study != 0 {
		var parent int64
		err := tx.QueryRow(ctx, `DELETE FROM study WHERE pk = $1
AND NOT EXISTS (SELECT 1 FROM series WHERE study_fk = $1) RETURNING patient_fk`, study).Scan(&parent)
		if err == nil {
			if err := dropEmpty(ctx, tx, 0, 0, parent); err != nil {
				return err
			}
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
	}
	if patient != 0 {
		_, err := tx.Exec(ctx, `DELETE FROM patient WHERE pk = $1
AND NOT EXISTS (SELECT 1 FROM study WHERE patient_fk = $1)`, patient)
		return err
	}
	return nil
}
