package dicom

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// writePart10 writes a data set in ts as a Part 10 file for dcmdump.
func writePart10(t *testing.T, dir, name string, m *FileMeta, ts *TransferSyntax, body []byte) string {
	t.Helper()
	var buf bytes.Buffer
	meta := *m
	meta.TransferSyntaxUID = ts.UID
	if meta.MediaStorageSOPClassUID == "" {
		meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
	}
	if meta.MediaStorageSOPInstanceUID == "" {
		meta.MediaStorageSOPInstanceUID = "1.2.3.4"
	}
	meta.ImplementationClassUID = ""
	if err := WriteFileHeader(&buf, &meta); err != nil {
		t.Fatal(err)
	}
	buf.Write(body)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTranscodeChain converts every native test file
// original -> implicit -> explicit -> big endian -> deflated -> implicit,
// checks each step with dcmdump and the end result against the original,
// and that a deflated data set has an even length (padded).
func TestTranscodeChain(t *testing.T) {
	chain := []*TransferSyntax{ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian}
	_, hasDump := os.Stat("/usr/bin/dcmdump")
	for _, f := range readableFiles(t) {
		if !IsUncompressed(f.ts) {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			orig, err := ReadDataSet(bytes.NewReader(f.body), f.ts, 1<<26)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			cur, from := f.body, f.ts
			for i, to := range chain {
				var out bytes.Buffer
				if err := Transcode(&out, bytes.NewReader(cur), from, to); err != nil {
					t.Fatalf("step %d %s -> %s: %v", i, from.Name, to.Name, err)
				}
				cur, from = out.Bytes(), to
				if to.Deflated && len(cur)%2 != 0 {
					// PS3.5 A.5; DCMTK refuses odd P-DATA fragments.
					t.Fatalf("step %d: deflated data set of odd length %d", i, len(cur))
				}
				if hasDump == nil {
					p := writePart10(t, dir, f.name, f.meta, to, cur)
					if ok, msg := dcmdumpClean(t, p); !ok {
						t.Fatalf("step %d (%s): dcmdump:\n%s", i, to.Name, msg)
					}
				}
				mid, err := ReadDataSet(bytes.NewReader(cur), to, 1<<26)
				if err != nil {
					t.Fatalf("step %d: reading result: %v", i, err)
				}
				if err := equalDataSets(orig, mid, ""); err != nil {
					t.Fatalf("step %d (%s): %v", i, to.Name, err)
				}
			}
		})
	}
}

func TestTranscodeRefusesEncapsulated(t *testing.T) {
	jpeg := LookupTransferSyntax("1.2.840.10008.1.2.4.50")
	err := Transcode(&bytes.Buffer{}, bytes.NewReader(nil), jpeg, ExplicitVRLittleEndian)
	if !errors.Is(err, ErrNotConvertible) {
		t.Fatalf("got %v", err)
	}
	err = Transcode(&bytes.Buffer{}, bytes.NewReader(nil), ExplicitVRLittleEndian, jpeg)
	if !errors.Is(err, ErrNotConvertible) {
		t.Fatalf("got %v", err)
	}
}

