package deid

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/ward-pacs/ward/dicom"
)

const (
	explicitLE = "1.2.840.10008.1.2.1"
	implicitLE = "1.2.840.10008.1.2"
)

// part10 encodes ds as a Part 10 object in the transfer syntax ts.
func part10(t *testing.T, ds *dicom.DataSet, ts string) []byte {
	t.Helper()
	body, err := ds.Bytes(dicom.LookupTransferSyntax(ts))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	m := &dicom.FileMeta{MediaStorageSOPClassUID: ds.String(tagSOPClass), MediaStorageSOPInstanceUID: ds.String(tagSOPInstance), TransferSyntaxUID: ts}
	if err := dicom.WriteFileHeader(&b, m); err != nil {
		t.Fatal(err)
	}
	b.Write(body)
	return b.Bytes()
}

// baseCT is a CT data set with a patient and no burned-in annotation.
func baseCT() *dicom.DataSet {
	ds := &dicom.DataSet{}
	ds.Set(tagSOPClass, "1.2.840.10008.5.1.4.1.1.2")
	ds.Set(tagSOPInstance, "1.2.3.4")
	ds.Set(tagPatientName, "Doe^Jane")
	ds.Set(tagPatientID, "PID123")
	ds.Set(dicom.Modality, "CT")
	ds.Set(tagBurnedIn, "NO")
	return ds
}

