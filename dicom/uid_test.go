package dicom

import (
	"strings"
	"testing"
)

func TestUIDProblem(t *testing.T) {
	long := "1." + strings.Repeat("2", 63) // 65 characters
	for _, tt := range []struct {
		uid             string
		storable, valid bool
	}{
		{"1.2.840.10008.1.2", true, true},
		{"0", true, true},
		{"1.0.2", true, true},
		{"1." + strings.Repeat("2", 62), true, true}, // 64 characters
		// Seen from real modalities; refused by PS3.5 9.1, stored anyway.
		{"1.2.840.0113654.2.3", true, false},
		{"01.2", true, false},
		{"1.2.00", true, false},
		// Never stored: they could name a path, or are no UID at all.
		{"", false, false},
		{".", false, false},
		{"..", false, false},
		{"1..2", false, false},
		{".1.2", false, false},
		{"1.2.", false, false},
		{"1.2/../3", false, false},
		{"../../etc", false, false},
		{`1.2\3`, false, false},
		{"1.2 3", false, false},
		{"1.2\x003", false, false},
		{"1.2\n3", false, false},
		{"1.2.é", false, false},
		{long, false, false},
	} {
		if got := StorableUID(tt.uid); got != tt.storable {
			t.Errorf("StorableUID(%q) = %v, want %v (%s)", tt.uid, got, tt.storable, UIDProblem(tt.uid))
		}
		if got := ValidUID(tt.uid); got != tt.valid {
			t.Errorf("ValidUID(%q) = %v, want %v", tt.uid, got, tt.valid)
		}
		if p := UIDProblem(tt.uid); (p == "") != tt.storable {
			t.Errorf("UIDProblem(%q) = %q", tt.uid, p)
		}
	}
	if p := UIDProblem("1.2/3"); !strings.Contains(p, `'/'`) {
		t.Errorf("the problem does not name the character: %q", p)
	}
	if p := UIDProblem("1.2\x1b3"); !strings.Contains(p, "control character") || strings.Contains(p, "\x1b") {
		t.Errorf("a control character is not described safely: %q", p)
	}
}
