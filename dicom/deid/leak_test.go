package deid

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/dicom"
)

// identifying returns the byte strings that must not survive: the raw
// value of Patient's Name, Patient ID and Birth Date (and of Other Patient
// IDs and Names) wherever they occur, each name component, and their
// decoded text in UTF-8, as encoded in the object's character set.
func identifying(t *testing.T, ds *dicom.DataSet, charset []string, out map[string]bool, depth int) {
	if depth > 8 {
		return
	}
	if cs := ds.Get(dicom.SpecificCharacterSet); cs != nil {
		charset = strings.Split(strings.TrimSpace(string(cs.Value)), "\\")
	}
	for _, e := range ds.Elements {
		for _, it := range e.Items {
			identifying(t, it, charset, out, depth+1)
		}
		switch e.Tag {
		case tagPatientName, tagPatientID, tagBirthDate, tagOtherIDs, tagOtherNames:
		default:
			continue
		}
		raw := bytes.TrimRight(e.Value, "\x00 ")
		add := func(b []byte) {
			b = bytes.TrimSpace(b)
			if len(b) >= 3 {
				out[string(b)] = true
			}
		}
		add(raw)
		for _, part := range bytes.FieldsFunc(raw, func(r rune) bool { return r == '^' || r == '=' || r == '\\' }) {
			add(part)
		}
		if s, ok := dicom.DecodeText(charset, e.VR, e.Value); ok {
			add([]byte(s))
			for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == '^' || r == '=' || r == '\\' }) {
				add([]byte(part))
			}
		}
	}
}

// TestNoIdentityLeftInBytes de-identifies every pydicom test file and
// looks for the patient's name, ID and birth date in the output bytes.
func TestNoIdentityLeftInBytes(t *testing.T) {
	pydicomFile(t, "CT_small.dcm")
	names, _ := filepath.Glob(filepath.Join(pydicomFiles, "*.dcm"))
	// pydicom's character set files: names in Japanese, Korean, Chinese,
	// Greek, Hebrew, Arabic, Cyrillic..., in each encoding.
	charsets, _ := filepath.Glob(filepath.Join(filepath.Dir(pydicomFiles), "charset_files", "*.dcm"))
	names = append(names, charsets...)
	done := 0
	for _, in := range names {
		b, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		meta, br, err := dicom.ReadFileHeader(bytes.NewReader(b), dicom.DefaultMetaLimit)
		if err != nil {
			continue
		}
		orig, err := dicom.ReadDataSet(br, dicom.LookupTransferSyntax(meta.TransferSyntaxUID), 1<<30)
		if err != nil {
			continue // not an object Ward reads; Transform refuses it too
		}
		for _, prof := range []string{"basic", "basic,modified-dates,patient-characteristics,device-identity,safe-private,clean-descriptors,clean-structured-content"} {
			var out bytes.Buffer
			_, err = Transform(&out, bytes.NewReader(b), &Config{Profile: mustProfile(t, prof), Secret: testSecret, AcceptBurnedIn: true})
			if err != nil && orig.String(tagSOPClass) == "" && strings.Contains(err.Error(), "no SOP Class") {
				continue
			}
			if err != nil {
				t.Errorf("%s (%s): %v", filepath.Base(in), prof, err)
				continue
			}
			secrets := map[string]bool{}
			identifying(t, orig, nil, secrets, 0)
			for s := range secrets {
				if s == "Anonymized" || strings.EqualFold(s, "ANONYMIZED") {
					continue
				}
				if bytes.Contains(out.Bytes(), []byte(s)) {
					t.Errorf("%s (%s): %q left in the output", filepath.Base(in), prof, s)
				}
			}
			readOut(t, out.Bytes())
			done++
		}
	}
	t.Logf("%d outputs checked", done)
	if len(charsets) == 0 {
		skipOrFail(t, "pydicom's charset_files missing")
	}
	if done < 40 {
		t.Errorf("only %d outputs", done)
	}
}

// TestTruncatedRefused: an object cut short is an error, not a crash.
func TestTruncatedRefused(t *testing.T) {
	b, err := os.ReadFile(pydicomFile(t, "CT_small.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{200, 1000, len(b) / 2, len(b) - 3} {
		_, err := Transform(&bytes.Buffer{}, bytes.NewReader(b[:n]), &Config{Profile: mustProfile(t, "basic"), Secret: testSecret})
		if err == nil || errors.Is(err, ErrBurnedIn) {
			t.Errorf("cut at %d: %v", n, err)
		}
	}
}
