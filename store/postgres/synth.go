package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/ward-pacs/ward/store/synth"
)

// BuildSynthetic writes a synthetic index of n instances into the
// (empty) database dsn names, for benchmarks at scale: the plan of
// synth.Generate, bulk-loaded in key order, deterministic for a seed. The
// same plan through the ordinary write path is synth.LoadArrival.
//
// Speed: the four tables are filled at once by COPY, each on a
// connection of its own, with their foreign keys and secondary indexes
// dropped (unique and primary keys stay); then the indexes and foreign
// keys are made again from their definitions, the identity sequences set
// past the keys used, and the tables analysed. An interrupted build
// leaves an unusable database: drop it and build again.
func BuildSynthetic(ctx context.Context, dsn string, n int, seed int64) error {
	db, err := Open(ctx, dsn) // creates and migrates
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.buildSynthetic(ctx, n, seed); err != nil {
		return fmt.Errorf("postgres: synthetic: %w", classify(err))
	}
	return nil
}

var synthTables = []string{"patient", "study", "series", "instance"}

func (db *DB) buildSynthetic(ctx context.Context, n int, seed int64) error {
	var existing int64
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM instance`).Scan(&existing); err != nil {
		return err
	}
	if existing != 0 {
		return fmt.Errorf("the database already holds %d instances", existing)
	}
	// What is dropped for the load, to make again after it.
	type def struct{ table, name, sql string }
	rows, _ := db.pool.Query(ctx, `
SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
FROM pg_constraint c WHERE c.contype = 'f' AND c.conrelid = ANY ($1::regclass[])`, synthTables)
	fks, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (def, error) {
		var d def
		err := r.Scan(&d.table, &d.name, &d.sql)
		return d, err
	})
	if err != nil {
		return err
	}
	rows, _ = db.pool.Query(ctx, `
SELECT i.indrelid::regclass::text, c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = ANY ($1::regclass[]) AND NOT i.indisunique AND NOT i.indisprimary`, synthTables)
	idxs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (def, error) {
		var d def
		err := r.Scan(&d.table, &d.name, &d.sql)
		return d, err
	})
	if err != nil {
		return err
	}
	for _, d := range fks {
		if _, err := db.pool.Exec(ctx, `ALTER TABLE `+pgx.Identifier{d.table}.Sanitize()+` DROP CONSTRAINT `+pgx.Identifier{d.name}.Sanitize()); err != nil {
			return err
		}
	}
	for _, d := range idxs {
		if _, err := db.pool.Exec(ctx, `DROP INDEX `+pgx.Identifier{d.name}.Sanitize()); err != nil {
			return err
		}
	}

	// One generator, four COPY streams.
	const chunk = 2048
	chans := make([]chan [][]any, len(synthTables))
	for i := range chans {
		chans[i] = make(chan [][]any, 8)
	}
	g, gctx := errgroup.WithContext(ctx)
	cols := [][]string{
		{"pk", "patient_id", "issuer_of_patient_id", "patient_name", "patient_name_norm", "patient_birth_date", "patient_sex"},
		{"pk", "patient_fk", "study_instance_uid", "study_date", "study_time", "accession_number", "study_id",
			"study_description", "referring_physician_name", "referring_physician_name_norm"},
		{"pk", "study_fk", "series_instance_uid", "modality", "series_number", "series_description", "series_date",
			"series_time", "body_part_examined", "performed_procedure_step_start_date"},
		{"pk", "series_fk", "sop_instance_uid", "sop_class_uid", "transfer_syntax_uid", "instance_number", "content_date",
			"content_time", "number_of_frames", "pixel_rows", "pixel_columns", "specific_character_set", "charset_unsupported",
			"source_aet", "source_addr", "received_at", "blob_key", "size", "blob_checksum"},
	}
	for i, table := range synthTables {
		g.Go(func() error {
			conn, err := db.pool.Acquire(gctx)
			if err != nil {
				return err
			}
			defer conn.Release()
			if _, err := conn.Exec(gctx, `SET synchronous_commit = off`); err != nil {
				return err
			}
			var cur [][]any
			_, err = conn.CopyFrom(gctx, pgx.Identifier{table}, cols[i], pgx.CopyFromFunc(func() ([]any, error) {
				for len(cur) == 0 {
					select {
					case c, ok := <-chans[i]:
						if !ok {
							return nil, nil
						}
						cur = c
					case <-gctx.Done():
						return nil, gctx.Err()
					}
				}
				row := cur[0]
				cur = cur[1:]
				return row, nil
			}))
			if err != nil {
				// Unblock the generator.
				go func() {
					for range chans[i] {
					}
				}()
			}
			return err
		})
	}
	g.Go(func() error {
		defer func() {
			for _, c := range chans {
				close(c)
			}
		}()
		bufs := make([][][]any, len(chans))
		send := func(t int, row []any) error {
			bufs[t] = append(bufs[t], row)
			if len(bufs[t]) < chunk {
				return nil
			}
			select {
			case chans[t] <- bufs[t]:
			case <-gctx.Done():
				return gctx.Err()
			}
			bufs[t] = make([][]any, 0, chunk)
			return nil
		}
		at := time.Now().UnixNano()
		var ppk, stpk, sepk int64
		err := synth.Generate(gctx, n, seed, func(p *synth.Patient) error {
			ppk++
			if err := send(0, []any{ppk, p.ID, "", p.Name, p.NameNorm, p.BirthDate, p.Sex}); err != nil {
				return err
			}
			for _, st := range p.Studies {
				stpk++
				if err := send(1, []any{stpk, ppk, st.UID, st.Date, st.Time, st.Accession, st.ID, st.Description,
					st.Referring, st.ReferringNorm}); err != nil {
					return err
				}
				for _, se := range st.Series {
					sepk++
					if err := send(2, []any{sepk, stpk, se.UID, st.Modality, se.Number, st.Modality + " series",
						st.Date, st.Time, st.BodyPart, st.Date}); err != nil {
						return err
					}
					for i, size := range se.Sizes {
						seq := se.First + i
						if err := send(3, []any{int64(seq), sepk, synth.InstanceUID(seq), st.SOPClass,
							"1.2.840.10008.1.2.1", fmt.Sprint(i + 1), st.Date, st.Time, "1", int32(512), int32(512),
							"ISO_IR 192", false, "SYNTH", "192.0.2.1:104", at, synth.BlobKey(seq), size, ""}); err != nil {
							return err
						}
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for t, b := range bufs {
			if len(b) == 0 {
				continue
			}
			select {
			case chans[t] <- b:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}

	// The indexes (each its own statement, which PostgreSQL may build
	// with parallel workers), then the foreign keys, validated.
	for _, d := range idxs {
		if _, err := db.pool.Exec(ctx, d.sql); err != nil {
			return fmt.Errorf("re-creating index %s: %w", d.name, err)
		}
	}
	for _, d := range fks {
		if _, err := db.pool.Exec(ctx, `ALTER TABLE `+pgx.Identifier{d.table}.Sanitize()+` ADD CONSTRAINT `+
			pgx.Identifier{d.name}.Sanitize()+` `+d.sql); err != nil {
			return fmt.Errorf("re-creating foreign key %s: %w", d.name, err)
		}
	}
	for _, t := range synthTables {
		if _, err := db.pool.Exec(ctx, `SELECT setval(pg_get_serial_sequence($1, 'pk'), coalesce((SELECT max(pk) FROM `+
			pgx.Identifier{t}.Sanitize()+`), 0) + 1, false)`, t); err != nil {
			return err
		}
	}
	_, err = db.pool.Exec(ctx, `ANALYZE`)
	return err
}
