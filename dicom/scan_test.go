package dicom

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/internal/testci"
)

func wantBasic(t Tag) bool {
	switch t {
	case PatientName, SOPInstanceUID, SOPClassUID, PatientID, StudyInstanceUID, Rows, Columns, InstanceNumber:
		return true
	}
	return false
}

// TestScanPydicomFiles scans every pydicom test file and compares SOP
// Instance UID and Patient Name with pydicom. Files dcmdump cannot read
// either must make Scan fail cleanly.
func TestScanPydicomFiles(t *testing.T) {
	files := testFiles(t)
	or := pydicomOracle(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want := or[f]
			m, r, err := OpenFile(f)
			if err != nil {
				if want.OK {
					t.Fatalf("OpenFile: %v", err)
				}
				return
			}
			defer r.Close()
			ts := LookupTransferSyntax(m.TransferSyntaxUID)
			a, err := Scan(r, ts, wantBasic, 1<<16)
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Scan error does not wrap ErrMalformed: %v", err)
				}
				if clean, out := dcmdumpClean(t, f); clean {
					t.Fatalf("Scan: %v, but dcmdump reads the file:\n%s", err, out)
				}
				t.Logf("rejected as dcmdump does: %v", err)
				return
			}
			if !want.OK {
				// Scan read it, pydicom did not: no oracle to compare
				// with. No test file is so today; under CI one is a
				// failure.
				testci.SkipOrFail(t, "Scan reads it, pydicom cannot")
			}
			if got := a.String(SOPInstanceUID); got != want.SOP {
				t.Errorf("SOPInstanceUID = %q, pydicom %q", got, want.SOP)
			}
			if got := a.String(PatientName); got != want.Name {
				t.Errorf("PatientName = %q, pydicom %q", got, want.Name)
			}
			if m.NoMeta && m.MediaStorageSOPInstanceUID != want.SOP {
				t.Errorf("peeked SOP instance %q, want %q", m.MediaStorageSOPInstanceUID, want.SOP)
			}
		})
	}
}

func readTestFile(t testing.TB, name string) (*FileMeta, []byte) {
	t.Helper()
	files := testFiles(t)
	_ = files
	b, err := os.ReadFile(filepath.Join(pydicomData, "test_files", name))
	if err != nil {
		t.Fatal(err)
	}
	m, br, err := ReadFileHeader(bytes.NewReader(b), 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	return m, rest
}

// countingReader records how many bytes were read and whether EOF was seen.
type countingReader struct {
	r   io.Reader
	n   int64
	eof bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err == io.EOF {
		c.eof = true
	}
	return n, err
}

func TestScanConsumesAll(t *testing.T) {
	for _, name := range []string{"CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "JPEG2000.dcm", "nested_priv_SQ.dcm"} {
		t.Run(name, func(t *testing.T) {
			m, body := readTestFile(t, name)
			cr := &countingReader{r: bytes.NewReader(body)}
			if _, err := Scan(cr, LookupTransferSyntax(m.TransferSyntaxUID), wantBasic, 1024); err != nil {
				t.Fatal(err)
			}
			if cr.n != int64(len(body)) || !cr.eof {
				t.Fatalf("read %d of %d bytes (eof %v)", cr.n, len(body), cr.eof)
			}
		})
	}
}

func TestScanTruncated(t *testing.T) {
	for _, name := range []string{"CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "JPEG2000.dcm", "nested_priv_SQ.dcm", "rtplan.dcm"} {
		t.Run(name, func(t *testing.T) {
			m, body := readTestFile(t, name)
			ts := LookupTransferSyntax(m.TransferSyntaxUID)
			step := len(body)/97 + 1
			for cut := 1; cut < len(body); cut += step {
				_, err := Scan(bytes.NewReader(body[:cut]), ts, wantBasic, 1024)
				if err == nil {
					// A cut exactly at an element boundary is a valid,
					// shorter data set; only non-boundary cuts must fail.
					continue
				}
				if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrMalformed) {
					t.Fatalf("cut %d: %v", cut, err)
				}
			}
			// A cut in the middle of the last element's value always fails.
			cut := len(body) - 1
			if ts.Deflated {
				cut = len(body) / 2
			}
			_, err := Scan(bytes.NewReader(body[:cut]), ts, wantBasic, 1024)
			if ts.Deflated {
				if err == nil {
					t.Fatal("truncated deflate stream accepted")
				}
				return
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("want io.ErrUnexpectedEOF, got %v", err)
			}
		})
	}
}

