package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
	"github.com/ward-pacs/ward/store/synth"
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

// TestSyntheticArrival checks that synth.LoadArrival, through Insert and in
// arrival order, gives the same archive as the bulk build of the same plan.
func TestSyntheticArrival(t *testing.T) {
	ctx := context.Background()
	const n, seed = 1234, 3
	bulkPath := filepath.Join(t.TempDir(), "bulk.db")
	if err := BuildSynthetic(ctx, bulkPath, n, seed); err != nil {
		t.Fatal(err)
	}
	bulk := openTest(t, bulkPath)
	defer bulk.Close()
	arr := openTest(t, filepath.Join(t.TempDir(), "arrival.db"))
	defer arr.Close()
	got, err := synth.LoadArrival(ctx, arr, n, seed, synth.ArrivalOptions{Senders: 4})
	if err != nil || got != n {
		t.Fatalf("LoadArrival = %d, %v", got, err)
	}
	checkCounters(t, arr)
	cb, _ := bulk.Counts(ctx)
	ca, _ := arr.Counts(ctx)
	if cb != ca {
		t.Errorf("counts: bulk %+v, arrival %+v", cb, ca)
	}
	for _, q := range []*store.Query{
		{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyDate", Kind: store.MatchRange, Lo: "20150101", Hi: "20241231"}},
			Return: []string{"StudyInstanceUID", "PatientName", "NumberOfStudyRelatedInstances"}},
		{Level: store.LevelSeries, Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchSingle, Value: synth.Root + ".1.7"}},
			Return: []string{"SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances"}},
	} {
		if b, a := matches(t, bulk, q), matches(t, arr, q); !slices.Equal(b, a) || len(b) == 0 {
			t.Errorf("%+v: bulk %v, arrival %v", q.Keys[0], b, a)
		}
	}
}

func matches(t *testing.T, db *DB, q *store.Query) []string {
	t.Helper()
	var out []string
	if err := db.Query(context.Background(), q, func(m store.Match) error {
		out = append(out, fmt.Sprint(m))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}
