package archive_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/sqlite"
)

// downIndex is an index whose writes fail as a shared database's do
// while it cannot be reached (store.ErrUnavailable).
type downIndex struct{ *sqlite.DB }

func unavailable() error {
	return fmt.Errorf("postgres: put: %w: dial unix: connection refused", store.ErrUnavailable)
}

func (downIndex) Insert(context.Context, *store.Instance) error         { return unavailable() }
func (downIndex) InsertDeferred(context.Context, *store.Instance) error { return unavailable() }
func (downIndex) Put(context.Context, *store.Instance) (store.PutResult, error) {
	return store.PutResult{}, unavailable()
}
func (downIndex) PutDeferred(context.Context, *store.Instance) (store.PutResult, error) {
	return store.PutResult{}, unavailable()
}

// A store whose index is unavailable is refused with the transient
// status (A700, out of resources) and a comment that says to try again,
// leaving nothing behind.
func TestStoreIndexUnavailable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	idx, bs := openStores(t, dir)
	t.Cleanup(func() { bs.Close(); idx.Close() })
	ar := &archive.Archive{Index: downIndex{idx}, Blobs: bs}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer ar.Close()
	f := &fixture{ar: ar, idx: idx, blobs: bs, dir: dir, assoc: pipeAssociation(t)}
	o := ctObject(t, "1.2.826.0.1.3680043.10.1432.9.7")
	wantStatus(t, f.store(o, o.bytes(t)), 0xA700, "unavailable")
	f.checkNothingStored(t, o.inst, 0)
}

// TestUnavailableCommentFits: the comment of a store refused for an
// unavailable store says to try again within the 64 characters DIMSE
// keeps of an Error Comment (it once said it after them, and peers saw
// only "…the shared index or object store is").
func TestUnavailableCommentFits(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	idx, bs := openStores(t, dir)
	t.Cleanup(func() { bs.Close(); idx.Close() })
	ar := &archive.Archive{Index: downIndex{idx}, Blobs: bs}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer ar.Close()
	f := &fixture{ar: ar, idx: idx, blobs: bs, dir: dir, assoc: pipeAssociation(t)}
	o := ctObject(t, "1.2.826.0.1.3680043.10.1432.9.8")
	se := wantStatus(t, f.store(o, o.bytes(t)), 0xA700, "unavailable")
	kept := se.Comment[:min(len(se.Comment), 64)]
	if !strings.Contains(kept, "try again") {
		t.Errorf("comment %q: DIMSE keeps %q, without \"try again\"", se.Comment, kept)
	}
}
