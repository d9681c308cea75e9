package dicom

import "testing"

// TestVRString: a VR reads back as its two characters, from the table
// for upper-case letters and otherwise.
func TestVRString(t *testing.T) {
	for _, s := range []string{"AE", "PN", "UI", "SQ", "ZZ", "AA", "ox", "@A", "A[", "\\x", "UN"} {
		if got := mkVR(s).String(); got != s {
			t.Errorf("mkVR(%q).String() = %q", s, got)
		}
	}
	if got := vr(0).String(); got != "" {
		t.Errorf("vr(0).String() = %q", got)
	}
	if n := testing.AllocsPerRun(100, func() { _ = vrSQ.String() }); n != 0 {
		t.Errorf("String allocates %v times for SQ", n)
	}
}
