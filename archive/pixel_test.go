package archive_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/store"
)

// TestStoreRefusesPixelDataContradictingSyntax: native pixel data on a
// JPEG 2000 context, and encapsulated JPEG pixel data on Explicit VR Little
// Endian, are refused with 0xC000 naming Pixel Data, and nothing is
// stored (issue 14, item 18). Before, both were stored and labelled with
// the negotiated syntax, and later retrievals failed.
func TestStoreRefusesPixelDataContradictingSyntax(t *testing.T) {
	native := ctObject(t, "1.2.826.0.1.3680043.10.18.1")
	jpeg := func() (string, string, []byte) {
		meta, rc, err := dicom.OpenFile(testFile(t, "test_files/JPEG-lossy.dcm"))
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		var b bytes.Buffer
		if _, err := b.ReadFrom(rc); err != nil {
			t.Fatal(err)
		}
		if meta.TransferSyntaxUID != "1.2.840.10008.1.2.4.51" {
			t.Fatalf("JPEG-lossy.dcm is in %s", meta.TransferSyntaxUID)
		}
		return meta.SOPClassUID, meta.SOPInstanceUID, b.Bytes()
	}
	jpegClass, jpegUID, jpegData := jpeg()
	// JPEG-lossy.dcm's data set is explicit VR little endian apart from
	// its pixel data: sent on an Explicit VR Little Endian context, only
	// the pixel data contradicts the syntax.
	for _, tc := range []struct {
		name, ts, class, uid string
		data                 []byte
	}{
		{"native on JPEG 2000", "1.2.840.10008.1.2.4.91", native.class, native.inst, native.bytes(t)},
		{"encapsulated on explicit VR little endian", dicom.ExplicitVRLittleEndian.UID, jpegClass, jpegUID, jpegData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "")
			err := f.fe().Store(context.Background(), &dimse.StoreRequest{
				Request:     dimse.Request{Assoc: f.assoc, ContextID: 1},
				SOPClassUID: tc.class, SOPInstanceUID: tc.uid, TransferSyntaxUID: tc.ts,
				Data: bytes.NewReader(tc.data),
			})
			se := wantStatus(t, err, dimse.StatusCannotUnderstand, "transfer syntax")
			if len(se.Offending) != 1 || se.Offending[0] != uint32(dicom.PixelData) {
				t.Errorf("offending = %x, want (7FE0,0010)", se.Offending)
			}
			t.Logf("comment: %s", se.Comment)
			f.checkNothingStored(t, tc.uid, 0)
		})
	}
	// The same objects on the syntax they are in are stored.
	f := newFixture(t, "")
	if err := f.store(native, native.bytes(t)); err != nil {
		t.Fatal(err)
	}
	err := f.fe().Store(context.Background(), &dimse.StoreRequest{
		Request:     dimse.Request{Assoc: f.assoc, ContextID: 1},
		SOPClassUID: jpegClass, SOPInstanceUID: jpegUID, TransferSyntaxUID: "1.2.840.10008.1.2.4.51",
		Data: bytes.NewReader(jpegData),
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestVerifyReportsPixelContradiction: an object an older Ward stored with
// pixel data that contradicts its transfer syntax is reported by
// ward study verify.
func TestVerifyReportsPixelContradiction(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "")
	o := ctObject(t, "1.2.826.0.1.3680043.10.18.5")
	const j2k = "1.2.840.10008.1.2.4.91"
	var b bytes.Buffer
	if err := dicom.WriteFileHeader(&b, &dicom.FileMeta{MediaStorageSOPClassUID: o.class, MediaStorageSOPInstanceUID: o.inst, TransferSyntaxUID: j2k}); err != nil {
		t.Fatal(err)
	}
	b.Write(o.bytes(t))
	bw, err := f.blobs.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bw.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := bw.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := f.blobs.Publish(ctx, bw.Key()); err != nil {
		t.Fatal(err)
	}
	in := &store.Instance{SOPInstanceUID: o.inst, SOPClassUID: o.class, TransferSyntaxUID: j2k,
		StudyInstanceUID: o.ds.String(dicom.StudyInstanceUID), SeriesInstanceUID: o.ds.String(dicom.SeriesInstanceUID),
		BlobKey: bw.Key(), Size: int64(b.Len()), Checksum: archive.Checksum(b.Bytes())}
	if _, err := f.idx.Put(ctx, in); err != nil {
		t.Fatal(err)
	}
	_, problems := verifyAll(t, f)
	if p := problems[o.inst]; !strings.Contains(p, "does not match its transfer syntax") || !strings.Contains(p, "Pixel Data") {
		t.Fatalf("verify: %v", problems)
	}
	if len(problems) != 1 {
		t.Errorf("verify: %v", problems)
	}
}
