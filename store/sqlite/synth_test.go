package sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
)

// TestBuildSynthetic checks that a synthetic index is consistent: counts
// agree with the rows, the triggers are back (a later Put keeps counting)
// and a rebuild from the same seed is identical.
func TestBuildSynthetic(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "synth.db")
	const n = 2345
	if err := BuildSynthetic(ctx, path, n, 7); err != nil {
		t.Fatal(err)
	}
	if err := BuildSynthetic(ctx, path, n, 7); err == nil {
		t.Error("building into a non-empty index succeeded")
	}
	db := openTest(t, path)
	defer db.Close()
	c, err := db.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Instances != n || c.Series < n/75 || c.Studies*3 < c.Series || c.Patients*2 < c.Studies {
		t.Errorf("counts %+v", c)
	}
	if got, _ := db.CountInstances(ctx); got != n {
		t.Errorf("CountInstances = %d, want %d", got, n)
	}
	if _, err := db.Put(ctx, storetest.Sample(1, 1, 1)); err != nil {
		t.Fatal(err)
	}
	checkCounters(t, db)
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
}
