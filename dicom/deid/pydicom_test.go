package deid

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/dicom"
)

func pydicomFile(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(pydicomFiles, name)
	if _, err := os.Stat(p); err != nil {
		skipOrFail(t, "pydicom test file %s missing (python3-pydicom)", name)
	}
	return p
}

func TestTransformCTSmall(t *testing.T) {
	in := pydicomFile(t, "CT_small.dcm")
	cfg := &Config{Profile: mustProfile(t, "basic"), Secret: testSecret}
	out, res, err := transformFile(t, in, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ds := readOut(t, out)
	for _, c := range []struct {
		tag  dicom.Tag
		want string
	}{
		{tagIdentityRemoved, "YES"}, {tagLongitudinal, "REMOVED"}, {tagPatientID, res.PatientID},
		{tagSOPInstance, res.SOPInstanceUID}, {tagStudyUID, res.StudyInstanceUID},
	} {
		if got := ds.String(c.tag); got != c.want {
			t.Errorf("%v = %q, want %q", c.tag, got, c.want)
		}
	}
	if !strings.HasPrefix(res.SOPInstanceUID, "2.25.") || !dicom.StorableUID(res.SOPInstanceUID) {
		t.Errorf("SOP Instance UID %q", res.SOPInstanceUID)
	}
	if ds.Get(dicom.NewTag(0x0008, 0x0020)) == nil || ds.String(dicom.NewTag(0x0008, 0x0020)) != "" {
		t.Errorf("Study Date (Z) = %q", ds.String(dicom.NewTag(0x0008, 0x0020)))
	}
	for _, e := range ds.Elements {
		if e.Tag.Group()&1 == 1 {
			t.Errorf("private %v kept", e.Tag)
		}
	}
	codes := ds.Get(tagMethodCodes)
	if codes == nil || len(codes.Items) != 1 || codes.Items[0].String(tagCodeValue) != "113100" {
		t.Errorf("method code sequence %+v", codes)
	}
	// The same input and secret give the same object.
	again, _, err := transformFile(t, in, cfg)
	if err != nil || string(again) != string(out) {
		t.Errorf("not deterministic: %v", err)
	}
	// Another secret, other UIDs.
	other, res2, err := transformFile(t, in, &Config{Profile: cfg.Profile, Secret: []byte(strings.Repeat("k", 32))})
	if err != nil || res2.SOPInstanceUID == res.SOPInstanceUID || string(other) == string(out) {
		t.Errorf("another secret: %v", err)
	}
}

func TestTransformOptions(t *testing.T) {
	in := pydicomFile(t, "CT_small.dcm")
	cfg := &Config{Profile: mustProfile(t, "basic,modified-dates,uids,device-identity,patient-characteristics"), Secret: testSecret}
	out, res, err := transformFile(t, in, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ds := readOut(t, out)
	src, _, _ := transformFile(t, in, &Config{Profile: mustProfile(t, "basic,full-dates,uids,device-identity,patient-characteristics"), Secret: testSecret})
	orig := readOut(t, src)
	if ds.String(tagSOPInstance) != orig.String(tagSOPInstance) || strings.HasPrefix(res.SOPInstanceUID, "2.25.") {
		t.Errorf("retain UIDs: %q", res.SOPInstanceUID)
	}
	if res.DateShiftDays >= 0 || res.DateShiftDays < -MaxDateShift {
		t.Errorf("date shift %d", res.DateShiftDays)
	}
	studyDate := dicom.NewTag(0x0008, 0x0020)
	if ds.String(studyDate) == "" || ds.String(studyDate) == orig.String(studyDate) {
		t.Errorf("study date %q, original %q", ds.String(studyDate), orig.String(studyDate))
	}
	if ds.String(tagLongitudinal) != "MODIFIED" {
		t.Errorf("(0028,0303) %q", ds.String(tagLongitudinal))
	}
	if got := ds.String(dicom.NewTag(0x0010, 0x0040)); got == "" {
		t.Errorf("patient sex not retained")
	}
	if n := len(ds.Get(tagMethodCodes).Items); n != 5 {
		t.Errorf("%d method codes", n)
	}
}

func TestBurnedIn(t *testing.T) {
	in := pydicomFile(t, "SC_rgb_small_odd.dcm")
	cfg := &Config{Profile: mustProfile(t, "basic"), Secret: testSecret}
	out, _, err := transformFile(t, in, cfg)
	if !errors.Is(err, ErrBurnedIn) {
		t.Fatalf("secondary capture without Burned In Annotation: %v", err)
	}
	if len(out) != 0 {
		t.Errorf("%d bytes written for a refused object", len(out))
	}
	cfg.AcceptBurnedIn = true
	if _, _, err := transformFile(t, in, cfg); err != nil {
		t.Fatal(err)
	}
}
