package archive_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/fsblob"
	"github.com/ward-pacs/ward/store/sqlite"
)

// lossyIndex is the sqlite index as a power loss leaves it: every deferred
// write is gone (never reached the disk) and Sync never succeeded, so the
// archive never published the blobs stored through it.
type lossyIndex struct{ *sqlite.DB }

func (lossyIndex) InsertDeferred(context.Context, *store.Instance) error { return nil }
func (lossyIndex) PutDeferred(context.Context, *store.Instance) (store.PutResult, error) {
	return store.PutResult{}, nil
}
func (lossyIndex) Sync(context.Context) error { return errors.New("power lost") }

// TestReplayLostRows: a C-STORE is answered once its object (with the
// intent record) is fsynced and its row committed, the row not yet synced.
// A crash that loses those rows must not lose the objects: Open rebuilds
// each row from its pending blob, and drops what was never answered or was
// superseded.
func TestReplayLostRows(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	idx, bs := openStores(t, dir)
	t.Cleanup(func() { bs.Close(); idx.Close() })
	if _, err := bs.Intent(ctx, "0000"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Intent of a missing blob: %v", err)
	}
	const (
		uidNew      = "1.2.826.0.1.3680043.10.1432.7.1"
		uidReplaced = "1.2.826.0.1.3680043.10.1432.7.2"
		uidTorn     = "1.2.826.0.1.3680043.10.1432.7.3"
		uidStale    = "1.2.826.0.1.3680043.10.1432.7.4"
	)
	objs := map[string]*object{}
	for _, uid := range []string{uidNew, uidReplaced, uidTorn, uidStale} {
		objs[uid] = ctObject(t, uid)
	}
	// Before the crash: the first copy of uidReplaced is stored and synced.
	f := &fixture{ar: &archive.Archive{Index: idx, Blobs: bs}, idx: idx, blobs: bs, dir: dir, assoc: pipeAssociation(t)}
	if err := f.ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.store(objs[uidReplaced], objs[uidReplaced].bytes(t)); err != nil {
		t.Fatal(err)
	}
	f.ar.Close()
	first, err := idx.Get(ctx, uidReplaced)
	if err != nil {
		t.Fatal(err)
	}

	// The stores whose rows the crash takes.
	f.ar = &archive.Archive{Index: lossyIndex{idx}, Blobs: bs}
	if err := f.ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	objs[uidReplaced].ds.Set(0x00200013, "2") // Instance Number: a new copy
	start := time.Now()
	for _, uid := range []string{uidNew, uidReplaced, uidTorn, uidStale} {
		if err := f.store(objs[uid], objs[uid].bytes(t)); err != nil {
			t.Fatal(err)
		}
	}
	f.ar.Close()
	pending := map[string]string{} // SOP Instance UID -> blob key
	walk(t, bs, func(key string, published bool) {
		if published {
			return
		}
		b, err := bs.Intent(ctx, key)
		if err != nil {
			t.Fatalf("pending blob %s: intent: %v", key, err)
		}
		for uid, o := range objs {
			rc, err := bs.Open(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			buf.ReadFrom(rc)
			rc.Close()
			if bytes.HasSuffix(buf.Bytes(), o.bytes(t)) {
				pending[uid] = key
			}
		}
		if len(b) == 0 {
			t.Errorf("pending blob %s: empty intent", key)
		}
	})
	if len(pending) != 4 {
		t.Fatalf("pending blobs after the lossy stores: %v, want 4", pending)
	}
	// The torn one: its fsync never finished.
	p := filepath.Join(dir, "pending", pending[uidTorn][:4], pending[uidTorn]+".dcm")
	if err := os.Truncate(p, 2000); err != nil {
		t.Fatal(err)
	}
	// The stale one: a copy received later is indexed (stored by hand).
	w, err := bs.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("a later copy"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	later := &store.Instance{
		SOPInstanceUID: uidStale, SOPClassUID: objs[uidStale].class, StudyInstanceUID: "1.2.3", SeriesInstanceUID: "1.2.3.4",
		BlobKey: w.Key(), ReceivedAt: time.Now().Add(time.Hour).UTC(),
	}
	if _, err := idx.Put(ctx, later); err != nil {
		t.Fatal(err)
	}
	if err := bs.Publish(ctx, w.Key()); err != nil {
		t.Fatal(err)
	}
	// A slot with bytes and no intent record: never answered.
	w, err = bs.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("no intent"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	noIntent := w.Key()

	// Restart.
	ar := &archive.Archive{Index: idx, Blobs: bs}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	ar.Close()
	f.ar = ar
	in, err := idx.Get(ctx, uidNew)
	if err != nil {
		t.Fatalf("the new instance's row was not replayed: %v", err)
	}
	if in.BlobKey != pending[uidNew] || in.SourceAET != "TESTSCU" || in.SourceAddr != f.assoc.RemoteAddr().String() ||
		in.ReceivedAt.Before(start) || in.PatientID == "" || in.Size == 0 {
		t.Errorf("replayed row: %+v", in)
	}
	if !bytes.Equal(f.dataSetOf(t, uidNew), objs[uidNew].bytes(t)) {
		t.Error("replayed instance: stored data set differs from the one sent")
	}
	in, err = idx.Get(ctx, uidReplaced)
	if err != nil || in.BlobKey != pending[uidReplaced] || in.InstanceNumber != "2" {
		t.Errorf("replaced instance: %+v, %v; want the new copy (blob %s)", in, err, pending[uidReplaced])
	}
	if _, err := bs.Open(ctx, first.BlobKey); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the copy replaced during replay is still stored: %v", err)
	}
	if _, err := idx.Get(ctx, uidTorn); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("torn instance: %v, want no row", err)
	}
	if in, err := idx.Get(ctx, uidStale); err != nil || in.BlobKey != later.BlobKey {
		t.Errorf("stale instance: %+v, %v; want the later copy", in, err)
	}
	for _, key := range []string{pending[uidTorn], pending[uidStale], noIntent} {
		if _, err := bs.Open(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("blob %s should be gone: %v", key, err)
		}
	}
	walk(t, bs, func(key string, published bool) {
		if !published {
			t.Errorf("blob %s still pending", key)
		}
	})
	if n, _ := idx.CountInstances(ctx); n != 3 {
		t.Errorf("%d instances, want 3", n)
	}
}

func walk(t *testing.T, bs *fsblob.Store, fn func(key string, published bool)) {
	t.Helper()
	err := bs.WalkBlobs(context.Background(), func(key string, published bool) error {
		fn(key, published)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// intentErrBlobs is a blob store whose writers fail to keep an intent
// record with err: EOPNOTSUPP as on a filesystem without user extended
// attributes, ENOSPC as on a full disk.
type intentErrBlobs struct {
	*fsblob.Store
	err error
}

func (b intentErrBlobs) Create(ctx context.Context, key string) (store.BlobWriter, error) {
	w, err := b.Store.Create(ctx, key)
	if err != nil {
		return nil, err
	}
	return intentErrWriter{w, b.err}, nil
}

type intentErrWriter struct {
	store.BlobWriter
	err error
}

func (w intentErrWriter) SetIntent([]byte) error { return fmt.Errorf("setxattr: %w", w.err) }
func (w intentErrWriter) NameDurable() bool      { return w.BlobWriter.(store.DurableNamer).NameDurable() }

// countingIndex counts deferred and ordinary row writes.
type countingIndex struct {
	*sqlite.DB
	deferred, durable int
}

func (ix *countingIndex) Insert(ctx context.Context, in *store.Instance) error {
	ix.durable++
	return ix.DB.Insert(ctx, in)
}

func (ix *countingIndex) InsertDeferred(ctx context.Context, in *store.Instance) error {
	ix.deferred++
	return ix.DB.InsertDeferred(ctx, in)
}

func (ix *countingIndex) Put(ctx context.Context, in *store.Instance) (store.PutResult, error) {
	ix.durable++
	return ix.DB.Put(ctx, in)
}

func (ix *countingIndex) PutDeferred(ctx context.Context, in *store.Instance) (store.PutResult, error) {
	ix.deferred++
	return ix.DB.PutDeferred(ctx, in)
}

// Without intent records, every row is synced before the response.
func TestNoIntentNoDeferredRows(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	idx, bs := openStores(t, dir)
	t.Cleanup(func() { bs.Close(); idx.Close() })
	for _, tc := range []struct {
		name  string
		uid   string
		blobs store.Blobs
		want  [2]int // deferred, durable
	}{
		{"intents", "1.2.826.0.1.3680043.10.1432.8.1.", bs, [2]int{2, 0}},
		{"no intents", "1.2.826.0.1.3680043.10.1432.8.2.", intentErrBlobs{bs, syscall.EOPNOTSUPP}, [2]int{0, 2}},
	} {
		ix := &countingIndex{DB: idx}
		ar := &archive.Archive{Index: ix, Blobs: tc.blobs}
		if err := ar.Open(ctx); err != nil {
			t.Fatal(err)
		}
		f := &fixture{ar: ar, idx: idx, blobs: bs, dir: dir, assoc: pipeAssociation(t)}
		for i := 0; i < 2; i++ {
			o := ctObject(t, tc.uid+string(rune('1'+i)))
			if err := f.store(o, o.bytes(t)); err != nil {
				t.Fatal(err)
			}
		}
		ar.Close()
		if got := [2]int{ix.deferred, ix.durable}; got != tc.want {
			t.Errorf("%s: deferred, durable inserts = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// An intent record that cannot be written for want of space fails the
// store (A700, "no space left on device"), leaving nothing behind.
func TestIntentDiskFull(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	idx, bs := openStores(t, dir)
	t.Cleanup(func() { bs.Close(); idx.Close() })
	ar := &archive.Archive{Index: idx, Blobs: intentErrBlobs{bs, syscall.ENOSPC}}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	f := &fixture{ar: ar, idx: idx, blobs: bs, dir: dir, assoc: pipeAssociation(t)}
	o := ctObject(t, "1.2.826.0.1.3680043.10.1432.9.1")
	wantStatus(t, f.store(o, o.bytes(t)), 0xA700, "no space left on device")
	f.checkNothingStored(t, o.inst, 0)
}

// awayBlobs is an fsblob store whose objects cannot be read for now, as
// an object store away; its other capabilities (intent records) work.
type awayBlobs struct{ *fsblob.Store }

func (awayBlobs) Open(context.Context, string) (io.ReadCloser, error) { return nil, errAway }

// TestReplayWaitsForUnreadableBlobs: a pending object whose row a crash
// lost, that recovery cannot read now, is not taken for one that does
// not match its intent record: it stays, the start fails saying why, and
// the next start restores its row.
func TestReplayWaitsForUnreadableBlobs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	idx, bs := openStores(t, dir)
	const uid = "1.2.826.0.1.3680043.10.1432.7.9"
	obj := ctObject(t, uid)
	f := &fixture{ar: &archive.Archive{Index: lossyIndex{idx}, Blobs: bs}, idx: idx, blobs: bs, dir: dir, assoc: pipeAssociation(t)}
	if err := f.ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.store(obj, obj.bytes(t)); err != nil {
		t.Fatal(err)
	}
	f.ar.Close()
	bs.Close()
	idx.Close()
	if _, err := os.Stat(filepath.Join(dir, "pending")); err != nil {
		t.Fatal(err)
	}

	idx, bs = openStores(t, dir)
	ar := &archive.Archive{Index: idx, Blobs: awayBlobs{bs}}
	if err := ar.Open(ctx); !errors.Is(err, errAway) {
		t.Errorf("start with the object unreadable: %v, want the read's error", err)
	}
	bs.Close()
	idx.Close()

	idx, bs = openStores(t, dir)
	defer idx.Close()
	defer bs.Close()
	ar = &archive.Archive{Index: idx, Blobs: bs}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	ar.Close()
	if _, err := idx.Get(ctx, uid); err != nil {
		t.Fatalf("the object's row was not restored at the next start: %v", err)
	}
}
