package archive_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store"
)

// keptMetadata is what the index keeps for the instance (nil: nothing).
func keptMetadata(t *testing.T, f *fixture, study, uid string) []byte {
	t.Helper()
	var out []byte
	q := &store.Query{Level: store.LevelImage, WithMetadata: true, Keys: []store.Key{
		{Attribute: "StudyInstanceUID", Kind: store.MatchSingle, Value: study},
		{Attribute: "SOPInstanceUID", Kind: store.MatchSingle, Value: uid}}}
	if err := f.idx.Instances(context.Background(), q, func(in *store.Instance) error { out = in.Metadata; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitKept waits for the after-store job to keep the instance's metadata.
func waitKept(t *testing.T, f *fixture, study, uid string) []byte {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b := keptMetadata(t, f, study, uid); b != nil {
			return b
		}
	}
	t.Fatal("the metadata of a stored object was not computed after its store")
	return nil
}

// metadataOf retrieves the instance's metadata through the service and
// decodes it.
func metadataOf(t *testing.T, f *fixture, study, series, uid string) map[string]map[string]any {
	t.Helper()
	id := ident(t, "QueryRetrieveLevel", "IMAGE", "StudyInstanceUID", study, "SeriesInstanceUID", series, "SOPInstanceUID", uid)
	var got []map[string]map[string]any
	err := f.ar.Retrieve(context.Background(), &archive.RetrieveRequest{Model: archive.StudyRoot, Identifier: id, Metadata: true},
		func(in *archive.Instance) error {
			if in.Metadata == nil {
				t.Fatal("Instance.Metadata not set for a metadata request")
			}
			b, err := in.Metadata(context.Background())
			if err != nil {
				return err
			}
			var obj map[string]map[string]any
			if err := json.Unmarshal(b, &obj); err != nil {
				t.Fatalf("%v: %s", err, b)
			}
			got = append(got, obj)
			return nil
		})
	if err != nil || len(got) != 1 {
		t.Fatalf("Retrieve: %d instances, %v", len(got), err)
	}
	return got[0]
}

func pnOf(t *testing.T, obj map[string]map[string]any) string {
	t.Helper()
	v, _ := obj["00100010"]["Value"].([]any)
	if len(v) != 1 {
		t.Fatalf("PatientName: %v", obj["00100010"])
	}
	return v[0].(map[string]any)["Alphabetic"].(string)
}

func TestMetadataKeptAfterStoreAndResetOnReplace(t *testing.T) {
	f := newFixture(t, archive.DuplicateReplace)
	o := ctObject(t, "1.2.826.0.1.3680043.10.1234.77.1")
	study, series := o.ds.String(dicom.StudyInstanceUID), o.ds.String(dicom.SeriesInstanceUID)
	o.ds.Set(dicom.PatientName, "First^Name")
	if err := f.store(o, o.bytes(t)); err != nil {
		t.Fatal(err)
	}
	kept := waitKept(t, f, study, o.inst)
	if !strings.Contains(string(kept), `"7FE00010":{"vr":"OW","BulkDataURI":"`+archive.MetadataBulkPrefix+`/7FE00010"}`) {
		t.Errorf("pixel data is not a BulkDataURI with the placeholder: %.300s", kept)
	}
	obj := metadataOf(t, f, study, series, o.inst)
	if pnOf(t, obj) != "First^Name" {
		t.Errorf("PatientName %q", pnOf(t, obj))
	}
	if v := obj["00080018"]["Value"].([]any)[0]; v != o.inst {
		t.Errorf("SOPInstanceUID %v", v)
	}
	if v := obj["00280010"]["Value"].([]any)[0]; v != float64(128) {
		t.Errorf("Rows %v", v)
	}

	// Replaced: what was kept goes with the old object, and the new
	// object's is kept after its store.
	o.ds.Set(dicom.PatientName, "Second^Name")
	if err := f.store(o, o.bytes(t)); err != nil {
		t.Fatal(err)
	}
	if got := metadataOf(t, f, study, series, o.inst); pnOf(t, got) != "Second^Name" {
		t.Errorf("after replacing: PatientName %q", pnOf(t, got))
	}
	if kept := waitKept(t, f, study, o.inst); !strings.Contains(string(kept), "Second^Name") {
		t.Errorf("kept after replacing: %.200s", kept)
	}
}

func TestMetadataComputedWhenFirstAsked(t *testing.T) {
	dir := t.TempDir()
	idx, bs := openStores(t, dir)
	t.Cleanup(func() { bs.Close(); idx.Close() })
	ar := &archive.Archive{Index: idx, Blobs: bs, SkipMetadataAfterStore: true}
	if err := ar.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ar.Close)
	f := &fixture{ar: ar, idx: idx, blobs: bs, dir: dir, assoc: pipeAssociation(t)}
	o := ctObject(t, "1.2.826.0.1.3680043.10.1234.77.2")
	study, series := o.ds.String(dicom.StudyInstanceUID), o.ds.String(dicom.SeriesInstanceUID)
	if err := f.store(o, o.bytes(t)); err != nil {
		t.Fatal(err)
	}
	ar.Close() // the after-store work is done
	if kept := keptMetadata(t, f, study, o.inst); kept != nil {
		t.Fatalf("metadata kept with SkipMetadataAfterStore: %.100s", kept)
	}
	obj := metadataOf(t, f, study, series, o.inst)
	if _, ok := obj["7FE00010"]["BulkDataURI"]; !ok {
		t.Errorf("pixel data: %v", obj["7FE00010"])
	}
	if kept := keptMetadata(t, f, study, o.inst); kept == nil {
		t.Error("metadata read from the object was not kept")
	}
	// What another version of the encoding kept is made again.
	if err := idx.SetMetadata(context.Background(), o.inst, keyOf(t, f, o.inst), []byte(`{"00100010":{"vr":"PN"}}`)); err != nil {
		t.Fatal(err)
	}
	if got := metadataOf(t, f, study, series, o.inst); got["7FE00010"] == nil {
		t.Errorf("kept bytes of another version served: %v", got)
	}
	if kept := keptMetadata(t, f, study, o.inst); !strings.HasPrefix(string(kept), "ward-metadata/") {
		t.Errorf("kept bytes of another version not replaced: %.50s", kept)
	}
}

func keyOf(t *testing.T, f *fixture, uid string) string {
	t.Helper()
	in, err := f.idx.Get(context.Background(), uid)
	if err != nil {
		t.Fatal(err)
	}
	return in.BlobKey
}

// TestMetadataReadAheadKeepsOrder: a series whose metadata is not kept is
// read from its objects several at a time, yet each instance gets its own
// metadata, in the order of a retrieve.
func TestMetadataReadAheadKeepsOrder(t *testing.T) {
	dir := t.TempDir()
	idx, bs := openStores(t, dir)
	t.Cleanup(func() { bs.Close(); idx.Close() })
	ar := &archive.Archive{Index: idx, Blobs: bs, SkipMetadataAfterStore: true}
	if err := ar.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ar.Close)
	f := &fixture{ar: ar, idx: idx, blobs: bs, dir: dir, assoc: pipeAssociation(t)}
	var want []string
	var study, series string
	for i := 1; i <= 11; i++ {
		o := ctObject(t, fmt.Sprintf("1.2.826.0.1.3680043.10.1234.78.%d", i))
		o.ds.Set(dicom.InstanceNumber, fmt.Sprint(i))
		study, series = o.ds.String(dicom.StudyInstanceUID), o.ds.String(dicom.SeriesInstanceUID)
		if err := f.store(o, o.bytes(t)); err != nil {
			t.Fatal(err)
		}
		want = append(want, o.inst)
	}
	var got []string
	id := ident(t, "QueryRetrieveLevel", "SERIES", "StudyInstanceUID", study, "SeriesInstanceUID", series)
	err := ar.Retrieve(context.Background(), &archive.RetrieveRequest{Model: archive.StudyRoot, Identifier: id, Metadata: true},
		func(in *archive.Instance) error {
			b, err := in.Metadata(context.Background())
			if err != nil {
				return err
			}
			var obj map[string]map[string]any
			if err := json.Unmarshal(b, &obj); err != nil {
				return err
			}
			if uid := obj["00080018"]["Value"].([]any)[0]; uid != in.SOPInstanceUID {
				t.Errorf("instance %s got the metadata of %v", in.SOPInstanceUID, uid)
			}
			got = append(got, in.SOPInstanceUID)
			return nil
		})
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("Retrieve = %v, order %v, want %v", err, got, want)
	}
	// The front end stopping midway stops the retrieve with its error.
	stop := errors.New("stop")
	n := 0
	err = ar.Retrieve(context.Background(), &archive.RetrieveRequest{Model: archive.StudyRoot, Identifier: id, Metadata: true},
		func(in *archive.Instance) error {
			if n++; n == 3 {
				return stop
			}
			return nil
		})
	if !errors.Is(err, stop) || n != 3 {
		t.Fatalf("Retrieve after the front end's error = %v after %d", err, n)
	}
}
