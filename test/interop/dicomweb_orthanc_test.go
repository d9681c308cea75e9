package interop

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/test/harness"
)

// Orthanc's DICOMweb plugin (Debian orthanc-dicomweb) as a client of
// Ward, with a bearer token in its HttpHeaders: nobody here wrote it. What
// it sends (seen on the wire): STOW chunked with a quoted boundary and
// Accept application/dicom+json; QIDO and metadata with Accept */*;
// retrieve with transfer-syntax=*.

// dicomwebCorpus is the pydicom test files the DICOMweb interop tests
// send: explicit and implicit VR little endian, single- and multi-frame,
// JPEG baseline.
var dicomwebCorpus = []string{"CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "SC_rgb_jpeg_dcmtk.dcm"}

// orthancWard is an Orthanc whose DICOMweb client knows Ward as "ward"
// (with token) and as "wrong" (with a token Ward never issued).
func orthancWard(t *testing.T, w *webWard, token string) *harness.Orthanc {
	t.Helper()
	return startOrthanc(t, harness.WithDICOMweb(t, map[string]any{
		"ward":  map[string]any{"Url": w.dicomweb(), "HttpHeaders": map[string]any{"Authorization": "Bearer " + token}},
		"wrong": map[string]any{"Url": w.dicomweb(), "HttpHeaders": map[string]any{"Authorization": "Bearer ward_0123456789abcdef_" + strings.Repeat("B", 43)}},
	}))
}

// TestOrthancDICOMwebClient: files uploaded into Orthanc go to Ward with
// Orthanc's STOW-RS; Orthanc's QIDO-RS finds them; its WADO-RS metadata
// names them; its retrieve pulls the study into a second Orthanc, and
// every object there equals the one sent (pydicom, every element). A
// token Ward never issued makes Orthanc's calls fail (its QIDO passes the
// 401 on, its STOW job reports 500) and is a failed User Authentication in
// Ward's audit trail; the
// accepted requests are audited with the token's user.
func TestOrthancDICOMwebClient(t *testing.T) {
	requirePydicom(t)
	w := startWebWard(t, "lockout_after = -1\n", nil)
	w.user(t, "orthanc", "uploader")
	tok := w.token(t, "orthanc", "write")
	a := orthancWard(t, w, tok)

	type sent struct{ path, study, series, sop string }
	var files []sent
	var ids []string
	for _, name := range dicomwebCorpus {
		p := filepath.Join(pydicomTestFiles, name)
		st, se, sop := uidsOfFile(t, p)
		files = append(files, sent{p, st, se, sop})
		ids = append(ids, a.Upload(t, p))
	}

	// STOW-RS from Orthanc into Ward.
	code, body := a.Do(t, "POST", "/dicom-web/servers/ward/stow", map[string]any{"Resources": ids})
	if code != 200 {
		t.Fatalf("Orthanc's STOW into Ward: %d %s", code, body)
	}

	// QIDO-RS: every study, by PatientID and by UID; series of a study.
	for _, f := range files {
		code, body = a.Do(t, "POST", "/dicom-web/servers/ward/qido", map[string]any{"Uri": "/studies", "Arguments": map[string]string{"StudyInstanceUID": f.study}})
		if code != 200 || !strings.Contains(string(body), f.study) {
			t.Errorf("Orthanc's QIDO for study %s: %d %.400s", f.study, code, body)
		}
		code, body = a.Do(t, "POST", "/dicom-web/servers/ward/qido", map[string]any{"Uri": "/studies/" + f.study + "/series"})
		if code != 200 || !strings.Contains(string(body), f.series) {
			t.Errorf("Orthanc's QIDO for the series of %s: %d %.400s", f.study, code, body)
		}
		code, body = a.Do(t, "POST", "/dicom-web/servers/ward/qido", map[string]any{"Uri": "/studies/" + f.study + "/series/" + f.series + "/instances"})
		if code != 200 || !strings.Contains(string(body), f.sop) {
			t.Errorf("Orthanc's QIDO for the instances of %s: %d %.400s", f.series, code, body)
		}
		// WADO-RS metadata through Orthanc's generic GET.
		code, body = a.Do(t, "POST", "/dicom-web/servers/ward/get", map[string]any{"Uri": "/studies/" + f.study + "/series/" + f.series + "/metadata"})
		var md []map[string]any
		if code != 200 || json.Unmarshal(body, &md) != nil || len(md) == 0 || !strings.Contains(string(body), f.sop) {
			t.Errorf("Orthanc's GET of the metadata of %s: %d %.400s", f.series, code, body)
		}
	}
	code, body = a.Do(t, "POST", "/dicom-web/servers/ward/qido", map[string]any{"Uri": "/studies", "Arguments": map[string]string{"PatientID": "1CT1"}})
	if code != 200 || !strings.Contains(string(body), files[0].study) || strings.Contains(string(body), files[1].study) {
		t.Errorf("Orthanc's QIDO PatientID=1CT1: %d %.400s", code, body)
	}

	// WADO-RS retrieve into a second Orthanc: equal objects.
	b := orthancWard(t, w, tok)
	studies := map[string]bool{}
	var res []map[string]string
	for _, f := range files {
		if !studies[f.study] {
			studies[f.study] = true
			res = append(res, map[string]string{"Study": f.study})
		}
	}
	code, body = b.Do(t, "POST", "/dicom-web/servers/ward/retrieve", map[string]any{"Resources": res})
	if code != 200 {
		t.Fatalf("Orthanc's retrieve from Ward: %d %s", code, body)
	}
	var got []string
	b.GetJSON(t, "/instances", &got)
	if len(got) != len(files) {
		t.Errorf("Orthanc retrieved %d instances from Ward, want %d", len(got), len(files))
	}
	bySOP := map[string]string{}
	dir := t.TempDir()
	for _, id := range got {
		p := filepath.Join(dir, id+".dcm")
		if err := os.WriteFile(p, b.Get(t, "/instances/"+id+"/file"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, sop := uidsOfFile(t, p)
		bySOP[sop] = p
	}
	for _, f := range files {
		p, ok := bySOP[f.sop]
		if !ok {
			t.Errorf("%s (%s) not retrieved", filepath.Base(f.path), f.sop)
			continue
		}
		if eq, why := datasetsEqual(t, f.path, p); !eq {
			t.Errorf("%s retrieved through Ward differs from the one sent:\n%s", filepath.Base(f.path), why)
		}
	}

	// A wrong token: Orthanc's call fails, Ward records the failure.
	// Orthanc 1.10 passes the 401 of a QIDO on to its caller, and
	// reports a STOW (run as a job) that got 401 as 500.
	code, body = a.Do(t, "POST", "/dicom-web/servers/wrong/qido", map[string]any{"Uri": "/studies"})
	if code != 401 {
		t.Errorf("Orthanc's QIDO with a wrong token: %d %.400s, want 401", code, body)
	}
	code, body = a.Do(t, "POST", "/dicom-web/servers/wrong/stow", map[string]any{"Resources": ids[:1]})
	if code != 500 {
		t.Errorf("Orthanc's STOW with a wrong token: %d %.400s, want 500", code, body)
	}
	readAudit(t, w.dir, func(r []audit.Record) bool {
		var stored, queried, sent bool
		for _, x := range r {
			switch {
			case x.Event == "instances-transferred" && hasPeer(x, "orthanc") && strings.Contains(x.XML, `EventActionCode="C"`):
				stored = true
			case x.Event == "instances-transferred" && hasPeer(x, "orthanc") && strings.Contains(x.XML, `EventActionCode="R"`):
				sent = true
			case x.Event == "query" && hasPeer(x, "orthanc"):
				queried = true
			}
		}
		return stored && queried && sent && auditHas(r, "authentication", audit.OutcomeMinorFailure, "0123456789abcdef")
	})
}

// TestSTOWBoundaryAsOrthancSends: Orthanc's DICOMweb plugin makes its
// multipart boundary of two UUIDs joined by "-", 73 characters, over the
// 70 of RFC 2046 5.1.1; a STOW-RS with such a boundary (sent chunked, as
// Orthanc does) must be stored, or Orthanc cannot store into Ward at all.
// This is that request without Orthanc.
func TestSTOWBoundaryAsOrthancSends(t *testing.T) {
	requireDir(t, pydicomTestFiles)
	w := startWebWard(t, "lockout_after = -1\n", nil)
	w.user(t, "orthanc", "uploader")
	tok := w.token(t, "orthanc", "write")
	const boundary = "4110acff-0aee-4738-a52e-6d06de00a7ce-4110acff-0aee-4738-a52e-6d06de00a7ce"
	data, err := os.ReadFile(filepath.Join(pydicomTestFiles, "CT_small.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	body := "--" + boundary + "\r\nContent-Type: application/dicom\r\n\r\n" + string(data) + "\r\n--" + boundary + "--\r\n"
	resp, answer := w.do(t, "POST", "/dicom-web/studies", tok, struct{ io.Reader }{strings.NewReader(body)},
		"Content-Type", `multipart/related; type="application/dicom"; boundary=`+boundary, "Accept", "application/dicom+json")
	if resp.StatusCode != 200 {
		t.Errorf("STOW-RS with Orthanc's 73-character boundary: %s: %s", resp.Status, answer)
	}
}
