package archive_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/network/dimse"
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

// downQueries is an index whose queries fail as a shared database's do
// while it cannot be reached.
type downQueries struct{ *sqlite.DB }

func (downQueries) Query(context.Context, *store.Query, func(store.Match) error) error {
	return unavailable()
}
func (downQueries) Instances(context.Context, *store.Query, func(*store.Instance) error) error {
	return unavailable()
}

// A C-FIND while the index is unavailable is refused with A700 (Refused:
// Out of Resources, the C-FIND status that says to try again), not C001
// (unable to process), and its comment says to try again.
func TestFindIndexUnavailable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	idx, bs := openStores(t, dir)
	t.Cleanup(func() { bs.Close(); idx.Close() })
	ar := &archive.Archive{Index: downQueries{idx}, Blobs: bs}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer ar.Close()
	f := &fixture{ar: ar, idx: idx, blobs: bs, dir: dir, assoc: pipeAssociation(t)}
	id := ident(t, "QueryRetrieveLevel", "STUDY", "PatientID", "PID1", "StudyInstanceUID", "")
	_, _, err := find(t, f, dimse.StudyRootFind, id)
	wantStatus(t, err, 0xA700, "store unavailable, try again later")
	if !errors.Is(err, archive.ErrUnavailable) && !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("%v is not store unavailable", err)
	}
}
