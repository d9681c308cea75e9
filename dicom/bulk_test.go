package dicom

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// bulkFixture is a data set with bulk values at the top level and in a
// sequence item, and the values by path.
func bulkFixture(t *testing.T, ts *TransferSyntax) ([]byte, map[string][]byte) {
	t.Helper()
	big := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	item := &DataSet{}
	item.Put(&Element{Tag: NewTag(0x0042, 0x0011), VR: "OB", Value: big(2048, 7)}) // bulk inside an item
	item.Put(&Element{Tag: NewTag(0x0018, 0x1074), VR: "OB", Value: []byte{1, 2}})
	ds := &DataSet{}
	ds.Set(SpecificCharacterSet, "ISO_IR 192")
	ds.Set(PatientName, "Müller^Jürgen")
	ds.Put(&Element{Tag: NewTag(0x0029, 0x0010), VR: "LO", Value: []byte("PRIV")})
	ds.Put(&Element{Tag: NewTag(0x0029, 0x1010), VR: "OB", Value: big(1024, 3)}) // at the threshold: inline
	ds.Put(&Element{Tag: NewTag(0x0029, 0x1011), VR: "OB", Value: big(1026, 4)}) // above: bulk
	ds.Put(&Element{Tag: NewTag(0x0054, 0x0016), VR: "SQ", Items: []*DataSet{{}, item}})
	ds.Put(&Element{Tag: BitsAllocated, VR: "US", Value: []byte{8, 0}})
	ds.Put(&Element{Tag: PixelData, VR: "OB", Value: big(64, 9)}) // small, bulk still
	b, err := ds.Bytes(ts)
	if err != nil {
		t.Fatal(err)
	}
	return b, map[string][]byte{
		"00291011":            big(1026, 4),
		"00540016/1/00420011": big(2048, 7),
		"7FE00010":            big(64, 9),
	}
}

func TestReadMetadataLeavesBulk(t *testing.T) {
	for _, ts := range []*TransferSyntax{ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian} {
		t.Run(ts.UID, func(t *testing.T) {
			raw, want := bulkFixture(t, ts)
			// The limit covers what is kept, not the bulk values.
			ds, err := ReadMetadata(bytes.NewReader(raw), ts, 2000, 0)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := ds.AppendMetadataJSON(&b, "<bulk>"); err != nil {
				t.Fatal(err)
			}
			var obj map[string]map[string]any
			if err := json.Unmarshal(b.Bytes(), &obj); err != nil {
				t.Fatalf("%v: %s", err, b.String())
			}
			for path := range want {
				if !strings.Contains(b.String(), `"BulkDataURI":"<bulk>/`+path+`"`) {
					t.Errorf("no BulkDataURI for %s in %s", path, b.String())
				}
			}
			if _, ok := obj["00291010"]["InlineBinary"]; !ok {
				t.Errorf("a value at the threshold is inline: %v", obj["00291010"])
			}
			if pn := obj["00100010"]["Value"].([]any)[0].(map[string]any)["Alphabetic"]; pn != "Müller^Jürgen" {
				t.Errorf("PatientName = %v", pn)
			}
			for path, v := range want {
				p, err := ParseBulkPath(path)
				if err != nil {
					t.Fatal(err)
				}
				var got []byte
				err = ReadBulk(bytes.NewReader(raw), ts, p, 2000, 0, func(e *Element, r io.Reader) error {
					if e.BulkLength != int64(len(v)) {
						t.Errorf("%s: BulkLength %d", path, e.BulkLength)
					}
					got, err = io.ReadAll(r)
					return err
				})
				if err != nil || !bytes.Equal(got, v) {
					t.Errorf("ReadBulk(%s) = %d bytes, %v", path, len(got), err)
				}
			}
			for _, path := range []string{"00100010", "00291010", "00540016/5/00420011", "00540016"} {
				p, _ := ParseBulkPath(path)
				err := ReadBulk(bytes.NewReader(raw), ts, p, 2000, 0, func(*Element, io.Reader) error { return nil })
				if !errors.Is(err, ErrNoBulk) {
					t.Errorf("ReadBulk(%s): %v, want ErrNoBulk", path, err)
				}
			}
			if _, err := ReadMetadata(bytes.NewReader(raw), ts, 100, 0); !errors.Is(err, ErrTooLarge) {
				t.Errorf("limit: %v", err)
			}
		})
	}
}

