package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
)

// The parent cache (cache.go) must never make a Put use a patient, study
// or series row that is gone or holds other values. Each case leaves the
// cache naming rows that a rollback, a delete, a move or another connection
// then removes, and Puts into them again.
func TestParentCache(t *testing.T) {
	ctx := context.Background()
	put := func(t *testing.T, db *DB, in *store.Instance) {
		t.Helper()
		if _, err := db.Put(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	counts := func(t *testing.T, db *DB, want store.Counts) {
		t.Helper()
		got, err := db.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("counts %+v, want %+v", got, want)
		}
		checkCounters(t, db)
	}
	get := func(t *testing.T, db *DB, in *store.Instance) *store.Instance {
		t.Helper()
		got, err := db.Get(ctx, in.SOPInstanceUID)
		if err != nil {
			t.Fatal(err)
		}
		if got.SeriesInstanceUID != in.SeriesInstanceUID || got.StudyInstanceUID != in.StudyInstanceUID ||
			got.PatientID != in.PatientID || got.PatientName != in.PatientName || got.Modality != in.Modality {
			t.Errorf("Get %s: series %s study %s patient %s, want %s %s %s", in.SOPInstanceUID,
				got.SeriesInstanceUID, got.StudyInstanceUID, got.PatientID,
				in.SeriesInstanceUID, in.StudyInstanceUID, in.PatientID)
		}
		return got
	}
	open := func(t *testing.T) *DB {
		db := openTest(t, filepath.Join(t.TempDir(), "ward.db"))
		t.Cleanup(func() { db.Close() })
		return db
	}

	t.Run("hits", func(t *testing.T) {
		db := open(t)
		for i := range 5 {
			put(t, db, storetest.Sample(i, 1, 1))
		}
		if len(db.w.cache.series) != 1 || len(db.w.cache.studies) != 1 || len(db.w.cache.patients) != 1 {
			t.Errorf("cache %d/%d/%d entries, want 1/1/1", len(db.w.cache.patients), len(db.w.cache.studies), len(db.w.cache.series))
		}
		// A changed series value is written, cached or not.
		in := storetest.Sample(5, 1, 1)
		in.Modality = "MR"
		put(t, db, in)
		get(t, db, in)
		in = storetest.Sample(6, 1, 1)
		put(t, db, in)
		get(t, db, in)
		counts(t, db, store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: 7})
	})

	t.Run("rolled back savepoint", func(t *testing.T) {
		db := open(t)
		first := storetest.Sample(1, 1, 1)
		put(t, db, first)
		// New patient, study and series, then a UNIQUE violation on the
		// blob key: all three rows are rolled back.
		in := storetest.Sample(2, 2, 2)
		in.BlobKey = first.BlobKey
		if _, err := db.Put(ctx, in); err == nil {
			t.Fatal("Put with a used blob key succeeded")
		}
		in.BlobKey = storetest.NewKey()
		put(t, db, in)
		get(t, db, in)
		counts(t, db, store.Counts{Patients: 2, Studies: 2, Series: 2, Instances: 2})
	})

	t.Run("rolled back in a batch", func(t *testing.T) {
		db := open(t)
		shared := storetest.NewKey()
		put(t, db, storetest.Sample(0, 0, 0))
		var wg sync.WaitGroup
		for i := 1; i < 64; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				in := storetest.Sample(i, i%5, i%9)
				if i%3 == 0 {
					in.BlobKey = shared
				}
				db.Put(ctx, in)
			}()
		}
		wg.Wait()
		for i := 64; i < 128; i++ {
			in := storetest.Sample(i, i%5, i%9)
			put(t, db, in)
			get(t, db, in)
		}
		checkCounters(t, db)
	})

	t.Run("delete", func(t *testing.T) {
		db := open(t)
		a := storetest.Sample(1, 1, 1)
		put(t, db, a)
		if err := db.Delete(ctx, a.SOPInstanceUID); err != nil {
			t.Fatal(err)
		}
		counts(t, db, store.Counts{})
		// Another row may take the deleted patient's key.
		put(t, db, storetest.Sample(2, 2, 2))
		b := storetest.Sample(3, 1, 1)
		put(t, db, b)
		get(t, db, b)
		counts(t, db, store.Counts{Patients: 2, Studies: 2, Series: 2, Instances: 2})
	})

	t.Run("instance moves to another series", func(t *testing.T) {
		db := open(t)
		a := storetest.Sample(1, 1, 1)
		put(t, db, a)
		moved := storetest.Sample(1, 2, 2)
		put(t, db, moved) // series 1, study 1 and patient 1 are left empty
		counts(t, db, store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: 1})
		b := storetest.Sample(3, 1, 1)
		put(t, db, b)
		get(t, db, b)
		counts(t, db, store.Counts{Patients: 2, Studies: 2, Series: 2, Instances: 2})
	})

	t.Run("series moves to another study", func(t *testing.T) {
		db := open(t)
		put(t, db, storetest.Sample(1, 1, 1))
		// Series 1 moves into study 2: study 1 and patient 1, left empty,
		// are deleted.
		in := storetest.Sample(2, 2, 1)
		put(t, db, in)
		get(t, db, in)
		counts(t, db, store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: 2})
		b := storetest.Sample(3, 1, 3)
		put(t, db, b)
		get(t, db, b)
		counts(t, db, store.Counts{Patients: 2, Studies: 2, Series: 2, Instances: 3})
	})

	t.Run("study moves to another patient", func(t *testing.T) {
		db := open(t)
		a := storetest.Sample(1, 1, 1)
		put(t, db, a)
		in := storetest.Sample(2, 1, 1)
		in.PatientID = "OTHER"
		put(t, db, in) // study 1 moves to OTHER; patient PID1 goes
		get(t, db, in)
		counts(t, db, store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: 2})
		b := storetest.Sample(3, 5, 5)
		b.PatientID = a.PatientID
		b.PatientName = a.PatientName
		put(t, db, b)
		get(t, db, b)
		counts(t, db, store.Counts{Patients: 2, Studies: 2, Series: 2, Instances: 3})
	})

	t.Run("another connection", func(t *testing.T) {
		db := open(t)
		a := storetest.Sample(1, 1, 1)
		put(t, db, a)
		other, err := sql.Open("sqlite", db.path)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if _, err := other.Exec(`DELETE FROM instance`); err != nil {
			t.Fatal(err)
		}
		counts(t, db, store.Counts{})
		put(t, db, storetest.Sample(2, 2, 2))
		b := storetest.Sample(3, 1, 1)
		put(t, db, b)
		get(t, db, b)
		counts(t, db, store.Counts{Patients: 2, Studies: 2, Series: 2, Instances: 2})
	})

	t.Run("sequences", func(t *testing.T) {
		db := open(t)
		seq := func(v string) []store.SequenceItem {
			return []store.SequenceItem{{Attribute: "ProcedureCodeSequence", Level: store.LevelStudy, Values: map[string]string{"CodeValue": v}}}
		}
		in := storetest.Sample(1, 1, 1)
		in.Sequences = seq("A")
		put(t, db, in)
		in = storetest.Sample(2, 1, 1)
		in.Sequences = seq("B")
		put(t, db, in)
		in = storetest.Sample(3, 1, 1)
		in.Sequences = seq("B")
		put(t, db, in)
		var vals []string
		rows, err := db.rdb.Query(`SELECT value FROM sequence_value`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var v string
			rows.Scan(&v)
			vals = append(vals, v)
		}
		rows.Close()
		if len(vals) != 1 || vals[0] != "B" {
			t.Errorf("sequence values %q, want [B]", vals)
		}
	})

	t.Run("insert of an existing instance", func(t *testing.T) {
		db := open(t)
		a := storetest.Sample(1, 1, 1)
		put(t, db, a)
		if err := db.Insert(ctx, a); !errors.Is(err, store.ErrInstanceExists) {
			t.Fatalf("Insert of a stored instance: %v", err)
		}
		if len(db.w.cache.series) != 1 {
			t.Error("a refused Insert dropped the cache")
		}
		b := storetest.Sample(2, 1, 1)
		if err := db.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
		get(t, db, b)
		counts(t, db, store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: 2})
	})
}

