package archive_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
)

// TestOpenSeeks: an instance's data set, over the file blob store, can
// seek (frames skip what they do not need), starts at the data set's
// first byte, and reads the same bytes as the stored file's data set.
func TestOpenSeeks(t *testing.T) {
	f := newFixture(t, archive.DuplicateReject)
	o := ctObject(t, "1.2.826.0.1.3680043.10.99.51")
	if err := f.store(o, o.bytes(t)); err != nil {
		t.Fatal(err)
	}
	var insts []*archive.Instance
	err := f.ar.Retrieve(bulk, &archive.RetrieveRequest{Model: archive.StudyRoot, Identifier: ident(t, "QueryRetrieveLevel", "IMAGE",
		"StudyInstanceUID", o.ds.String(dicom.StudyInstanceUID), "SeriesInstanceUID", o.ds.String(dicom.SeriesInstanceUID), "SOPInstanceUID", o.inst)},
		func(in *archive.Instance) error { insts = append(insts, in); return nil })
	if err != nil || len(insts) != 1 {
		t.Fatalf("Retrieve = %v, %d instances", err, len(insts))
	}
	rc, err := insts[0].Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rs, ok := rc.(io.ReadSeeker)
	if !ok {
		t.Fatalf("%T is not an io.ReadSeeker", rc)
	}
	start, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 10)
	if _, err := io.ReadFull(rs, head); err != nil {
		t.Fatal(err)
	}
	if at, err := rs.Seek(0, io.SeekCurrent); err != nil || at != start+10 {
		t.Fatalf("after 10 bytes read, at %d (%v), want %d", at, err, start+10)
	}
	rest, err := io.ReadAll(rs)
	got := append(head, rest...)
	if err != nil {
		t.Fatal(err)
	}
	if want := f.dataSetOf(t, o.inst); !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, the stored data set has %d", len(got), len(want))
	}
	if _, err := rs.Seek(start+8, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	again, _ := io.ReadAll(rs)
	if !bytes.Equal(again, got[8:]) {
		t.Error("after a seek the bytes differ")
	}
}
