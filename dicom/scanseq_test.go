package dicom

import (
	"bytes"
	"errors"
	"testing"
)

const (
	tagProcedureCodeSequence  Tag = 0x00081032
	tagCodeValue              Tag = 0x00080100
	tagCodingSchemeDesignator Tag = 0x00080102
	tagCodeMeaning            Tag = 0x00080104
)

// codeItem is one item of a code sequence, with a nested sequence that
// ScanWith must skip.
func codeItem(value, scheme, meaning string) *DataSet {
	it := &DataSet{}
	it.Set(tagCodeValue, value)
	it.Set(tagCodingSchemeDesignator, scheme)
	it.SetIn([]string{"ISO_IR 100"}, tagCodeMeaning, meaning) // the charset of the enclosing data set
	nested := &DataSet{}
	nested.Set(tagCodeValue, "NESTED")
	it.Put(&Element{Tag: 0x00080220, VR: "SQ", Items: []*DataSet{nested}}) // Coding Scheme Identification Sequence
	return it
}

func seqDataSet(charset string, items ...*DataSet) *DataSet {
	ds := &DataSet{}
	if charset != "" {
		ds.Set(SpecificCharacterSet, charset)
	}
	ds.Set(PatientName, "Doe^John")
	ds.Put(&Element{Tag: tagProcedureCodeSequence, VR: "SQ", Items: items})
	ds.Set(SOPInstanceUID, "1.2.3")
	return ds
}

func keepCodes(seq Tag) func(Tag) bool {
	if seq != tagProcedureCodeSequence {
		return nil
	}
	return func(t Tag) bool { return t == tagCodeValue || t == tagCodeMeaning }
}

func TestScanWithSequences(t *testing.T) {
	for _, ts := range []*TransferSyntax{ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian} {
		t.Run(ts.Name, func(t *testing.T) {
			ds := seqDataSet("ISO_IR 100", codeItem("CT123", "LOCAL", "CT Thorax"), codeItem("MR9", "99X", "Kopf Übersicht"))
			b, err := ds.Bytes(ts)
			if err != nil {
				t.Fatal(err)
			}
			a, err := ScanWith(bytes.NewReader(b), ts, wantBasic, 1<<10, &KeepSequences{Item: keepCodes})
			if err != nil {
				t.Fatal(err)
			}
			items := a.Items(tagProcedureCodeSequence)
			if len(items) != 2 {
				t.Fatalf("items = %v", items)
			}
			want := []map[Tag]string{
				{tagCodeValue: "CT123", tagCodeMeaning: "CT Thorax"},
				{tagCodeValue: "MR9", tagCodeMeaning: "Kopf Übersicht"},
			}
			for i := range want {
				if len(items[i]) != len(want[i]) {
					t.Errorf("item %d = %v, want %v", i, items[i], want[i])
				}
				for k, v := range want[i] {
					if items[i][k] != v {
						t.Errorf("item %d %v = %q, want %q", i, k, items[i][k], v)
					}
				}
			}
			if a.String(SOPInstanceUID) != "1.2.3" || a.String(PatientName) != "Doe^John" {
				t.Errorf("top-level attributes lost: %q %q", a.String(SOPInstanceUID), a.String(PatientName))
			}
			// Scan keeps no sequence.
			a, err = Scan(bytes.NewReader(b), ts, wantBasic, 1<<10)
			if err != nil {
				t.Fatal(err)
			}
			if a.Items(tagProcedureCodeSequence) != nil {
				t.Error("Scan kept a sequence")
			}
		})
	}
}

func TestScanWithSequenceBounds(t *testing.T) {
	var items []*DataSet
	for range 10 {
		items = append(items, codeItem("CODE", "S", "0123456789"))
	}
	b, err := seqDataSet("", items...).Bytes(ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ScanWith(bytes.NewReader(b), ExplicitVRLittleEndian, nil, 0, &KeepSequences{Item: keepCodes, MaxItems: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Items(tagProcedureCodeSequence); len(got) != 3 {
		t.Errorf("MaxItems 3: %d items kept", len(got))
	}
	// 14 bytes per item ("CODE" + "0123456789"): a budget of 32 keeps two
	// items whole and nothing of the third, whose meaning does not fit.
	a, err = ScanWith(bytes.NewReader(b), ExplicitVRLittleEndian, nil, 0, &KeepSequences{Item: keepCodes, MaxBytes: 32})
	if err != nil {
		t.Fatal(err)
	}
	got := a.Items(tagProcedureCodeSequence)
	if len(got) != 10 || len(got[0]) != 2 || len(got[1]) != 2 || len(got[2]) != 1 || len(got[3]) != 0 {
		t.Errorf("MaxBytes 32: %v", got)
	}
	// Truncated input fails as Scan does.
	_, err = ScanWith(bytes.NewReader(b[:len(b)-20]), ExplicitVRLittleEndian, nil, 0, &KeepSequences{Item: keepCodes})
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("truncated: %v", err)
	}
}

// TestScanWithoutSequencesAllocs guards the C-STORE hot path: keeping
// sequences costs nothing when the object has none of them.
func TestScanWithoutSequencesAllocs(t *testing.T) {
	ds := &DataSet{}
	ds.Set(PatientName, "Doe^John")
	ds.Set(SOPInstanceUID, "1.2.3")
	b, err := ds.Bytes(ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	keep := &KeepSequences{Item: keepCodes}
	plain := testing.AllocsPerRun(100, func() { Scan(bytes.NewReader(b), ExplicitVRLittleEndian, wantBasic, 1<<10) })
	with := testing.AllocsPerRun(100, func() { ScanWith(bytes.NewReader(b), ExplicitVRLittleEndian, wantBasic, 1<<10, keep) })
	if with > plain {
		t.Errorf("ScanWith allocates %v times, Scan %v", with, plain)
	}
}
