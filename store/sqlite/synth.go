package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"github.com/ward-pacs/ward/store/synth"
)

// BuildSynthetic writes a synthetic index of n instances into the database
// at path (created if missing; it should be new or empty), for benchmarks
// at scale: the plan of synth.Generate, bulk-loaded in key order. It is
// deterministic for a seed. (synth.LoadArrival loads the same plan through
// Insert, in arrival order: slower, and without key-order locality.)
//
// Speed: the rows go in through prepared INSERTs on one connection with
// synchronous=OFF, 100 000 instances per transaction, with the count
// triggers dropped during the build (the counts are known and written
// directly) and re-created at the end from their stored SQL. A crash during
// the build leaves an unusable file: delete it and build again.
func BuildSynthetic(ctx context.Context, path string, n int, seed int64) error {
	db, err := Open(ctx, path) // creates and migrates
	if err != nil {
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("sqlite: synthetic: %w", err)
	}
	sdb, err := sql.Open("sqlite", uri(abs, url.Values{"_pragma": {
		"busy_timeout(10000)", "synchronous(OFF)", "foreign_keys(0)", "cache_size(-262144)", "temp_store(MEMORY)"}}))
	if err != nil {
		return fmt.Errorf("sqlite: synthetic: %w", err)
	}
	defer sdb.Close()
	conn, err := sdb.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: synthetic: %w", err)
	}
	defer conn.Close()
	if err := buildSynthetic(ctx, conn, n, seed); err != nil {
		return fmt.Errorf("sqlite: synthetic: %w", err)
	}
	return nil
}

func buildSynthetic(ctx context.Context, conn *sql.Conn, n int, seed int64) error {
	// Drop the count triggers; keep their SQL to re-create them.
	rows, err := conn.QueryContext(ctx, `SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%_ai'`)
	if err != nil {
		return err
	}
	triggers := map[string]string{}
	for rows.Next() {
		var name, s string
		if err := rows.Scan(&name, &s); err != nil {
			rows.Close()
			return err
		}
		triggers[name] = s
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var existing int
	if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM instance`).Scan(&existing); err != nil {
		return err
	}
	if existing != 0 {
		return fmt.Errorf("the database already holds %d instances", existing)
	}
	for name := range triggers {
		if _, err := conn.ExecContext(ctx, "DROP TRIGGER "+name); err != nil {
			return err
		}
	}
	defer func() {
		for _, s := range triggers {
			conn.ExecContext(context.Background(), s)
		}
	}()

	prep := func(q string) (*sql.Stmt, error) { return conn.PrepareContext(ctx, q) }
	insP, err := prep(`INSERT INTO patient (patient_id, issuer_of_patient_id, patient_name, patient_name_norm,
		patient_birth_date, patient_sex, num_studies, num_series, num_instances, updated_at)
		VALUES (?, '', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk`)
	if err != nil {
		return err
	}
	defer insP.Close()
	insSt, err := prep(`INSERT INTO study (patient_fk, study_instance_uid, study_date, study_time, accession_number,
		study_id, study_description, referring_physician_name, referring_physician_name_norm,
		num_series, num_instances, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk`)
	if err != nil {
		return err
	}
	defer insSt.Close()
	insSe, err := prep(`INSERT INTO series (study_fk, series_instance_uid, modality, series_number, series_description,
		series_date, series_time, body_part_examined, performed_procedure_step_start_date, num_instances, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk`)
	if err != nil {
		return err
	}
	defer insSe.Close()
	insI, err := prep(`INSERT INTO instance (series_fk, sop_instance_uid, sop_class_uid, transfer_syntax_uid,
		instance_number, content_date, content_time, number_of_frames, rows, columns, specific_character_set,
		charset_unsupported, source_aet, source_addr, received_at, blob_key, size)
		VALUES (?, ?, ?, '1.2.840.10008.1.2.1', ?, ?, ?, '1', 512, 512, 'ISO_IR 192', 0, 'SYNTH', '192.0.2.1:104', ?, ?, ?)`)
	if err != nil {
		return err
	}
	defer insI.Close()

	now := time.Now().UnixNano()
	const batch = 100_000
	inTx := 0
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		return err
	}
	commit := func() error {
		if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
			return err
		}
		_, err := conn.ExecContext(ctx, "BEGIN")
		return err
	}
	err = synth.Generate(ctx, n, seed, func(p *synth.Patient) error {
		nSeries := 0
		for _, st := range p.Studies {
			nSeries += len(st.Series)
		}
		var ppk int64
		if err := insP.QueryRowContext(ctx, p.ID, p.Name, p.NameNorm, p.BirthDate, p.Sex,
			len(p.Studies), nSeries, p.Instances(), now).Scan(&ppk); err != nil {
			return err
		}
		for _, st := range p.Studies {
			var stpk int64
			if err := insSt.QueryRowContext(ctx, ppk, st.UID, st.Date, st.Time, st.Accession,
				st.ID, st.Description, st.Referring, st.ReferringNorm,
				len(st.Series), st.Instances(), now).Scan(&stpk); err != nil {
				return err
			}
			for _, se := range st.Series {
				var sepk int64
				if err := insSe.QueryRowContext(ctx, stpk, se.UID, st.Modality, se.Number,
					st.Modality+" series", st.Date, st.Time, st.BodyPart, st.Date, len(se.Sizes), now).Scan(&sepk); err != nil {
					return err
				}
				for i, size := range se.Sizes {
					seq := se.First + i
					if _, err := insI.ExecContext(ctx, sepk, synth.InstanceUID(seq), st.SOPClass,
						fmt.Sprint(i+1), st.Date, st.Time, now, synth.BlobKey(seq), size); err != nil {
						return err
					}
					inTx++
					if inTx == batch {
						inTx = 0
						if err := commit(); err != nil {
							return err
						}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return err
	}
	for name, s := range triggers {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("re-creating trigger %s: %w", name, err)
		}
		delete(triggers, name)
	}
	_, err = conn.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
	return err
}
