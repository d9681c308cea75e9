package sqlmatch

import (
	"fmt"
	"slices"
	"testing"

	"github.com/ward-pacs/ward/store"
)

// TestPaging: against rows in memory (series of 0 to 4 instances, some
// deleted after the series were listed), every page size, offset and
// limit gives the instances of one read, in order, each page reading
// only series from the list and at most its size; metadata is read in
// batches and dropped once passed on.
func TestPaging(t *testing.T) {
	var all []Row
	var series []int64
	for st := int64(1); st <= 3; st++ {
		for se := st * 10; se < st*10+3; se++ {
			series = append(series, st, se)
			for i := int64(0); i < (st+se)%5; i++ {
				all = append(all, Row{Instance: store.Instance{SOPInstanceUID: fmt.Sprintf("%d.%d.%d", st, se, i)}, Pos: Position{st, se, i % 2, 100*se + i}})
			}
		}
	}
	slices.SortFunc(all, func(a, b Row) int { return slices.Compare(a.Pos[:], b.Pos[:]) })
	uids := func(rows []Row) []string {
		var out []string
		for _, r := range rows {
			out = append(out, r.Instance.SOPInstanceUID)
		}
		return out
	}
	want := uids(all)
	for _, size := range []int{1, 2, 3, 7, 100} {
		for _, c := range [][2]int{{0, 0}, {0, 1}, {2, 3}, {len(all) - 1, 0}, {len(all) + 3, 2}, {4, len(all)}} {
			reads := 0
			p := Paging{PageSize: size, Offset: c[0], Limit: c[1], MetadataBatch: 2}
			p.Read = func(keys []int64, pos Position, n int) ([]Row, error) {
				reads++
				if len(keys) > size || n > size {
					t.Fatalf("a page of %d rows over %d series, size %d", n, len(keys), size)
				}
				var page []Row
				for _, r := range all {
					if slices.Contains(keys, r.Pos[1]) && slices.Compare(r.Pos[:], pos[:]) > 0 && len(page) < n {
						page = append(page, r)
					}
				}
				return page, nil
			}
			p.Metadata = func(rows []Row) error {
				if len(rows) > 2 {
					t.Fatalf("metadata of %d rows at once", len(rows))
				}
				for i := range rows {
					rows[i].Instance.Metadata = []byte(rows[i].Instance.SOPInstanceUID)
				}
				return nil
			}
			var got []string
			err := p.Walk(series, func(in *store.Instance) error {
				if string(in.Metadata) != in.SOPInstanceUID {
					t.Fatalf("%s: metadata %q", in.SOPInstanceUID, in.Metadata)
				}
				got = append(got, in.SOPInstanceUID)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			w := want[min(c[0], len(want)):]
			if c[1] > 0 {
				w = w[:min(c[1], len(w))]
			}
			if !slices.Equal(got, w) {
				t.Errorf("size %d, offset %d, limit %d: got %v, want %v", size, c[0], c[1], got, w)
			}
		}
	}
}
