package postgres

import (
	"context"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
	"github.com/ward-pacs/ward/store/synth"
	"github.com/ward-pacs/ward/test/harness"
)

// TestBuildSynthetic checks that a synthetic index is whole and usable:
// the counts agree with the plan, the foreign keys and indexes are back,
// a later Put gets a key of its own, a second build into it is refused,
// and queries find what the plan holds.
func TestBuildSynthetic(t *testing.T) {
	ctx := context.Background()
	dsn := harness.StartPostgres(t).NewDatabase(t)
	const n = 2345
	if err := BuildSynthetic(ctx, dsn, n, 7); err != nil {
		t.Fatal(err)
	}
	if err := BuildSynthetic(ctx, dsn, n, 7); err == nil {
		t.Error("building into a non-empty index succeeded")
	}
	db, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := db.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var patients, studies, series int
	err = synth.Generate(ctx, n, 7, func(p *synth.Patient) error {
		patients++
		studies += len(p.Studies)
		for _, st := range p.Studies {
			series += len(st.Series)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if c != (store.Counts{Patients: int64(patients), Studies: int64(studies), Series: int64(series), Instances: n}) {
		t.Errorf("counts %+v, want %d/%d/%d/%d", c, patients, studies, series, n)
	}
	var fks, idxs int
	if err := db.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_constraint WHERE contype = 'f'),
		(SELECT count(*) FROM pg_indexes WHERE schemaname = 'public')`).Scan(&fks, &idxs); err != nil {
		t.Fatal(err)
	}
	fresh := openTest(t)
	defer fresh.Close()
	var wantFKs, wantIdxs int
	if err := fresh.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_constraint WHERE contype = 'f'),
		(SELECT count(*) FROM pg_indexes WHERE schemaname = 'public')`).Scan(&wantFKs, &wantIdxs); err != nil {
		t.Fatal(err)
	}
	if fks != wantFKs || idxs != wantIdxs {
		t.Errorf("after the build: %d foreign keys, %d indexes; a new index has %d, %d", fks, idxs, wantFKs, wantIdxs)
	}
	in := storetest.Sample(1, 1, 1)
	if _, err := db.Put(ctx, in); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.CountInstances(ctx); got != n+1 {
		t.Errorf("CountInstances after a Put = %d", got)
	}
	matches := 0
	err = db.Query(ctx, &store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "ModalitiesInStudy", Kind: store.MatchSingle, Value: "CT"}}},
		func(m store.Match) error {
			matches++
			if m["ModalitiesInStudy"] != "CT" {
				t.Errorf("ModalitiesInStudy %q", m["ModalitiesInStudy"])
			}
			return nil
		})
	if err != nil || matches == 0 {
		t.Errorf("CT studies: %d, %v", matches, err)
	}
	if _, err := db.Get(ctx, synth.InstanceUID(1)); err != nil {
		t.Errorf("the plan's first instance: %v", err)
	}
}
