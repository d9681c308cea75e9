package archive_test

import (
	"bytes"
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/fsblob"
	"github.com/ward-pacs/ward/store/sqlite"
)

// blindIndex is the sqlite index whose next Gets (as many as hide says)
// find nothing: what a store sees when another store of the same SOP
// Instance UID, on another association or another node sharing the
// index, is indexed between its duplicate check and its own insert.
type blindIndex struct {
	*sqlite.DB
	hide atomic.Int32
}

func (b *blindIndex) Get(ctx context.Context, uid string) (*store.Instance, error) {
	if b.hide.Add(-1) >= 0 {
		return nil, store.ErrNotFound
	}
	return b.DB.Get(ctx, uid)
}

// plainBlobs are the fs blobs whose writers say nothing of their name's
// durability (no DurableNamer, no IntentWriter), as an object store's:
// the archive then commits the blob before the index.
type plainBlobs struct{ *fsblob.Store }

type plainWriter struct{ store.BlobWriter }

func (p plainBlobs) Create(ctx context.Context, key string) (store.BlobWriter, error) {
	w, err := p.Store.Create(ctx, key)
	if err != nil {
		return nil, err
	}
	return plainWriter{w}, nil
}

// TestDuplicateStoredMeanwhile: under keep and reject, a store of a SOP
// Instance UID indexed by another store after its duplicate check is
// answered by the policy (reject: Duplicate SOP Instance; keep: success,
// the first object kept), not by replacing the first object, whichever
// order the blob and the index are committed in. It caught two nodes
// storing one object at once both being acknowledged under reject, the
// second replacing the first (test/cluster TestSameObjectTwoNodes).
func TestDuplicateStoredMeanwhile(t *testing.T) {
	const uid = "1.2.826.0.1.3680043.10.1.18"
	for _, policy := range []archive.DuplicatePolicy{archive.DuplicateReject, archive.DuplicateKeep} {
		for _, plain := range []bool{false, true} {
			name := string(policy) + "/durable-name"
			if plain {
				name = string(policy) + "/blob-first"
			}
			t.Run(name, func(t *testing.T) {
				ctx := context.Background()
				dir := t.TempDir()
				idx, bs := openStores(t, dir)
				t.Cleanup(func() { bs.Close(); idx.Close() })
				bi := &blindIndex{DB: idx}
				var blobs store.Blobs = bs
				if plain {
					blobs = plainBlobs{bs}
				}
				ar := &archive.Archive{Index: bi, Blobs: blobs, OnDuplicate: policy}
				if err := ar.Open(ctx); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(ar.Close)
				f := &fixture{ar: ar, idx: idx, blobs: bs, dir: dir, assoc: pipeAssociation(t)}

				first, second := ctObject(t, uid), ctObject(t, uid)
				first.ds.Set(dicom.PatientName, "First^Copy")
				second.ds.Set(dicom.PatientName, "Second^Copy")
				firstData, secondData := first.bytes(t), second.bytes(t)
				if err := f.store(first, firstData); err != nil {
					t.Fatal(err)
				}
				bi.hide.Store(1)
				err := f.store(second, secondData)
				if policy == archive.DuplicateReject {
					wantStatus(t, err, dimse.StatusDuplicateSOPInstance, "already stored")
				} else if err != nil {
					t.Fatalf("keep: the second store: %v", err)
				}
				if got := f.dataSetOf(t, uid); !bytes.Equal(got, firstData) {
					t.Errorf("the stored object is not the first one (the second replaced it)")
				}
				f.checkNothingStored(t, "", 1)
				if keys, err := idx.PendingBlobDeletes(ctx, 10); err != nil || len(keys) != 0 {
					t.Errorf("PendingBlobDeletes = %v, %v; want none", keys, err)
				}
			})
		}
	}
}

// TestRetrieveDuringReplace: an instance a retrieve found in the index,
// replaced (and its old blob deleted) before the retrieve opens it, is
// sent whole as it is now, not failed. It caught C-GETs through one node
// failing their sub-operation while another node replaced the object
// (test/cluster TestRetrieveDuringReplace).
func TestRetrieveDuringReplace(t *testing.T) {
	const uid = "1.2.826.0.1.3680043.10.1.19"
	f := newFixture(t, archive.DuplicateReplace)
	ctx := context.Background()
	first, second := ctObject(t, uid), ctObject(t, uid)
	first.ds.Set(dicom.PatientName, "First^Copy")
	second.ds.Set(dicom.PatientName, "Second^Copy")
	if err := f.store(first, first.bytes(t)); err != nil {
		t.Fatal(err)
	}
	var found []*archive.Instance
	err := f.ar.Retrieve(ctx, &archive.RetrieveRequest{Model: archive.StudyRoot,
		Identifier: ident(t, "QueryRetrieveLevel", "STUDY", "StudyInstanceUID", first.ds.String(dicom.StudyInstanceUID))},
		func(in *archive.Instance) error { found = append(found, in); return nil })
	if err != nil || len(found) != 1 {
		t.Fatalf("Retrieve = %v, %d instances", err, len(found))
	}
	old, err := f.idx.Get(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store(second, second.bytes(t)); err != nil {
		t.Fatal(err)
	}
	f.ar.Close() // the replaced blob is deleted once the after loop ran
	if rc, err := f.blobs.Open(ctx, old.BlobKey); err == nil {
		rc.Close()
		t.Fatal("the replaced blob is still there: the test shows nothing")
	}
	rc, err := found[0].Open(ctx)
	if err != nil {
		t.Fatalf("opening an instance replaced since the retrieve found it: %v", err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(b, second.bytes(t)) {
		t.Errorf("opened %d bytes (%v), want the replacement's data set", len(b), err)
	}
}

// TestReplacedBlobGrace: a replaced blob stays readable for
// ReplacedGrace after the replace (a retrieve that read the index before
// it, reading an object store in ranged requests, still finds it), then
// is deleted without a restart, and is no longer recorded for deletion.
func TestReplacedBlobGrace(t *testing.T) {
	const uid = "1.2.826.0.1.3680043.10.1.20"
	f := newFixture(t, archive.DuplicateReplace)
	f.ar.ReplacedGrace = 2 * time.Second
	ctx := context.Background()
	first, second := ctObject(t, uid), ctObject(t, uid)
	second.ds.Set(dicom.PatientName, "Second^Copy")
	if err := f.store(first, first.bytes(t)); err != nil {
		t.Fatal(err)
	}
	old, err := f.idx.Get(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store(second, second.bytes(t)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the after loop has run by now
	rc, err := f.blobs.Open(ctx, old.BlobKey)
	if err != nil {
		t.Fatalf("the replaced blob is gone at once: %v", err)
	}
	rc.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rc, err := f.blobs.Open(ctx, old.BlobKey)
		if err != nil {
			break
		}
		rc.Close()
		if time.Now().After(deadline) {
			t.Fatal("the replaced blob was not deleted after its grace")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if keys, err := f.idx.PendingBlobDeletes(ctx, 10); err != nil || len(keys) != 0 {
		t.Errorf("PendingBlobDeletes = %v, %v; want none", keys, err)
	}
}