func TestReadBulkEncapsulated(t *testing.T) {
	ds := &DataSet{}
	ds.Put(&Element{Tag: PixelData, VR: "OB", Fragments: [][]byte{{}, {1, 2, 3, 4}}})
	ts := LookupTransferSyntax("1.2.840.10008.1.2.4.50")
	raw, err := ds.Bytes(ts)
	if err != nil {
		t.Fatal(err)
	}
	md, err := ReadMetadata(bytes.NewReader(raw), ts, 1<<10, 0)
	if err != nil || !md.Get(PixelData).Bulk || md.Get(PixelData).BulkLength != -1 {
		t.Fatalf("ReadMetadata: %v %+v", err, md.Get(PixelData))
	}
	err = ReadBulk(bytes.NewReader(raw), ts, []uint32{uint32(PixelData)}, 1<<10, 0, func(*Element, io.Reader) error { return nil })
	if !errors.Is(err, ErrBulkEncapsulated) {
		t.Fatalf("ReadBulk: %v", err)
	}
}

func TestBulkPath(t *testing.T) {
	for _, s := range []string{"7FE00010", "00540016/0/00181072", "00540016/12/00081111/3/7FE00010"} {
		p, err := ParseBulkPath(s)
		if err != nil || FormatBulkPath(p) != s {
			t.Errorf("%s: %v %v", s, p, err)
		}
	}
	for _, s := range []string{"", "7FE0001", "7FE00010/0", "7FE00010//00100010", "xx/0/00100010", "00540016/01/00181072", "00540016/-1/00181072", "00540016/0/7fe0001g", strings.Repeat("00540016/0/", 40) + "7FE00010"} {
		if _, err := ParseBulkPath(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v", s, err)
		}
	}
}

// FuzzReadMetadata: what ReadMetadata accepts, ReadDataSet accepts too,
// and its JSON is valid; every BulkDataURI it writes can be read back.
func FuzzReadMetadata(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, tsi uint8) {
		ts := fuzzTS(tsi)
		ds, err := ReadMetadata(bytes.NewReader(data), ts, 1<<20, 16)
		checkErr(t, err)
		if err != nil {
			return
		}
		var b bytes.Buffer
		if err := ds.AppendMetadataJSON(&b, "x"); err != nil {
			return
		}
		var obj map[string]any
		if err := json.Unmarshal(b.Bytes(), &obj); err != nil {
			t.Fatalf("invalid JSON: %v", err)
		}
		for _, s := range strings.Split(b.String(), `"BulkDataURI":"x/`)[1:] {
			p, err := ParseBulkPath(s[:strings.IndexByte(s, '"')])
			if err != nil {
				t.Fatalf("path: %v", err)
			}
			err = ReadBulk(bytes.NewReader(data), ts, p, 1<<20, 16, func(*Element, io.Reader) error { return nil })
			if err != nil && !errors.Is(err, ErrBulkEncapsulated) {
				t.Fatalf("ReadBulk %s: %v", FormatBulkPath(p), err)
			}
		}
	})
}

// FuzzParseBulkPath: a path from a request is parsed or refused with
// ErrMalformed, and what is parsed is written back the same.
func FuzzParseBulkPath(f *testing.F) {
	for _, s := range []string{"7FE00010", "00540016/0/00181072", "0040A730/12/00420011", "7fe00010", "x", "00540016//1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseBulkPath(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if len(p) > maxBulkPath {
			t.Fatalf("%d steps", len(p))
		}
		if back := FormatBulkPath(p); !strings.EqualFold(back, s) {
			t.Fatalf("%q parsed and written back as %q", s, back)
		}
	})
}
