package dicom

import (
	"bytes"
	"errors"
	"testing"
)

// pixelDataSet is a small image whose Pixel Data is native or
// encapsulated, with, when icon is not "", an Icon Image Sequence item
// whose Pixel Data is "native" or "encapsulated".
func pixelDataSet(encapsulated bool, icon string) *DataSet {
	ds := &DataSet{}
	ds.Set(SOPClassUID, "1.2.840.10008.5.1.4.1.1.2")
	ds.Set(SOPInstanceUID, "1.2.3.4")
	pixel := func(enc bool) *Element {
		if enc {
			return &Element{Tag: PixelData, VR: "OB", Fragments: [][]byte{{}, {0xFF, 0xD8, 0xFF, 0xD9}}, Undefined: true}
		}
		return &Element{Tag: PixelData, VR: "OW", Value: make([]byte, 8)}
	}
	if icon != "" {
		item := &DataSet{}
		item.Put(pixel(icon == "encapsulated"))
		ds.Put(&Element{Tag: NewTag(0x0088, 0x0200), VR: "SQ", Items: []*DataSet{item}})
	}
	ds.Put(pixel(encapsulated))
	return ds
}

// TestPixelEncodingMatchesSyntax: Pixel Data of undefined length only
// under encapsulated syntaxes, and only of undefined length under them,
// at the top level and in icons (PS3.5 A.4; issue 14, item 18).
func TestPixelEncodingMatchesSyntax(t *testing.T) {
	jpeg2000 := LookupTransferSyntax("1.2.840.10008.1.2.4.91")
	rle := LookupTransferSyntax("1.2.840.10008.1.2.5")
	unknown := LookupTransferSyntax("1.2.826.0.1.3680043.10.9999.1")
	for _, tt := range []struct {
		name         string
		ts           *TransferSyntax
		encapsulated bool
		icon         string
		wantErr      bool
		nested       bool
	}{
		{"native on explicit LE", ExplicitVRLittleEndian, false, "", false, false},
		{"native on implicit LE", ImplicitVRLittleEndian, false, "native", false, false},
		{"native on big endian", ExplicitVRBigEndian, false, "", false, false},
		{"encapsulated on JPEG 2000", jpeg2000, true, "encapsulated", false, false},
		{"encapsulated on RLE", rle, true, "", false, false},
		{"encapsulated on explicit LE", ExplicitVRLittleEndian, true, "", true, false},
		{"encapsulated on implicit LE", ImplicitVRLittleEndian, true, "", true, false},
		{"encapsulated on deflated", DeflatedExplicitVRLittleEndian, true, "", true, false},
		{"native on JPEG 2000", jpeg2000, false, "", true, false},
		{"native on RLE", rle, false, "", true, false},
		{"encapsulated icon on explicit LE", ExplicitVRLittleEndian, false, "encapsulated", true, true},
		{"native icon on JPEG 2000", jpeg2000, true, "native", true, true},
		// A syntax Ward does not know: its form cannot be told.
		{"native on an unknown syntax", unknown, false, "", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := pixelDataSet(tt.encapsulated, tt.icon).Bytes(tt.ts)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Scan(bytes.NewReader(b), tt.ts, wantBasic, 1024)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var pe *PixelEncodingError
			if !errors.As(err, &pe) || !errors.Is(err, ErrPixelEncoding) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v, want a *PixelEncodingError", err)
			}
			if pe.Nested != tt.nested || pe.Encapsulated == tt.ts.Encapsulated || pe.Syntax != tt.ts.Name {
				t.Errorf("error %+v", pe)
			}
			// The other readers keep reading it (a stored object must
			// stay readable whatever it holds).
			if _, err := ReadDataSet(bytes.NewReader(b), tt.ts, 1<<20); err != nil {
				t.Errorf("ReadDataSet: %v", err)
			}
		})
	}
}

// TestUndefinedLengthOnlyForSequences: in explicit VR an undefined length
// on an element other than a sequence or Pixel Data is malformed under
// Scan.
func TestUndefinedLengthOnlyForSequences(t *testing.T) {
	ds := &DataSet{}
	ds.Set(SOPClassUID, "1.2.840.10008.5.1.4.1.1.2")
	ds.Put(&Element{Tag: NewTag(0x5400, 0x1010), VR: "OW", Fragments: [][]byte{{}, {1, 2}}, Undefined: true})
	b, err := ds.Bytes(ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Scan(bytes.NewReader(b), ExplicitVRLittleEndian, nil, 0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Scan: %v, want ErrMalformed", err)
	}
}
