package archive_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
)

// qrObject is a small synthetic object for query/retrieve tests.
type qrObject struct {
	patientID, name, study, series, inst, modality, date string
}

func (o qrObject) object(t testing.TB) *object {
	t.Helper()
	ds := &dicom.DataSet{}
	ds.Set(dicom.SpecificCharacterSet, "ISO_IR 192")
	ds.Set(dicom.SOPClassUID, ctImageStorage)
	ds.Set(dicom.SOPInstanceUID, o.inst)
	ds.Set(dicom.StudyDate, o.date)
	ds.Set(dicom.AccessionNumber, "ACC-"+o.study[len(o.study)-1:])
	ds.Set(dicom.Modality, o.modality)
	ds.Set(dicom.PatientName, o.name)
	ds.Set(dicom.PatientID, o.patientID)
	ds.Set(dicom.StudyInstanceUID, o.study)
	ds.Set(dicom.SeriesInstanceUID, o.series)
	ds.Set(dicom.InstanceNumber, o.inst[len(o.inst)-1:])
	return &object{class: ctImageStorage, inst: o.inst, ds: ds}
}

const (
	studyA = "1.2.826.0.1.3680043.10.1432.50.1"
	studyB = "1.2.826.0.1.3680043.10.1432.50.2"
	studyC = "1.2.826.0.1.3680043.10.1432.50.3"
)

var qrObjects = []qrObject{
	{"P1", "Doe^John", studyA, studyA + ".1", studyA + ".1.1", "CT", "20200101"},
	{"P1", "Doe^John", studyA, studyA + ".1", studyA + ".1.2", "CT", "20200101"},
	{"P1", "Doe^John", studyA, studyA + ".2", studyA + ".2.1", "MR", "20200101"},
	{"P2", "Dürer^Albrecht", studyB, studyB + ".1", studyB + ".1.1", "CR", "20210505"},
	{"P3", "山田^太郎", studyC, studyC + ".1", studyC + ".1.1", "US", "20220606"},
}

