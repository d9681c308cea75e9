package sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
)

func openTest(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestConformance(t *testing.T) {
	storetest.TestIndex(t, func(t *testing.T) store.Index {
		db := openTest(t, filepath.Join(t.TempDir(), "sub", "ward.db"))
		t.Cleanup(func() { checkCounters(t, db) })
		return db
	})
}

// checkCounters compares the trigger-maintained counts with real counts.
func checkCounters(t *testing.T, db *DB) {
	t.Helper()
	// db may be closed already: reopen read-only through a new handle.
	db2, err := Open(context.Background(), db.path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	for _, q := range []string{
		`SELECT count(*) FROM series se WHERE num_instances != (SELECT count(*) FROM instance WHERE series_fk = se.pk) OR num_instances = 0`,
		`SELECT count(*) FROM study st WHERE num_series != (SELECT count(*) FROM series WHERE study_fk = st.pk)
			OR num_instances != (SELECT count(*) FROM instance i JOIN series se ON se.pk = i.series_fk WHERE se.study_fk = st.pk) OR num_series = 0`,
		`SELECT count(*) FROM patient p WHERE num_studies != (SELECT count(*) FROM study WHERE patient_fk = p.pk)
			OR num_series != (SELECT count(*) FROM series se JOIN study st ON st.pk = se.study_fk WHERE st.patient_fk = p.pk)
			OR num_instances != (SELECT count(*) FROM instance i JOIN series se ON se.pk = i.series_fk JOIN study st ON st.pk = se.study_fk WHERE st.patient_fk = p.pk)
			OR num_studies = 0`,
	} {
		var bad int
		if err := db2.rdb.QueryRow(q).Scan(&bad); err != nil {
			t.Fatal(err)
		}
		if bad != 0 {
			t.Errorf("%d rows with wrong counts: %s", bad, q)
		}
	}
}