func TestLevelSequences(t *testing.T) {
	a := levelSequences([]store.SequenceItem{
		{Attribute: "X", Level: store.LevelStudy, Values: map[string]string{"a": "1", "b": "2"}},
	})
	b := levelSequences([]store.SequenceItem{
		{Attribute: "X", Level: store.LevelStudy, Values: map[string]string{"a": "1:1:b", "": "2"}},
	})
	if a == b {
		t.Error("different items encode alike")
	}
	if a[store.LevelPatient] != "" || a[store.LevelSeries] != "" || a[store.LevelStudy] == "" {
		t.Errorf("levels %q", a)
	}
	c := levelSequences([]store.SequenceItem{
		{Attribute: "X", Level: store.LevelStudy, Values: map[string]string{"b": "2", "a": "1"}},
	})
	if a != c {
		t.Error("equal items encode differently")
	}
}

// Before the parent cache a Put into a known series wrote ~18 pages to the
// WAL (the upserts rewrote the parents' index entries); with it, ~9.
func TestPutPages(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ward.db")
	db := openTest(t, path)
	defer db.Close()
	if _, err := db.w.conn.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 0"); err != nil {
		t.Fatal(err)
	}
	const n = 500
	for i := 1; i <= n; i++ {
		if err := db.Insert(ctx, storetest.Sample(i, i/250, i/100)); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	const frame = 24 + 4096 // WAL frame header + page
	if perPut := float64(fi.Size()-32) / frame / n; perPut > 11 {
		t.Errorf("%.1f WAL frames per Put, want at most 11", perPut)
	} else {
		t.Logf("%.1f WAL frames per Put", perPut)
	}
}