func qrFixture(t testing.TB) *fixture {
	t.Helper()
	f := newFixture(t, "")
	for _, o := range qrObjects {
		obj := o.object(t)
		if err := f.store(obj, obj.bytes(t)); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// ident builds an identifier from keyword=value pairs ("" values are
// return keys); the first pair may be SpecificCharacterSet.
func ident(t testing.TB, kv ...string) *dicom.DataSet {
	t.Helper()
	ds := &dicom.DataSet{}
	for i := 0; i < len(kv); i += 2 {
		tag, ok := dicom.TagByKeyword(kv[i])
		if !ok {
			t.Fatalf("unknown keyword %s", kv[i])
		}
		if kv[i+1] == "" {
			ds.Put(&dicom.Element{Tag: tag, VR: dicom.VROf(tag)})
			continue
		}
		ds.Set(tag, kv[i+1])
	}
	return ds
}

// bulk is the context of the matching tests: a requestor with the
// bulk-query permission (the rule itself is tested in reach_test.go).
var bulk = archive.WithPrincipal(context.Background(), &archive.Principal{Grant: archive.Permissions{archive.PermBulkQuery: true}})

func find(t *testing.T, f *fixture, sopClass string, id *dicom.DataSet) ([]*dicom.DataSet, *dimse.FindRequest, error) {
	t.Helper()
	return findAs(t, f, bulk, sopClass, id)
}

// findAs is find with the requestor's Access in ctx.
func findAs(t *testing.T, f *fixture, ctx context.Context, sopClass string, id *dicom.DataSet) ([]*dicom.DataSet, *dimse.FindRequest, error) {
	t.Helper()
	r := &dimse.FindRequest{Request: dimse.Request{Assoc: f.assoc}, SOPClassUID: sopClass, Identifier: id,
		TransferSyntax: dicom.ExplicitVRLittleEndian}
	var out []*dicom.DataSet
	err := f.fe().Find(ctx, r, func(m *dicom.DataSet) error {
		// Round-trip through the wire encoding, as the dispatcher does.
		b, err := m.Bytes(dicom.ExplicitVRLittleEndian)
		if err != nil {
			return err
		}
		ds, err := dicom.ReadDataSet(bytes.NewReader(b), dicom.ExplicitVRLittleEndian, 1<<20)
		if err != nil {
			return err
		}
		out = append(out, ds)
		return nil
	})
	return out, r, err
}

func tags(ds *dicom.DataSet) []string {
	var s []string
	for _, e := range ds.Elements {
		s = append(s, dicom.Keyword(e.Tag))
	}
	return s
}

func TestFindStudyReturnsRequestedKeys(t *testing.T) {
	f := qrFixture(t)
	id := ident(t, "QueryRetrieveLevel", "STUDY", "PatientName", "doe*", "PatientID", "",
		"StudyInstanceUID", "", "ModalitiesInStudy", "", "NumberOfStudyRelatedInstances", "",
		"NumberOfStudyRelatedSeries", "", "PatientAge", "", "StudyDate", "")
	ms, r, err := find(t, f, dimse.StudyRootFind, id)
	if err != nil {
		t.Fatal(err)
	}
	if r.PendingWarning {
		t.Error("PendingWarning set without unsupported matching keys")
	}
	if len(ms) != 1 {
		t.Fatalf("%d matches, want 1", len(ms))
	}
	m := ms[0]
	want := []string{"QueryRetrieveLevel", "RetrieveAETitle", "StudyDate", "PatientName", "PatientID", "PatientAge",
		"StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"}
	if got := tags(m); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
		t.Errorf("response attributes %v, want %v", got, want)
	}
	for kw, v := range map[string]string{
		"QueryRetrieveLevel": "STUDY", "RetrieveAETitle": "WARD", "PatientName": "Doe^John", "PatientID": "P1",
		"StudyInstanceUID": studyA, "ModalitiesInStudy": `CT\MR`, "NumberOfStudyRelatedSeries": "2",
		"NumberOfStudyRelatedInstances": "3", "StudyDate": "20200101", "PatientAge": "",
	} {
		tag, _ := dicom.TagByKeyword(kw)
		if got := m.String(tag); got != v {
			t.Errorf("%s = %q, want %q", kw, got, v)
		}
	}
	if m.Get(dicom.SpecificCharacterSet) != nil {
		t.Error("Specific Character Set in an ASCII response to a request without one")
	}
}

func TestFindLevels(t *testing.T) {
	f := qrFixture(t)
	for _, c := range []struct {
		name     string
		sopClass string
		id       []string
		want     []string // values of the level's unique key
	}{
		{"patient root PATIENT", dimse.PatientRootFind, []string{"QueryRetrieveLevel", "PATIENT", "PatientID", ""}, []string{"P1", "P2", "P3"}},
		{"patient root STUDY under a patient", dimse.PatientRootFind, []string{"QueryRetrieveLevel", "STUDY", "PatientID", "P1", "StudyInstanceUID", ""}, []string{studyA}},
		{"study root STUDY by date range", dimse.StudyRootFind, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "20210101-", "StudyInstanceUID", ""}, []string{studyB, studyC}},
		{"study root STUDY by open low range", dimse.StudyRootFind, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "-20201231", "StudyInstanceUID", ""}, []string{studyA}},
		{"study root STUDY by UID list", dimse.StudyRootFind, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyA + `\` + studyC}, []string{studyA, studyC}},
		{"study root STUDY by ModalitiesInStudy", dimse.StudyRootFind, []string{"QueryRetrieveLevel", "STUDY", "ModalitiesInStudy", "MR", "StudyInstanceUID", ""}, []string{studyA}},
		{"study root STUDY by empty accession", dimse.StudyRootFind, []string{"QueryRetrieveLevel", "STUDY", "AccessionNumber", `""`, "StudyInstanceUID", ""}, nil},
		{"study root SERIES in a study", dimse.StudyRootFind, []string{"QueryRetrieveLevel", "SERIES", "StudyInstanceUID", studyA, "SeriesInstanceUID", ""}, []string{studyA + ".1", studyA + ".2"}},
		{"study root SERIES by modality", dimse.StudyRootFind, []string{"QueryRetrieveLevel", "SERIES", "StudyInstanceUID", studyA, "Modality", "MR", "SeriesInstanceUID", ""}, []string{studyA + ".2"}},
		{"patient root IMAGE", dimse.PatientRootFind, []string{"QueryRetrieveLevel", "IMAGE", "PatientID", "P1", "StudyInstanceUID", studyA, "SeriesInstanceUID", studyA + ".1", "SOPInstanceUID", ""}, []string{studyA + ".1.1", studyA + ".1.2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ms, _, err := find(t, f, c.sopClass, ident(t, c.id...))
			if err != nil {
				t.Fatal(err)
			}
			lv := c.id[1]
			u := map[string]dicom.Tag{"PATIENT": dicom.PatientID, "STUDY": dicom.StudyInstanceUID, "SERIES": dicom.SeriesInstanceUID, "IMAGE": dicom.SOPInstanceUID}[lv]
			var got []string
			for _, m := range ms {
				got = append(got, m.String(u))
				if m.String(dicom.QueryRetrieveLevel) != lv {
					t.Errorf("QueryRetrieveLevel %q", m.String(dicom.QueryRetrieveLevel))
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Errorf("matched %v, want %v", got, c.want)
			}
		})
	}
}

func TestFindBadIdentifier(t *testing.T) {
	f := qrFixture(t)
	for _, c := range []struct {
		name     string
		sopClass string
		id       []string
		comment  string
	}{
		{"no level", dimse.StudyRootFind, []string{"PatientID", "P1"}, "Query/Retrieve Level"},
		{"unknown level", dimse.StudyRootFind, []string{"QueryRetrieveLevel", "FRAME"}, "unknown"},
		{"PATIENT in study root", dimse.StudyRootFind, []string{"QueryRetrieveLevel", "PATIENT"}, "no PATIENT level"},
		{"non-unique key above the level", dimse.PatientRootFind, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "DOE*"}, "not a unique key"},
		{"wildcard unique key above the level", dimse.StudyRootFind, []string{"QueryRetrieveLevel", "SERIES", "StudyInstanceUID", `1.2\1.3`}, "single value"},
		{"relational key below the level", dimse.StudyRootFind, []string{"QueryRetrieveLevel", "STUDY", "Modality", "CT"}, "relational"},
		{"wildcard on a date", dimse.StudyRootFind, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "2020*"}, "wildcard"},
		{"wildcard on a UID", dimse.StudyRootFind, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", "1.2.*3"}, "wildcard"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := find(t, f, c.sopClass, ident(t, c.id...))
			wantStatus(t, err, dimse.StatusDataSetMismatch, c.comment)
		})
	}
}

func TestFindUnsupportedOptionalKeyWarns(t *testing.T) {
	f := qrFixture(t)
	ms, r, err := find(t, f, dimse.StudyRootFind, ident(t, "QueryRetrieveLevel", "STUDY", "PatientAge", "040Y", "StudyInstanceUID", ""))
	if err != nil {
		t.Fatal(err)
	}
	if !r.PendingWarning {
		t.Error("PendingWarning not set for an unsupported matching key")
	}
	if len(ms) != 3 {
		t.Errorf("%d matches, want 3 (the key ignored)", len(ms))
	}
	for _, m := range ms {
		if e := m.Get(dicom.NewTag(0x0010, 0x1010)); e == nil || len(e.Value) != 0 {
			t.Errorf("PatientAge not returned empty: %v", e)
		}
	}
}

func TestFindCap(t *testing.T) {
	f := qrFixture(t)
	f.ar.MaxFindResults = 2
	ms, _, err := find(t, f, dimse.StudyRootFind, ident(t, "QueryRetrieveLevel", "STUDY", "StudyInstanceUID", ""))
	wantStatus(t, err, dimse.StatusOutOfResources, "more than 2 matches")
	if len(ms) != 2 {
		t.Errorf("%d matches sent, want 2", len(ms))
	}
	f.ar.MaxFindResults = 3
	if ms, _, err := find(t, f, dimse.StudyRootFind, ident(t, "QueryRetrieveLevel", "STUDY", "StudyInstanceUID", "")); err != nil || len(ms) != 3 {
		t.Errorf("at the cap: %d matches, %v", len(ms), err)
	}
}

func TestFindCharacterSets(t *testing.T) {
	f := qrFixture(t)
	for _, c := range []struct {
		name, reqCharset, pattern, wantCharset, wantName string
	}{
		{"latin-1 request, latin-1 answer", "ISO_IR 100", "dürer*", "ISO_IR 100", "Dürer^Albrecht"},
		{"no charset, non-ASCII answer in UTF-8", "", "D?RER*", "ISO_IR 192", "Dürer^Albrecht"},
		{"latin-1 request, Japanese answer falls back to UTF-8", "ISO_IR 100", "*", "ISO_IR 192", "山田^太郎"},
		{"UTF-8 request", "ISO_IR 192", "山田*", "ISO_IR 192", "山田^太郎"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var kv []string
			if c.reqCharset != "" {
				kv = append(kv, "SpecificCharacterSet", c.reqCharset)
			}
			kv = append(kv, "QueryRetrieveLevel", "STUDY", "PatientName", c.pattern, "PatientID", "P3")
			if c.pattern != "*" {
				kv = kv[:len(kv)-2]
				kv = append(kv, "PatientID", "")
			}
			ms, _, err := find(t, f, dimse.StudyRootFind, ident(t, kv...))
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != 1 {
				t.Fatalf("%d matches, want 1", len(ms))
			}
			if got := ms[0].String(dicom.SpecificCharacterSet); got != c.wantCharset {
				t.Errorf("Specific Character Set %q, want %q", got, c.wantCharset)
			}
			if got := ms[0].String(dicom.PatientName); got != c.wantName {
				t.Errorf("PatientName %q, want %q", got, c.wantName)
			}
		})
	}
}

func TestFindCancelled(t *testing.T) {
	f := qrFixture(t)
	ctx, cancel := context.WithCancel(bulk)
	r := &dimse.FindRequest{Request: dimse.Request{Assoc: f.assoc}, SOPClassUID: dimse.StudyRootFind,
		Identifier: ident(t, "QueryRetrieveLevel", "IMAGE", "SOPInstanceUID", "")}
	n := 0
	err := f.fe().Find(ctx, r, func(*dicom.DataSet) error {
		n++
		cancel()
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) || n != 1 {
		t.Errorf("got %v after %d matches, want context.Canceled after 1", err, n)
	}
}

func retrieve(t *testing.T, f *fixture, sopClass string, id *dicom.DataSet) ([]dimse.Instance, error) {
	t.Helper()
	return f.fe().Retrieve(context.Background(), &dimse.RetrieveRequest{Request: dimse.Request{Assoc: f.assoc},
		SOPClassUID: sopClass, Identifier: id})
}

func TestRetrieve(t *testing.T) {
	f := qrFixture(t)
	for _, c := range []struct {
		name     string
		sopClass string
		id       []string
		want     []string
	}{
		{"patient root PATIENT", dimse.PatientRootMove, []string{"QueryRetrieveLevel", "PATIENT", "PatientID", "P1"},
			[]string{studyA + ".1.1", studyA + ".1.2", studyA + ".2.1"}},
		{"study root STUDY list", dimse.StudyRootGet, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyB + `\` + studyC},
			[]string{studyB + ".1.1", studyC + ".1.1"}},
		{"study root SERIES", dimse.StudyRootMove, []string{"QueryRetrieveLevel", "SERIES", "StudyInstanceUID", studyA, "SeriesInstanceUID", studyA + ".2"},
			[]string{studyA + ".2.1"}},
		{"patient root IMAGE", dimse.PatientRootGet, []string{"QueryRetrieveLevel", "IMAGE", "PatientID", "P1", "StudyInstanceUID", studyA,
			"SeriesInstanceUID", studyA + ".1", "SOPInstanceUID", studyA + ".1.2"}, []string{studyA + ".1.2"}},
		{"empty return keys ignored", dimse.StudyRootMove, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyB, "PatientName", ""},
			[]string{studyB + ".1.1"}},
		{"no match", dimse.StudyRootMove, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", "1.2.3.4"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ins, err := retrieve(t, f, c.sopClass, ident(t, c.id...))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, in := range ins {
				got = append(got, in.SOPInstanceUID)
				if in.SOPClassUID != ctImageStorage || in.TransferSyntaxUID != dicom.ExplicitVRLittleEndian.UID {
					t.Errorf("%s: class %s, syntax %s", in.SOPInstanceUID, in.SOPClassUID, in.TransferSyntaxUID)
				}
				rc, err := in.Open(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(rc)
				rc.Close()
				if err != nil {
					t.Fatal(err)
				}
				if want := f.dataSetOf(t, in.SOPInstanceUID); !bytes.Equal(b, want) {
					t.Errorf("%s: Open returned %d bytes differing from the stored data set (%d bytes)", in.SOPInstanceUID, len(b), len(want))
				}
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("instances %v, want %v (in order)", got, c.want)
			}
		})
	}
}

func TestRetrieveBadIdentifier(t *testing.T) {
	f := qrFixture(t)
	for _, c := range []struct {
		name     string
		sopClass string
		id       []string
		comment  string
	}{
		{"no level", dimse.StudyRootMove, []string{"StudyInstanceUID", studyA}, "Query/Retrieve Level"},
		{"no unique key", dimse.StudyRootMove, []string{"QueryRetrieveLevel", "STUDY"}, "needs (0020,000D) StudyInstanceUID"},
		{"non-unique key", dimse.StudyRootMove, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyA, "PatientName", "DOE"}, "only unique keys"},
		{"key below the level", dimse.StudyRootGet, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyA, "SeriesInstanceUID", studyA + ".1"}, "below"},
		{"wildcard", dimse.StudyRootGet, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", "1.2*"}, "wildcards"},
		{"list above the level", dimse.StudyRootGet, []string{"QueryRetrieveLevel", "SERIES", "StudyInstanceUID", studyA + `\` + studyB, "SeriesInstanceUID", studyA + ".1"}, "single value"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := retrieve(t, f, c.sopClass, ident(t, c.id...))
			wantStatus(t, err, dimse.StatusDataSetMismatch, c.comment)
		})
	}
	_, err := retrieve(t, f, dimse.StudyRootFind+".9", ident(t, "QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyA))
	wantStatus(t, err, dimse.StatusSOPClassNotSupported, "")
}

func TestDestination(t *testing.T) {
	f := qrFixture(t)
	if _, err := f.fe().Destination(context.Background(), &dimse.RetrieveRequest{MoveDestination: "NOBODY"}); !errors.Is(err, dimse.ErrUnknownDestination) {
		t.Errorf("nil Destinations: %v, want ErrUnknownDestination", err)
	}
	f.ar.Destinations = func(aet string) (string, error) {
		if aet == "STORESCP" {
			return "127.0.0.1:11112", nil
		}
		return "", fmt.Errorf("no peer %s", aet)
	}
	if addr, err := f.fe().Destination(context.Background(), &dimse.RetrieveRequest{MoveDestination: "STORESCP"}); err != nil || addr != "127.0.0.1:11112" {
		t.Errorf("Destination = %q, %v", addr, err)
	}
	_, err := f.fe().Destination(context.Background(), &dimse.RetrieveRequest{MoveDestination: "OTHER"})
	if !errors.Is(err, dimse.ErrUnknownDestination) || !strings.Contains(err.Error(), "OTHER") {
		t.Errorf("unknown destination: %v", err)
	}
}