func deidentify(t *testing.T, in []byte, prof string) ([]byte, *Result) {
	t.Helper()
	var out bytes.Buffer
	res, err := Transform(&out, bytes.NewReader(in), &Config{Profile: mustProfile(t, prof), Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), res
}

// TestNewerAttributes: attributes Table E.1-1 gained after 2020c (the
// edition Ward's table followed before) are de-identified as the 2024b
// table says, in explicit and implicit VR (where Ward's dictionary may not
// know them: their VR is then UN). Under the 2020c table they passed
// through unchanged.
func TestNewerAttributes(t *testing.T) {
	var (
		acquisitionUID = dicom.NewTag(0x0008, 0x0017) // U
		pyramidDesc    = dicom.NewTag(0x0008, 0x1088) // X, C under clean-descriptors
		stationAE      = dicom.NewTag(0x0008, 0x0055) // X, C under device-identity
		issuerSubject  = dicom.NewTag(0x0012, 0x0041) // X
		reqSeriesDesc  = dicom.NewTag(0x0018, 0x9937) // X
		creationDate   = dicom.NewTag(0x0008, 0x0012) // X/D, C under modified-dates
	)
	if tableIndex.rowFor(acquisitionUID) == nil || tableIndex.rowFor(pyramidDesc) == nil {
		t.Fatal("the 2024b rows are not in the table")
	}
	ds := baseCT()
	ds.Put(&dicom.Element{Tag: acquisitionUID, VR: "UI", Value: []byte("1.2.826.0.1.99\x00")})
	ds.Put(&dicom.Element{Tag: pyramidDesc, VR: "LO", Value: []byte("pyramid of Doe ")})
	ds.Put(&dicom.Element{Tag: stationAE, VR: "AE", Value: []byte("DOE_WORKSTN ")})
	ds.Put(&dicom.Element{Tag: issuerSubject, VR: "LO", Value: []byte("St Jude Trial Office")})
	ds.Put(&dicom.Element{Tag: reqSeriesDesc, VR: "LO", Value: []byte("for Dr Jones")})
	ds.Put(&dicom.Element{Tag: creationDate, VR: "DA", Value: []byte("20240105")})
	wantUID := UIDFor(testSecret, "1.2.826.0.1.99")
	for _, ts := range []string{explicitLE, implicitLE} {
		out, _ := deidentify(t, part10(t, ds, ts), "basic")
		for _, s := range []string{"1.2.826.0.1.99", "Doe", "DOE", "Jude", "Jones", "20240105"} {
			if bytes.Contains(out, []byte(s)) {
				t.Errorf("%s: %q left in the output", ts, s)
			}
		}
		got := readOut(t, out)
		for _, tag := range []dicom.Tag{pyramidDesc, stationAE, issuerSubject, reqSeriesDesc} {
			if e := got.Get(tag); e != nil {
				t.Errorf("%s: %v kept (X)", ts, tag)
			}
		}
		if e := got.Get(acquisitionUID); e == nil || string(bytes.TrimRight(e.Value, "\x00")) != wantUID {
			t.Errorf("%s: Acquisition UID %+v, want %s", ts, e, wantUID)
		}
	}
	// Under the options, the 2024b columns apply: C keeps a clean
	// descriptor and station AE title, the creation date is shifted.
	clean := baseCT()
	clean.Put(&dicom.Element{Tag: pyramidDesc, VR: "LO", Value: []byte("level 3 ")})
	clean.Put(&dicom.Element{Tag: stationAE, VR: "AE", Value: []byte("CT_ROOM_2 ")})
	clean.Put(&dicom.Element{Tag: creationDate, VR: "DA", Value: []byte("20240105")})
	out, res := deidentify(t, part10(t, clean, explicitLE), "basic,clean-descriptors,device-identity,modified-dates")
	got := readOut(t, out)
	if v := got.String(pyramidDesc); v != "level 3" {
		t.Errorf("Pyramid Description under clean-descriptors: %q", v)
	}
	if v := got.String(stationAE); v != "CT_ROOM_2" {
		t.Errorf("Station AE Title under device-identity: %q", v)
	}
	if v, want := got.String(creationDate), shifted(t, "20240105", res.DateShiftDays); v != want {
		t.Errorf("Instance Creation Date under modified-dates: %q, want %q", v, want)
	}
}

func shifted(t *testing.T, da string, days int) string {
	t.Helper()
	d, err := time.Parse("20060102", da)
	if err != nil {
		t.Fatal(err)
	}
	return d.AddDate(0, 0, days).Format("20060102")
}

// TestSafePrivateSequence: a sequence Table E.3.10-1 names safe is kept
// under Retain Safe Private only when it was read as a sequence, its items
// de-identified in turn; sent as an opaque value (UN of defined length, or
// implicit VR, where a private attribute's VR is unknown) its items cannot
// be, so it goes. A safe private attribute sent with another VR than the
// table's is not the attribute the standard judged safe, and goes too.
func TestSafePrivateSequence(t *testing.T) {
	const creator = "Philips Imaging DD 001"
	var (
		creatorTag = dicom.NewTag(0x2001, 0x0010)
		safeSeq    = dicom.NewTag(0x2001, 0x105F) // (2001,xx5F) SQ
		safeDS     = dicom.NewTag(0x0019, 0x1023) // GEMS_ACQU_01 (0019,xx23) DS
	)
	if tableIndex.safe[safeKey{0x2001, 0x5F, creator}] != "SQ" {
		t.Fatal("(2001,xx5F) is not a safe private sequence in the table")
	}
	// The item as raw bytes (implicit VR little endian, defined length):
	// (0010,0010) Patient's Name "Doe^Jane".
	var item bytes.Buffer
	inner := []byte{0x10, 0x00, 0x10, 0x00, 8, 0, 0, 0}
	inner = append(inner, "Doe^Jane"...)
	item.Write([]byte{0xFE, 0xFF, 0x00, 0xE0})
	binary.Write(&item, binary.LittleEndian, uint32(len(inner)))
	item.Write(inner)

	seqDS := baseCT()
	seqDS.Put(&dicom.Element{Tag: creatorTag, VR: "LO", Value: []byte(creator)})
	nested := &dicom.DataSet{}
	nested.Set(tagPatientName, "Doe^Jane")
	nested.Put(&dicom.Element{Tag: dicom.NewTag(0x0018, 0x0050), VR: "DS", Value: []byte("2.5 ")})
	seqDS.Put(&dicom.Element{Tag: safeSeq, VR: "SQ", Items: []*dicom.DataSet{nested}})
	out, _ := deidentify(t, part10(t, seqDS, explicitLE), "basic,safe-private")
	if bytes.Contains(out, []byte("Doe")) {
		t.Errorf("a safe private sequence: identity left in its item")
	}
	got := readOut(t, out)
	if e := got.Get(safeSeq); e == nil || len(e.Items) != 1 || e.Items[0].String(dicom.NewTag(0x0018, 0x0050)) != "2.5" {
		t.Errorf("a safe private sequence read as one: %+v, want it kept with its item de-identified", e)
	}

	for _, ts := range []string{explicitLE, implicitLE} {
		ds := baseCT()
		ds.Put(&dicom.Element{Tag: creatorTag, VR: "LO", Value: []byte(creator)})
		ds.Put(&dicom.Element{Tag: safeSeq, VR: "UN", Value: item.Bytes()})
		ds.Put(&dicom.Element{Tag: dicom.NewTag(0x0019, 0x0010), VR: "LO", Value: []byte("GEMS_ACQU_01")})
		if ts == explicitLE {
			ds.Put(&dicom.Element{Tag: safeDS, VR: "LO", Value: []byte("Doe^John")})
		}
		out, _ := deidentify(t, part10(t, ds, ts), "basic,safe-private")
		if bytes.Contains(out, []byte("Doe")) {
			t.Errorf("%s: identity left in an opaque safe private sequence or a mistyped safe attribute", ts)
		}
		got := readOut(t, out)
		if got.Get(safeSeq) != nil || got.Get(safeDS) != nil {
			t.Errorf("%s: opaque sequence or mistyped attribute kept", ts)
		}
	}
}

// TestUnknownVRDates: under modified-dates, a date of a row sent as UN
// (by a sender whose dictionary lacks it) is shifted like any other date, and a
// time or other value that does not read as a date is emptied; cleaned as
// text (C), it stayed as it was.
func TestUnknownVRDates(t *testing.T) {
	var (
		manufacture = dicom.NewTag(0x0018, 0x1204) // Date of Manufacture: X, C under modified-dates
		selectorTM  = dicom.NewTag(0x0072, 0x006B) // Selector TM Value: D, C under modified-dates
	)
	// Sent as UN in explicit VR (by a sender whose dictionary lacks
	// them, forwarding what it received in implicit VR), whatever
	// Ward's own dictionary knows.
	ds := baseCT()
	ds.Put(&dicom.Element{Tag: manufacture, VR: "UN", Value: []byte("20190611")})
	ds.Put(&dicom.Element{Tag: selectorTM, VR: "UN", Value: []byte("101010")})
	in := part10(t, ds, explicitLE)
	out, res := deidentify(t, in, "basic,modified-dates")
	got := readOut(t, out)
	if v, want := string(bytes.TrimRight(got.Get(manufacture).Value, " ")), shifted(t, "20190611", res.DateShiftDays); v != want {
		t.Errorf("Date of Manufacture (UN) under modified-dates: %q, want %q", v, want)
	}
	if e := got.Get(selectorTM); e == nil || len(bytes.TrimRight(e.Value, " ")) != 0 {
		t.Errorf("Selector TM Value (UN) under modified-dates: %+v, want it empty", e)
	}
	out, _ = deidentify(t, in, "basic,full-dates")
	got = readOut(t, out)
	if v := string(bytes.TrimRight(got.Get(manufacture).Value, " ")); v != "20190611" {
		t.Errorf("Date of Manufacture (UN) under full-dates: %q", v)
	}
}

// TestSafetyNets: a standard attribute even the 2024b table does not list
// (here made-up tags of an even group) is still handled by its VR: a
// person's name is removed, a date treated as the listed dates are.
func TestSafetyNets(t *testing.T) {
	var (
		name = dicom.NewTag(0x0018, 0xF000)
		date = dicom.NewTag(0x0018, 0xF001)
	)
	if tableIndex.rowFor(name) != nil || tableIndex.rowFor(date) != nil {
		t.Fatal("the made-up tags are in the table")
	}
	ds := baseCT()
	ds.Put(&dicom.Element{Tag: name, VR: "PN", Value: []byte("Roe^Richard ")})
	ds.Put(&dicom.Element{Tag: date, VR: "DA", Value: []byte("20190611")})
	in := part10(t, ds, explicitLE)
	for _, c := range []struct{ prof, date string }{
		{"basic", "19000101"}, {"basic,full-dates", "20190611"}, {"basic,modified-dates", ""},
	} {
		out, res := deidentify(t, in, c.prof)
		got := readOut(t, out)
		if got.Get(name) != nil {
			t.Errorf("%s: an unlisted person name kept", c.prof)
		}
		want := c.date
		if want == "" {
			want = shifted(t, "20190611", res.DateShiftDays)
		}
		if v := got.String(date); v != want {
			t.Errorf("%s: an unlisted date %q, want %q", c.prof, v, want)
		}
	}
}
