package deid

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/ward-pacs/ward/dicom"
)

// TestTableInDictionary: every single tag of Table E.1-1 (617 in 2024b) is
// known to package dicom's dictionary, of the same edition, with a VR: in
// implicit VR none of them is read as UN, so the safety nets by VR and the
// JSON of DICOMweb see the attribute's real VR. (With the dictionary of
// github.com/suyashkumar/dicom v1.0.7, 176 of them were unknown.)
func TestTableInDictionary(t *testing.T) {
	if Edition != dicom.DictionaryEdition {
		t.Errorf("Table E.1-1 of %s, dictionary of %s", Edition, dicom.DictionaryEdition)
	}
	single := regexp.MustCompile(`^\(([0-9A-F]{4}),([0-9A-F]{4})\)$`)
	n := 0
	for _, r := range table {
		m := single.FindStringSubmatch(r.tag)
		if m == nil {
			continue
		}
		n++
		g, _ := strconv.ParseUint(m[1], 16, 16)
		e, _ := strconv.ParseUint(m[2], 16, 16)
		tag := dicom.NewTag(uint16(g), uint16(e))
		// Selector UN Value is the one whose VR the standard gives as UN.
		if vr := dicom.VROf(tag); vr == "" || vr == "UN" && r.tag != "(0072,006D)" {
			t.Errorf("%s %s: VR %q", r.tag, r.name, vr)
		}
		if dicom.Keyword(tag) == "" {
			t.Errorf("%s %s: no keyword", r.tag, r.name)
		}
	}
	if n != 617 {
		t.Errorf("%d single tags in Table E.1-1, want 617", n)
	}
}
