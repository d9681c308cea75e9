package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"time"

	"github.com/ward-pacs/ward/store"
)

// BuildSynthetic writes a synthetic index of n instances into the database
// at path (created if missing; it should be new or empty), for benchmarks
// at scale. It is deterministic for a seed.
//
// Shape: 2 studies per patient, 3 series per study, 25 to 75 (about 50)
// instances per series; patient names "SURNAME^GIVEN" drawn from 120
// surnames with a skewed distribution so that prefix wildcards match sets;
// study dates spread over 2015-2024; modalities CT, MR, CR and US with
// their image storage SOP classes.
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

var synthSurnames = []string{
	"Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
	"Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
	"Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
	"Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
	"Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
	"Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
	"Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
	"Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino", "Greco",
	"Doe", "Doerr", "Dürer", "Dorn", "Dobson", "Dodd", "Dolan", "Donovan", "Dowling", "Doyle",
	"Kowalski", "Nowak", "Wiśniewski", "Novák", "Svoboda", "Jensen", "Nielsen", "Hansen", "Andersson", "Johansson",
	"Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Kim", "Park", "Chen", "Wang", "Li",
	"O'Brien", "Murphy", "Kelly", "Walsh", "Byrne", "Ryan", "Silva", "Santos", "Oliveira", "Costa",
}

var synthGiven = []string{
	"James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William", "Elizabeth",
	"David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Anna", "Hans", "Marie", "Pierre",
	"Giulia", "Marco", "Yuki", "Hiro", "Min", "Wei", "Lars", "Ingrid", "Jan", "Eva",
}

var synthModalities = []struct{ modality, sopClass, body string }{
	{"CT", "1.2.840.10008.5.1.4.1.1.2", "CHEST"},
	{"MR", "1.2.840.10008.5.1.4.1.1.4", "HEAD"},
	{"CR", "1.2.840.10008.5.1.4.1.1.1", "CHEST"},
	{"US", "1.2.840.10008.5.1.4.1.1.6.1", "ABDOMEN"},
}

// SyntheticRoot is the UID root of synthetic objects.
const SyntheticRoot = "1.2.826.0.1.3680043.10.1432.99"

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

	rng := rand.New(rand.NewPCG(uint64(seed), 0x5741524400000000))
	day0 := time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)
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
	done, pat, studySeq, seriesSeq := 0, 0, 0, 0
	for done < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		pat++
		// Plan the patient's studies and series first: the counts go in
		// with the rows.
		var sizes [2][3]int
		total := 0
		for s := range sizes {
			for r := range sizes[s] {
				k := 25 + rng.IntN(51)
				if k > n-done-total {
					k = n - done - total
				}
				sizes[s][r] = k
				total += k
			}
		}
		nStudies, nSeries := 0, 0
		for s := range sizes {
			if sizes[s][0] > 0 {
				nStudies++
			}
			for r := range sizes[s] {
				if sizes[s][r] > 0 {
					nSeries++
				}
			}
		}
		// Skewed surname choice: the square of a uniform favours the
		// head of the list.
		u := rng.Float64()
		surname := synthSurnames[int(u*u*float64(len(synthSurnames)))]
		name := surname + "^" + synthGiven[rng.IntN(len(synthGiven))]
		birth := day0.AddDate(-20-rng.IntN(70), 0, -rng.IntN(365)).Format("20060102")
		sex := [...]string{"M", "F"}[rng.IntN(2)]
		var ppk int64
		if err := insP.QueryRowContext(ctx, fmt.Sprintf("PID%08d", pat), name, store.NormalizePN(name), birth, sex,
			nStudies, nSeries, total, now).Scan(&ppk); err != nil {
			return err
		}
		for s := range sizes {
			if sizes[s][0] == 0 {
				continue
			}
			studySeq++
			m := synthModalities[rng.IntN(len(synthModalities))]
			date := day0.AddDate(0, 0, rng.IntN(3652)).Format("20060102")
			tm := fmt.Sprintf("%02d%02d%02d", 7+rng.IntN(12), rng.IntN(60), rng.IntN(60))
			ref := synthSurnames[rng.IntN(len(synthSurnames))] + "^" + synthGiven[rng.IntN(len(synthGiven))]
			stSeries, stInst := 0, 0
			for r := range sizes[s] {
				if sizes[s][r] > 0 {
					stSeries++
					stInst += sizes[s][r]
				}
			}
			studyUID := fmt.Sprintf("%s.1.%d", SyntheticRoot, studySeq)
			var stpk int64
			if err := insSt.QueryRowContext(ctx, ppk, studyUID, date, tm, fmt.Sprintf("ACC%09d", studySeq),
				fmt.Sprint(studySeq), m.modality+" "+m.body, ref, store.NormalizePN(ref),
				stSeries, stInst, now).Scan(&stpk); err != nil {
				return err
			}
			for r, k := range sizes[s] {
				if k == 0 {
					continue
				}
				seriesSeq++
				seriesUID := fmt.Sprintf("%s.2.%d", SyntheticRoot, seriesSeq)
				var sepk int64
				if err := insSe.QueryRowContext(ctx, stpk, seriesUID, m.modality, fmt.Sprint(r+1),
					m.modality+" series", date, tm, m.body, date, k, now).Scan(&sepk); err != nil {
					return err
				}
				for i := 1; i <= k; i++ {
					done++
					if _, err := insI.ExecContext(ctx, sepk, fmt.Sprintf("%s.3.%d", SyntheticRoot, done), m.sopClass,
						fmt.Sprint(i), date, tm, now, fmt.Sprintf("synth-%d", done), 524288+rng.IntN(1024)); err != nil {
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