func TestScanErrors(t *testing.T) {
	le := func(b ...byte) []byte { return b }
	tests := []struct {
		name string
		ts   *TransferSyntax
		in   []byte
		want error
		max  int
	}{
		{"bad VR", ExplicitVRLittleEndian, le(0x08, 0, 0x18, 0, 'u', 'i', 2, 0, '1', 0), ErrMalformed, 64},
		{"out of order", ExplicitVRLittleEndian, le(0x10, 0, 0x10, 0, 'P', 'N', 0, 0, 0x08, 0, 0x18, 0, 'U', 'I', 0, 0), ErrMalformed, 64},
		{"stray item", ImplicitVRLittleEndian, le(0xFE, 0xFF, 0, 0xE0, 0, 0, 0, 0), ErrMalformed, 64},
		{"too large wanted", ExplicitVRLittleEndian, le(0x10, 0, 0x10, 0, 'P', 'N', 4, 0, 'A', 'B', 'C', 'D'), ErrTooLarge, 2},
		{"huge length", ImplicitVRLittleEndian, le(0x10, 0, 0x10, 0, 0xF0, 0xFF, 0xFF, 0x7F), io.ErrUnexpectedEOF, 1 << 20},
		{"bad seq item", ImplicitVRLittleEndian, le(0x08, 0, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF, 0x10, 0, 0x10, 0, 0, 0, 0, 0), ErrMalformed, 64},
		{"short header", ExplicitVRLittleEndian, le(0x08, 0, 0x18), io.ErrUnexpectedEOF, 64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := func(Tag) bool { return true }
			if tc.want == io.ErrUnexpectedEOF {
				want = nil
			}
			_, err := Scan(bytes.NewReader(tc.in), tc.ts, want, tc.max)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestScanDepth nests sequences beyond MaxDepth.
func TestScanDepth(t *testing.T) {
	var b []byte
	for i := 0; i < MaxDepth+5; i++ {
		b = append(b, 0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF) // (0008,1115) SQ undefined
		b = append(b, 0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF) // item undefined
	}
	_, err := Scan(bytes.NewReader(b), ImplicitVRLittleEndian, nil, 64)
	if !errors.Is(err, ErrTooDeep) {
		t.Fatalf("got %v", err)
	}
}

func TestAttrs(t *testing.T) {
	_, body := readTestFile(t, "MR_small_bigendian.dcm")
	a, err := Scan(bytes.NewReader(body), ExplicitVRBigEndian, wantBasic, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := a.Int(Rows); !ok || r != 64 {
		t.Errorf("Rows = %d %v", r, ok)
	}
	if s := a.String(Columns); s != "64" {
		t.Errorf("Columns string = %q", s)
	}
	if a.CharsetUnsupported() {
		t.Error("charset unsupported")
	}
	if _, ok := a.Raw(Modality); ok {
		t.Error("unwanted tag kept")
	}
}

// synthCT builds an explicit VR LE CT-like data set of about n bytes of
// pixel data plus a realistic header with a nested sequence.
func synthCT(t testing.TB, pixels int) []byte {
	ds := &DataSet{}
	ds.Set(SpecificCharacterSet, "ISO_IR 100")
	ds.Set(SOPClassUID, "1.2.840.10008.5.1.4.1.1.2")
	ds.Set(SOPInstanceUID, "1.2.826.0.1.3680043.10.1432.99.1")
	ds.Set(StudyDate, "20240101")
	ds.Set(Modality, "CT")
	ds.Set(PatientName, "Doe^John")
	ds.Set(PatientID, "12345")
	ds.Set(StudyInstanceUID, "1.2.826.0.1.3680043.10.1432.99.2")
	ds.Set(SeriesInstanceUID, "1.2.826.0.1.3680043.10.1432.99.3")
	item := &DataSet{}
	item.Set(ReferencedSOPClassUID, "1.2.840.10008.5.1.4.1.1.2")
	item.Set(ReferencedSOPInstanceUID, "1.2.3.4")
	ds.Put(&Element{Tag: NewTag(0x0008, 0x1140), VR: "SQ", Items: []*DataSet{item, item}})
	for e := uint16(0x1000); e < 0x1100; e += 2 {
		ds.Put(&Element{Tag: NewTag(0x0019, e), VR: "LO", Value: []byte("private value   ")})
	}
	ds.Put(&Element{Tag: Rows, VR: "US", Value: []byte{0, 2}})
	ds.Put(&Element{Tag: Columns, VR: "US", Value: []byte{0, 2}})
	ds.Put(&Element{Tag: BitsAllocated, VR: "US", Value: []byte{16, 0}})
	px := make([]byte, pixels)
	for i := range px {
		px[i] = byte(i)
	}
	ds.Put(&Element{Tag: PixelData, VR: "OW", Value: px})
	b, err := ds.Bytes(ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func BenchmarkScan(b *testing.B) {
	data := synthCT(b, 512*1024)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	r := bytes.NewReader(data)
	for i := 0; i < b.N; i++ {
		r.Reset(data)
		a, err := Scan(r, ExplicitVRLittleEndian, wantBasic, 1024)
		if err != nil {
			b.Fatal(err)
		}
		if !strings.HasPrefix(a.String(PatientName), "Doe") {
			b.Fatal("bad name")
		}
	}
}

// TestScanLarge checks that a 1 GiB pixel data element is skipped with
// bounded memory (the reader synthesises the bytes).
func TestScanLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	head := synthCT(t, 0)
	// Replace the empty pixel data header with one announcing 1 GiB.
	n := int64(1 << 30)
	hdr := appendHeader(nil, coding{explicit: true}, PixelData, vrOW, uint32(n))
	head = head[:len(head)-12]
	r := io.MultiReader(bytes.NewReader(head), bytes.NewReader(hdr), io.LimitReader(zeroReader{}, n))
	a, err := Scan(r, ExplicitVRLittleEndian, wantBasic, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if a.String(PatientID) != "12345" {
		t.Fatalf("PatientID %q", a.String(PatientID))
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func BenchmarkScanImplicit(b *testing.B) {
	var buf bytes.Buffer
	if err := Transcode(&buf, bytes.NewReader(synthCT(b, 512*1024)), ExplicitVRLittleEndian, ImplicitVRLittleEndian); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	r := bytes.NewReader(data)
	for i := 0; i < b.N; i++ {
		r.Reset(data)
		if _, err := Scan(r, ImplicitVRLittleEndian, wantBasic, 1024); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScanStream reads through a plain io.Reader (as from a network
// connection), so bufio does real copying.
func BenchmarkScanStream(b *testing.B) {
	data := synthCT(b, 512*1024)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r := struct{ io.Reader }{bytes.NewReader(data)}
		if _, err := Scan(r, ExplicitVRLittleEndian, wantBasic, 1024); err != nil {
			b.Fatal(err)
		}
	}
}
