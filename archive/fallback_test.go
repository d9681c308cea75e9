package archive_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/store"
)

// A store with no optional capability but the one without which C-FIND
// cannot be served (Querier): every fallback of the archive is taken.
type bareIndex struct {
	store.Index
	store.Querier
}

type bareBlobs struct{ store.Blobs }

func (b bareBlobs) Create(ctx context.Context, key string) (store.BlobWriter, error) {
	w, err := b.Blobs.Create(ctx, key)
	if err != nil {
		return nil, err
	}
	return bareWriter{w}, nil
}

type bareWriter struct{ store.BlobWriter }

// TestFallbacks runs the archive over a store with its optional
// capabilities hidden (no deferred writes, intents, durable names, batch
// publishing, space reports, key matcher, inserter, blob finder, walker,
// deletion recorder, deletion holds in the index, sequences, kept
// metadata): storing,
// replacing, querying, retrieving, deleting while deletions are held,
// verifying and recovering still do what they promise, the slow way.
func TestFallbacks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	idx, bs := openStores(t, dir)
	defer idx.Close()
	defer bs.Close()
	ix := bareIndex{idx, idx}
	blobs := bareBlobs{bs}
	if caps := store.Resolve(ix, blobs).Names(); len(caps) != 1 || caps[0] != "Querier" {
		t.Fatalf("the bare store has capabilities %v", caps)
	}
	open := func() *fixture {
		ar := &archive.Archive{Index: ix, Blobs: blobs, OnDuplicate: archive.DuplicateReplace}
		if err := ar.Open(ctx); err != nil {
			t.Fatal(err)
		}
		return &fixture{ar: ar, idx: idx, blobs: bs, dir: dir, assoc: pipeAssociation(t)}
	}
	f := open()
	for _, o := range qrObjects {
		obj := o.object(t)
		if err := f.store(obj, obj.bytes(t)); err != nil {
			t.Fatal(err)
		}
	}
	// Replaced: the older object goes (no hold).
	first, err := idx.Get(ctx, studyA+".1.1")
	if err != nil {
		t.Fatal(err)
	}
	again := qrObjects[0].object(t)
	if err := f.store(again, again.bytes(t)); err != nil {
		t.Fatal(err)
	}
	f.ar.Close() // publishing and deleting done
	if _, err := bs.Open(ctx, first.BlobKey); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the replaced object stayed: %v", err)
	}
	f = open()
	defer func() { f.ar.Close() }()

	ms, _, err := find(t, f, dimse.StudyRootFind, ident(t, "QueryRetrieveLevel", "STUDY", "PatientName", "doe*", "StudyInstanceUID", ""))
	if err != nil || len(ms) != 1 {
		t.Fatalf("C-FIND without a KeyMatcher: %d matches, %v", len(ms), err)
	}
	ins, err := retrieve(t, f, dimse.StudyRootGet, ident(t, "QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyA))
	if err != nil || len(ins) != 3 {
		t.Fatalf("retrieve: %d instances, %v", len(ins), err)
	}
	// Metadata without a MetadataKeeper: read from each object every time.
	nmd := 0
	err = f.ar.Retrieve(ctx, &archive.RetrieveRequest{Model: archive.StudyRoot, Metadata: true,
		Identifier: ident(t, "QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyA)}, func(in *archive.Instance) error {
		b, err := in.Metadata(ctx)
		if err == nil && !bytes.Contains(b, []byte(in.SOPInstanceUID)) {
			err = fmt.Errorf("metadata of %s: %.100s", in.SOPInstanceUID, b)
		}
		nmd++
		return err
	})
	if err != nil || nmd != 3 {
		t.Fatalf("metadata: %d instances, %v", nmd, err)
	}

	// Deletion held in memory (the index records no hold), one instance
	// at a time (no DeletionRecorder).
	release, err := f.ar.HoldDeletes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := idx.Get(ctx, studyB+".1.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ar.DeleteStudy(ctx, studyB, "test", "tester"); err != nil {
		t.Fatal(err)
	}
	if _, err := idx.Get(ctx, studyB+".1.1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the deleted study is still indexed: %v", err)
	}
	if rc, err := bs.Open(ctx, b.BlobKey); err != nil {
		t.Errorf("a held object went: %v", err)
	} else {
		rc.Close()
	}
	if err := release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Open(ctx, b.BlobKey); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the deleted study's object stayed after the hold: %v", err)
	}

	// Verify covers the studies it is given (no InstanceWalker).
	if rep, problems := verifyAll(t, f, studyA); len(problems) != 0 || rep.Instances != 3 {
		t.Errorf("verify: %+v, problems %v", rep, problems)
	}

	// A crash with work unfinished: recovery by HasBlob (no BlobFinder).
	left := qrObject{"P7", "Left^Behind", studyC, studyC + ".7", studyC + ".7.1", "CT", "20200101"}.object(t)
	w, err := blobs.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(left.bytes(t)); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	f.ar.Close()
	f = open()
	if _, err := bs.Open(ctx, w.Key()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an object no row names survived recovery: %v", err)
	}
	if n, err := idx.CountInstances(ctx); err != nil || n != int64(len(qrObjects))-1 {
		t.Errorf("%d instances after recovery (%v), want %d", n, err, len(qrObjects)-1)
	}
}

// TestCapsGiven: the archive reads the capabilities it is given (those
// store.Open resolved), not the backend's own by assertion, and resolves
// them itself only when given none.
func TestCapsGiven(t *testing.T) {
	ctx := context.Background()
	idx, bs := openStores(t, t.TempDir())
	defer idx.Close()
	defer bs.Close()
	hidden := &archive.Archive{Index: idx, Blobs: bs, Caps: &store.Caps{Querier: idx}}
	if err := hidden.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer hidden.Close()
	if names := hidden.Capabilities().Names(); len(names) != 1 || names[0] != "Querier" {
		t.Errorf("capabilities given: %v", names)
	}
	// Without an InstanceWalker, verifying every study needs them named.
	if _, err := hidden.Verify(ctx, archive.VerifyOptions{}, func(archive.VerifyProblem) {}); err == nil {
		t.Error("verify walked the instances with the InstanceWalker hidden from the archive")
	}
	own := &archive.Archive{Index: idx, Blobs: bs}
	if got, want := own.Capabilities().Names(), store.Resolve(idx, bs).Names(); !slices.Equal(got, want) {
		t.Errorf("capabilities resolved: %v, want %v", got, want)
	}
	if _, err := own.Verify(ctx, archive.VerifyOptions{}, func(archive.VerifyProblem) {}); err != nil {
		t.Errorf("verify with the store's own capabilities: %v", err)
	}
}
