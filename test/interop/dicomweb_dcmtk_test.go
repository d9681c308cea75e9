package interop

import (
	"io"
	"mime"
	"mime/multipart"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// wadoStudy retrieves a study with WADO-RS as token (Accept as given) and
// writes each part of the multipart/related answer to a file in a new
// folder; it returns the files.
func wadoStudy(t *testing.T, w *webWard, token, study, accept string) []string {
	t.Helper()
	resp, body := w.do(t, "GET", "/dicom-web/studies/"+study, token, nil, "Accept", accept)
	if resp.StatusCode != 200 {
		t.Fatalf("WADO-RS study %s (Accept %s): %s: %.300s", study, accept, resp.Status, body)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/related" || params["boundary"] == "" {
		t.Fatalf("WADO-RS answer's Content-Type %q: %v", resp.Header.Get("Content-Type"), err)
	}
	if typ := strings.Trim(params["type"], `"`); typ != "application/dicom" {
		t.Errorf("WADO-RS answer's type parameter %q, want application/dicom", params["type"])
	}
	dir := t.TempDir()
	var files []string
	mr := multipart.NewReader(strings.NewReader(string(body)), params["boundary"])
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("WADO-RS answer, part %d: %v", i, err)
		}
		if ct := p.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/dicom") {
			t.Errorf("part %d: Content-Type %q", i, ct)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		path := filepath.Join(dir, "part"+strconv.Itoa(i)+".dcm")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, path)
	}
	return files
}

// assertSameObjects checks that got holds exactly the objects of sent,
// equal element for element (pydicom), matched by SOP Instance UID.
func assertSameObjects(t *testing.T, what string, sent, got []string) {
	t.Helper()
	bySOP := map[string]string{}
	for _, p := range got {
		_, _, sop := uidsOfFile(t, p)
		bySOP[sop] = p
	}
	if len(got) != len(sent) {
		t.Errorf("%s: %d objects, want %d", what, len(got), len(sent))
	}
	for _, s := range sent {
		_, _, sop := uidsOfFile(t, s)
		p, ok := bySOP[sop]
		if !ok {
			t.Errorf("%s: %s (%s) missing", what, filepath.Base(s), sop)
			continue
		}
		if eq, why := datasetsEqual(t, s, p); !eq {
			t.Errorf("%s: %s differs from the one sent:\n%s", what, filepath.Base(s), why)
		}
	}
}

// TestDCMTKInDICOMwebOut: objects stored with DCMTK storescu come out of
// WADO-RS (Go's net/http, multipart/related, transfer-syntax=* and the
// default explicit VR little endian) equal to the ones sent.
func TestDCMTKInDICOMwebOut(t *testing.T) {
	requireTool(t, "storescu")
	requirePydicom(t)
	w := startWebWard(t, "lockout_after = -1\n", nil)
	w.user(t, "vera", "viewer")
	tok := w.token(t, "vera", "read")
	// Two studies: a single-frame CT (explicit VR) and a 15-frame RT
	// dose (implicit VR).
	ct := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	dose := filepath.Join(pydicomTestFiles, "rtdose.dcm")
	if out, err := dcmtk("storescu", "-aec", "WARD", "127.0.0.1", strconv.Itoa(w.dicomPort), ct, dose).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	for _, f := range []string{ct, dose} {
		study, _, _ := uidsOfFile(t, f)
		got := wadoStudy(t, w, tok, study, `multipart/related; type="application/dicom"; transfer-syntax=*`)
		assertSameObjects(t, "WADO-RS transfer-syntax=* of "+filepath.Base(f), []string{f}, got)
		got = wadoStudy(t, w, tok, study, `multipart/related; type="application/dicom"`)
		assertSameObjects(t, "WADO-RS of "+filepath.Base(f)+" in the default transfer syntax", []string{f}, got)
	}
}

// TestDICOMwebInDCMTKOut: objects stored with STOW-RS (Go's net/http)
// come out of DCMTK getscu equal to the ones sent, JPEG baseline too.
func TestDICOMwebInDCMTKOut(t *testing.T) {
	requireTool(t, "getscu")
	requirePydicom(t)
	w := startWebWard(t, "lockout_after = -1\n", nil)
	w.user(t, "ulla", "uploader")
	tok := w.token(t, "ulla", "write")
	mr := filepath.Join(pydicomTestFiles, "MR_small.dcm")
	jpeg := filepath.Join(pydicomTestFiles, "SC_rgb_jpeg_dcmtk.dcm")
	if resp, body := w.stow(t, tok, mr, jpeg); resp.StatusCode != 200 {
		t.Fatalf("STOW-RS: %s: %s", resp.Status, body)
	}
	// getscu proposes one transfer syntax list for every storage context
	// and Ward accepts one syntax per context: uncompressed (its default)
	// for the MR, JPEG Baseline first (+xy) for the JPEG file.
	for _, c := range []struct{ file, prefer string }{{mr, "+x="}, {jpeg, "+xy"}} {
		f := c.file
		study, _, _ := uidsOfFile(t, f)
		dir := t.TempDir()
		out, err := dcmtk("getscu", "-aec", "WARD", c.prefer, "-od", dir, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+study,
			"127.0.0.1", strconv.Itoa(w.dicomPort)).CombinedOutput()
		if err != nil {
			t.Fatalf("getscu: %v\n%s", err, out)
		}
		got, _ := filepath.Glob(filepath.Join(dir, "*"))
		if len(got) == 0 {
			t.Logf("getscu:\n%s", out)
		}
		assertSameObjects(t, "getscu of "+filepath.Base(f), []string{f}, got)
	}
}
