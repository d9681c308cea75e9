package storetest

import (
	"context"
	"slices"
	"testing"

	"github.com/ward-pacs/ward/store"
)

// TestInstancesPaged checks an index that reads Querier.Instances in
// pages (sqlmatch.Paging), with setPage setting its page size: the same
// instances in the same order whatever the page size, with offsets and
// limits; and a walk that streams: an instance stored during the walk
// after the last one passed on is passed on too (a walk that read every
// row first would miss it). held, when not nil, reports whether the
// index holds a connection: none may be held while the caller handles an
// instance.
func TestInstancesPaged(t *testing.T, idx store.Index, setPage func(int), held func() bool) {
	ctx := context.Background()
	qr, ok := idx.(store.Querier)
	if !ok {
		t.Fatal("not a store.Querier")
	}
	walk := func(q store.Query, during func(n int)) []string {
		t.Helper()
		var uids []string
		err := qr.Instances(ctx, &q, func(in *store.Instance) error {
			if held != nil && held() {
				t.Error("a connection is held while the caller handles an instance")
			}
			uids = append(uids, in.SOPInstanceUID)
			if during != nil {
				during(len(uids))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return uids
	}
	// Three studies of one patient, one to three series each, instance
	// numbers out of order, repeated, empty and not a number.
	numbers := []string{"7", "3", "", "3", "12", "x", "-2", "1", "9", "30", "4"}
	n := 0
	for study := 1; study <= 3; study++ {
		for series := 1; series <= study; series++ {
			for j := range 2 + study*series {
				n++
				in := Sample(n, study, study*10+series)
				in.PatientID = "PAGED"
				in.InstanceNumber = numbers[(n+j)%len(numbers)]
				if _, err := idx.Put(ctx, in); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	q := store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "PatientID", Kind: store.MatchSingle, Value: "PAGED"}}}
	setPage(1 << 20)
	want := walk(q, nil)
	if len(want) != n {
		t.Fatalf("%d instances, want %d", len(want), n)
	}
	for _, page := range []int{1, 2, 3, 5, 8} {
		setPage(page)
		if got := walk(q, nil); !slices.Equal(got, want) {
			t.Errorf("page %d:\n got %v\nwant %v", page, got, want)
		}
		for _, c := range [][2]int{{0, 1}, {0, 4}, {3, 0}, {3, 4}, {n - 2, 5}, {n + 1, 0}, {5, n}} {
			pq := q
			pq.Offset, pq.Limit = c[0], c[1]
			w := want[min(c[0], n):]
			if c[1] > 0 {
				w = w[:min(c[1], len(w))]
			}
			if got := walk(pq, nil); !slices.Equal(got, w) {
				t.Errorf("page %d, offset %d, limit %d:\n got %v\nwant %v", page, c[0], c[1], got, w)
			}
		}
	}

	// Stored during the walk, last in the last series: passed on.
	setPage(3)
	late := Sample(1000, 3, 33)
	late.PatientID = "PAGED"
	late.InstanceNumber = "999"
	got := walk(q, func(i int) {
		if i == 1 {
			if _, err := idx.Put(ctx, late); err != nil {
				t.Fatal(err)
			}
		}
	})
	if want := append(slices.Clone(want), late.SOPInstanceUID); !slices.Equal(got, want) {
		t.Errorf("with an instance stored during the walk:\n got %v\nwant %v", got, want)
	}
}
