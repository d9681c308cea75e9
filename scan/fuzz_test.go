package scan

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzHTTPAnswers: the auditor reads JSON from whatever answers on a
// scanned host's web ports (Orthanc's REST API, QIDO-RS). Any body gives a
// count or an error, never a panic, and a count is never negative.
func FuzzHTTPAnswers(f *testing.F) {
	f.Add([]byte(`["a","b"]`), "application/json")
	f.Add([]byte(`[{"0020000D":{"vr":"UI"}}]`), "application/dicom+json")
	f.Add([]byte(`[]`), "application/dicom+json")
	f.Add([]byte(`[{"x":1}`), "application/json")
	f.Add([]byte(`{"Version":"1.10.1"}`), "application/json")
	f.Add([]byte(``), "")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		if n, _ := countArray(bytes.NewReader(body)); n < 0 {
			t.Fatalf("countArray: %d", n)
		}
		if n, ok := qidoCount(body, contentType); n < 0 || (!ok && n != 0) {
			t.Fatalf("qidoCount: %d, %v", n, ok)
		}
	})
}

// FuzzReadSpecs: target lists come from the operator's files; every line
// gives targets or an error that names it, never a panic.
func FuzzReadSpecs(f *testing.F) {
	f.Add("127.0.0.1\n10.0.0.0/24:104, [::1]:11112 # lab\npacs.example:4242\n")
	f.Add("::1/128\n")
	f.Add("a..b:0\n")
	f.Add("[fe80::1%eth0]:104\n")
	f.Fuzz(func(t *testing.T, list string) {
		specs, err := ReadSpecs(strings.NewReader(list))
		if err != nil {
			return
		}
		for _, sp := range specs {
			if sp.Port < 0 || sp.Port > 65535 || (sp.Host == "") == !sp.Prefix.IsValid() {
				t.Fatalf("%q parsed as %+v", sp.Raw, sp)
			}
		}
	})
}
