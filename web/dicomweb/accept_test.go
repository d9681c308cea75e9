package dicomweb

import "testing"

func TestParseAccept(t *testing.T) {
	got, err := ParseAccept([]string{`multipart/related; type="application/octet-stream"; transfer-syntax=*, application/dicom+json;q=0.5`, `*/*;q=0.1`})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Type != "multipart/related" || got[0].Params["type"] != "application/octet-stream" || got[0].Params["transfer-syntax"] != "*" ||
		got[1].Type != "application/dicom+json" || got[1].Q != 0.5 || got[2].Type != "*/*" {
		t.Fatalf("%+v", got)
	}
	// Unquoted type=application/dicom (a slash is not a token character)
	// is read as if quoted.
	if r, err := ParseAccept([]string{`multipart/related; type=application/dicom; transfer-syntax=*`}); err != nil || r[0].Params["type"] != "application/dicom" || r[0].Params["transfer-syntax"] != "*" {
		t.Fatalf("unquoted type: %+v %v", r, err)
	}
	if r, _ := ParseAccept(nil); len(r) != 1 || !r[0].Matches("application/dicom+json") {
		t.Fatalf("no Accept: %+v", r)
	}
	if r, _ := ParseAccept([]string{"image/*"}); !r[0].Matches("image/png") || r[0].Matches("application/json") {
		t.Fatal("image/*")
	}
	// Unquoted type with its slash, as some clients send it.
	if r, err := ParseAccept([]string{"multipart/related; type=application/dicom; transfer-syntax=*"}); err != nil || r[0].Params["type"] != "application/dicom" {
		t.Fatalf("unquoted type: %+v %v", r, err)
	}
	for _, bad := range []string{"multipart/related; q=2", "a/b; type=\"x", "/"} {
		if _, err := ParseAccept([]string{bad}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseAccept(f *testing.F) {
	for _, s := range []string{`multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1`, `*/*`, `application/dicom+json, */*;q=0.1`, `image/jpeg;q=0.9,image/png`, `multipart/related; type=application/dicom`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseAccept([]string{s})
		if err == nil && len(rs) > maxAcceptRanges {
			t.Fatal("unbounded")
		}
	})
}
