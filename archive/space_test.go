package archive_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/store"
)

// spaceBlobs reports the free space the test sets.
type spaceBlobs struct {
	store.Blobs
	free, total atomic.Int64
	reads       atomic.Int64
}

func (b *spaceBlobs) Space(context.Context) (int64, int64, error) {
	b.reads.Add(1)
	return b.free.Load(), b.total.Load(), nil
}

// TestFreeSpaceReserve: a C-STORE is refused with A700 and a comment
// before anything is written when the disk's free space is below the
// reserve (capped at a share of a small disk); far from the reserve the
// disk is read at most once a second.
func TestFreeSpaceReserve(t *testing.T) {
	for _, tc := range []struct {
		name        string
		free, total int64
		minFree     int64
		share       float64
		refused     bool
	}{
		{"plenty", 100 << 30, 1 << 40, 1 << 30, 0.05, false},
		{"below the reserve", 512 << 20, 1 << 40, 1 << 30, 0.05, true},
		{"small disk: 5 %", 512 << 20, 4 << 30, 1 << 30, 0.05, false},
		{"small disk, nearly full", 100 << 20, 4 << 30, 1 << 30, 0.05, true},
		{"no reserve", 0, 1 << 40, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, archive.DuplicateReplace)
			f.ar.Close() // opened again over blobs that report the space
			sb := &spaceBlobs{Blobs: f.blobs}
			sb.free.Store(tc.free)
			sb.total.Store(tc.total)
			f.ar = &archive.Archive{Index: f.idx, Blobs: sb, OnDuplicate: archive.DuplicateReplace, MinFree: tc.minFree, MinFreeShare: tc.share}
			if err := f.ar.Open(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(f.ar.Close)
			o := qrObjects[0].object(t)
			err := f.store(o, o.bytes(t))
			var se *dimse.StatusError
			switch {
			case tc.refused && (!asStatus(err, &se) || se.Status != dimse.StatusOutOfResources || !strings.Contains(se.Comment, "reserve (min_free)") || len(se.Comment) > 64):
				t.Fatalf("want A700 with a comment of at most 64 characters, got %v", err)
			case !tc.refused && err != nil:
				t.Fatalf("refused: %v", err)
			}
			if tc.refused {
				f.ar.Close()
				if n := len(f.files(t, "objects")); n != 0 {
					t.Errorf("%d objects written for a refused store", n)
				}
				return
			}
			if tc.minFree > 0 {
				for i := 1; i < 5; i++ {
					o := qrObjects[i].object(t)
					if err := f.store(o, o.bytes(t)); err != nil {
						t.Fatal(err)
					}
				}
				if n := sb.reads.Load(); n != 1 {
					t.Errorf("the disk was read %d times for 5 stores far from the reserve", n)
				}
			}
		})
	}
}

func asStatus(err error, se **dimse.StatusError) bool { return errors.As(err, se) }
