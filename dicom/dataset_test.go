package dicom

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// normValue returns e's value in little endian.
func normValue(e *Element, big bool) []byte {
	if !big {
		return e.Value
	}
	b := append([]byte(nil), e.Value...)
	swapInPlace(b, swapSize(mkVR(e.VR)))
	return b
}

// equalDataSets compares element by element, values after byte order
// normalisation; group lengths are ignored.
func equalDataSets(a, b *DataSet, path string) error {
	strip := func(ds *DataSet) []*Element {
		var out []*Element
		for _, e := range ds.Elements {
			if e.Tag.Element() != 0 {
				out = append(out, e)
			}
		}
		return out
	}
	ea, eb := strip(a), strip(b)
	if len(ea) != len(eb) {
		return fmt.Errorf("%s: %d elements vs %d", path, len(ea), len(eb))
	}
	for i := range ea {
		x, y := ea[i], eb[i]
		p := path + "/" + x.Tag.String()
		if x.Tag != y.Tag {
			return fmt.Errorf("%s: tag %v vs %v", path, x.Tag, y.Tag)
		}
		if (x.Items != nil) != (y.Items != nil) {
			return fmt.Errorf("%s: sequence vs value", p)
		}
		if x.Items != nil {
			if len(x.Items) != len(y.Items) {
				return fmt.Errorf("%s: %d items vs %d", p, len(x.Items), len(y.Items))
			}
			for j := range x.Items {
				if err := equalDataSets(x.Items[j], y.Items[j], fmt.Sprintf("%s[%d]", p, j)); err != nil {
					return err
				}
			}
			continue
		}
		if len(x.Fragments) != len(y.Fragments) {
			return fmt.Errorf("%s: fragments differ", p)
		}
		for j := range x.Fragments {
			if !bytes.Equal(x.Fragments[j], y.Fragments[j]) {
				return fmt.Errorf("%s: fragment %d differs", p, j)
			}
		}
		if !bytes.Equal(normValue(x, a.big), normValue(y, b.big)) {
			return fmt.Errorf("%s: value %q (%s) vs %q (%s)", p, trunc(normValue(x, a.big)), x.VR, trunc(normValue(y, b.big)), y.VR)
		}
	}
	return nil
}

func trunc(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

// readableFiles returns the pydicom files whose data set Scan accepts,
// with their meta and data set bytes.
type testFile struct {
	name string
	meta *FileMeta
	ts   *TransferSyntax
	body []byte
}

func readableFiles(t *testing.T) []testFile {
	var out []testFile
	for _, f := range testFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, br, err := ReadFileHeader(bytes.NewReader(b), 1<<16)
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(br)
		ts := LookupTransferSyntax(m.TransferSyntaxUID)
		if _, err := Scan(bytes.NewReader(body), ts, nil, 0); err != nil {
			continue
		}
		out = append(out, testFile{filepath.Base(f), m, ts, body})
	}
	return out
}

func TestDataSetRoundTrip(t *testing.T) {
	for _, f := range readableFiles(t) {
		t.Run(f.name, func(t *testing.T) {
			a, err := ReadDataSet(bytes.NewReader(f.body), f.ts, 1<<26)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := WriteDataSet(&buf, a, f.ts); err != nil {
				t.Fatal(err)
			}
			b, err := ReadDataSet(bytes.NewReader(buf.Bytes()), f.ts, 1<<26)
			if err != nil {
				t.Fatalf("re-read: %v", err)
			}
			if err := equalDataSets(a, b, ""); err != nil {
				t.Fatal(err)
			}
			again, err := b.Bytes(f.ts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, buf.Bytes()) && !f.ts.Deflated {
				t.Fatal("second write differs from first")
			}
		})
	}
}

func TestReadDataSetLimit(t *testing.T) {
	_, body := readTestFile(t, "CT_small.dcm")
	_, err := ReadDataSet(bytes.NewReader(body), ExplicitVRLittleEndian, 1000)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v", err)
	}
	ds, err := ReadDataSet(bytes.NewReader(body), ExplicitVRLittleEndian, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if got := ds.String(PatientName); got != "CompressedSamples^CT1" {
		t.Fatalf("PatientName %q", got)
	}
	if n, ok := ds.Int(Rows); !ok || n != 128 {
		t.Fatalf("Rows %d", n)
	}
}

func TestDataSetPutDelete(t *testing.T) {
	ds := &DataSet{}
	ds.Set(PatientName, "B")
	ds.Set(SOPInstanceUID, "1.2.3")
	ds.Set(PatientID, "X")
	if ds.Elements[0].Tag != SOPInstanceUID || ds.Elements[2].Tag != PatientID {
		t.Fatalf("not sorted: %v %v %v", ds.Elements[0].Tag, ds.Elements[1].Tag, ds.Elements[2].Tag)
	}
	if v := ds.Get(SOPInstanceUID).Value; string(v) != "1.2.3\x00" {
		t.Fatalf("UI padding: %q", v)
	}
	ds.Delete(PatientName)
	if ds.Get(PatientName) != nil || len(ds.Elements) != 2 {
		t.Fatal("delete failed")
	}
}
