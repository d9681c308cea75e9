package scan

import (
	"bytes"
	"strings"
	"testing"
)

// TestWriteTextEscapesPeerText: a scanned peer chooses its Implementation
// Version Name, its product string and what it answers; the text report
// prints them escaped, so that the peer cannot drive the operator's
// terminal or forge a line of the report.
func TestWriteTextEscapesPeerText(t *testing.T) {
	r := &Report{
		Services: []Service{{Host: "127.0.0.1", Port: 11112, Protocol: "dicom", Product: "X\x1b]0;pwned\x07",
			ImplementationVersionName: "V\nFAKE\tLINE", Notes: []string{"rejected: \x1b[2J"}}},
		Findings: []Finding{{ID: "dicom.any-ae", Severity: High, Host: "127.0.0.1", Port: 11112,
			Evidence: Evidence{Received: "A-ASSOCIATE-AC\r\nFAKE finding"}}},
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.ContainsAny(out, "\x1b\x07\r") {
		t.Errorf("control characters in the report:\n%q", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "FAKE") {
			t.Errorf("forged line %q in:\n%s", line, out)
		}
	}
}