func TestTranscodePixelSwap(t *testing.T) {
	ds := &DataSet{}
	ds.Put(&Element{Tag: BitsAllocated, VR: "US", Value: []byte{16, 0}})
	ds.Put(&Element{Tag: PixelData, VR: "OW", Value: []byte{1, 2, 3, 4}})
	in, _ := ds.Bytes(ImplicitVRLittleEndian)
	var out bytes.Buffer
	if err := Transcode(&out, bytes.NewReader(in), ImplicitVRLittleEndian, ExplicitVRBigEndian); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDataSet(bytes.NewReader(out.Bytes()), ExplicitVRBigEndian, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	px := got.Get(PixelData)
	if px.VR != "OW" || !bytes.Equal(px.Value, []byte{2, 1, 4, 3}) {
		t.Fatalf("pixel data %s %v", px.VR, px.Value)
	}
	if n, _ := got.Int(BitsAllocated); n != 16 {
		t.Fatalf("bits allocated %d", n)
	}
	// 8-bit pixel data becomes OB, unswapped.
	ds.Put(&Element{Tag: BitsAllocated, VR: "US", Value: []byte{8, 0}})
	in, _ = ds.Bytes(ImplicitVRLittleEndian)
	out.Reset()
	if err := Transcode(&out, bytes.NewReader(in), ImplicitVRLittleEndian, ExplicitVRBigEndian); err != nil {
		t.Fatal(err)
	}
	got, _ = ReadDataSet(bytes.NewReader(out.Bytes()), ExplicitVRBigEndian, 1<<20)
	if px := got.Get(PixelData); px.VR != "OB" || !bytes.Equal(px.Value, []byte{1, 2, 3, 4}) {
		t.Fatalf("8-bit pixel data %s %v", px.VR, px.Value)
	}
}

// TestTranscodeSequenceSentAsUN: implicit VR reads a tag the dictionary
// calls SQ as a sequence, so a defined-length UN value of such a tag is
// transcoded as the implicit VR LE items it holds (PS3.5 6.2.2); a value
// that is no sequence, or another VR on such a tag, cannot be converted.
func TestTranscodeSequenceSentAsUN(t *testing.T) {
	refSeq, refUID := NewTag(0x0008, 0x1140), NewTag(0x0008, 0x1155)
	var item []byte
	item = appendHeader(item, implicitLE, refUID, 0, 8)
	item = append(item, "1.2.3.4\x00"...)
	var items []byte
	items = appendHeader(items, implicitLE, Item, 0, uint32(len(item)))
	items = append(items, item...)
	explicitLE := codingOf(ExplicitVRLittleEndian)
	body := func(v string, value []byte) []byte {
		b := appendHeader(nil, explicitLE, refSeq, mkVR(v), uint32(len(value)))
		b = append(b, value...)
		b = appendHeader(b, explicitLE, NewTag(0x0010, 0x0020), mkVR("LO"), 2)
		return append(b, "P1"...)
	}

	var out bytes.Buffer
	if err := Transcode(&out, bytes.NewReader(body("UN", items)), ExplicitVRLittleEndian, ImplicitVRLittleEndian); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDataSet(bytes.NewReader(out.Bytes()), ImplicitVRLittleEndian, 1<<20)
	if err != nil {
		t.Fatalf("transcoded output unreadable: %v", err)
	}
	seq := got.Get(refSeq)
	if seq == nil || len(seq.Items) != 1 {
		t.Fatalf("sequence %+v", seq)
	}
	if uid := seq.Items[0].String(refUID); uid != "1.2.3.4" {
		t.Fatalf("item UID %q", uid)
	}
	if id := got.String(PatientID); id != "P1" {
		t.Fatalf("patient ID after the sequence %q", id)
	}
	if _, err := os.Stat("/usr/bin/dcmdump"); err == nil {
		p := writePart10(t, t.TempDir(), "un-sq.dcm", &FileMeta{}, ImplicitVRLittleEndian, out.Bytes())
		if ok, msg := dcmdumpClean(t, p); !ok {
			t.Fatalf("dcmdump:\n%s", msg)
		}
	}
	// Explicit output keeps the UN value as it came.
	out.Reset()
	if err := Transcode(&out, bytes.NewReader(body("UN", items)), ExplicitVRLittleEndian, ExplicitVRBigEndian); err != nil {
		t.Fatal(err)
	}

	for name, in := range map[string][]byte{
		"UN holding no items": body("UN", []byte("00000000")),
		"LO on an SQ tag":     body("LO", []byte("00000000")),
		"unknown VR":          body("AA", []byte("00000000")),
	} {
		err := Transcode(&bytes.Buffer{}, bytes.NewReader(in), ExplicitVRLittleEndian, ImplicitVRLittleEndian)
		if !errors.Is(err, ErrNotConvertible) && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want a not-convertible or malformed error", name, err)
		}
	}
}
