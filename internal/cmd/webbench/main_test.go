package main

import (
	"strings"
	"testing"
)

// The counts decide whether a benchmark answer was right, so they are
// checked here (no timing is).
func TestCountItems(t *testing.T) {
	mp := "--b1\r\nContent-Type: application/octet-stream\r\n\r\nabc\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\n\r\nnot a boundary: --b1\r\n--b1--\r\n"
	for _, c := range []struct {
		name, ctype, body string
		want              int
		err               bool
	}{
		{"json array", "application/dicom+json", `[{"0020000D":{"vr":"UI"}},{},{"a":[1,2]}]`, 3, false},
		{"empty array", "application/dicom+json", `[]`, 0, false},
		{"brackets in strings", "application/dicom+json", ` [ {"a":"],[{\"x,"}, ["[", "}"] ,3]` + "\n", 3, false},
		{"open string", "application/dicom+json", `[{"a":"]}]`, 0, true},
		{"no body", "application/dicom+json; charset=utf-8", ``, 0, false},
		{"json object", "application/json", `{"a":1}`, 1, false},
		{"truncated json", "application/dicom+json", `[{},{`, 1, true},
		{"multipart", `multipart/related; type="application/octet-stream"; boundary=b1`, mp, 2, false},
		{"truncated multipart", `multipart/related; boundary=b1`, mp[:60], 1, true},
		{"other", "image/jpeg", "\xff\xd8", 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := countItems(c.ctype, strings.NewReader(c.body))
			if (err != nil) != c.err || got != c.want {
				t.Errorf("countItems = %d, %v; want %d, error %v", got, err, c.want, c.err)
			}
		})
	}
}

func TestFailedCount(t *testing.T) {
	body := `{"00081190":{"vr":"UR","Value":["x"]},"00081198":{"vr":"SQ","Value":[{},{}]},"00081199":{"vr":"SQ","Value":[{}]}}`
	if n := failedCount([]byte(body)); n != 2 {
		t.Errorf("failedCount = %d, want 2", n)
	}
	if n := failedCount([]byte(`{"00081199":{"vr":"SQ","Value":[{}]}}`)); n != 0 {
		t.Errorf("failedCount without failures = %d", n)
	}
	if n := failedCount([]byte(`not json`)); n != 0 {
		t.Errorf("failedCount of garbage = %d", n)
	}
}

func TestCheckLoopback(t *testing.T) {
	for u, ok := range map[string]bool{
		"http://127.0.0.1:8080/dicom-web/studies": true,
		"http://127.9.9.9/x":                      true,
		"http://[::1]:80/":                        true,
		"http://localhost:1/":                     true,
		"http://10.0.0.1/":                        false,
		"http://example.org/":                     false,
		"http://[::]:80/":                         false,
	} {
		if err := checkLoopback(u); (err == nil) != ok {
			t.Errorf("checkLoopback(%s) = %v", u, err)
		}
	}
}
