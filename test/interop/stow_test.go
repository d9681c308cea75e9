package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/test/harness"
)

// stowFiles are pydicom test files in the syntaxes getscu accepts by
// default, each its own instance.
var stowFiles = []string{"CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "test-SR.dcm", "SC_rgb_small_odd.dcm"}

// stowSite is a real `ward serve` with its web listener on loopback.
type stowSite struct {
	bin, dir    string
	dport, base string
}

func startStowSite(t *testing.T) *stowSite {
	t.Helper()
	requireTool(t, "go")
	s := &stowSite{bin: harness.WardBinary(t), dir: harness.DataDir(t)}
	s.dport = strconv.Itoa(freePort(t))
	hport := freePort(t)
	s.base = "http://127.0.0.1:" + strconv.Itoa(hport) + "/dicom-web"
	w := harness.Start(t, exec.Command(s.bin, "serve", "--data", s.dir, "--dicom-listen", "127.0.0.1:"+s.dport, "--aet", "WARD",
		"--loopback-any-ae", "--http-listen", "127.0.0.1:"+strconv.Itoa(hport), "--min-free", "16MiB"), true)
	w.WaitServing(t)
	waitListen(t, hport)
	return s
}

// ward runs a ward command on the site's data directory.
func (s *stowSite) ward(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(s.bin, append(args, "--data", s.dir)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("ward %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return strings.TrimSpace(out.String())
}

// token adds a user with role and issues a token of scope for it.
func (s *stowSite) token(t *testing.T, user, role, scope string) string {
	t.Helper()
	s.ward(t, "a long passcode\n", "user", "add", user, "--role", role)
	return s.ward(t, "", "token", "issue", user, "--scope", scope)
}

// stowBody is a multipart/related body of the files, boundary b.
func stowBody(t *testing.T, b string, paths ...string) []byte {
	t.Helper()
	var body bytes.Buffer
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&body, "--%s\r\nContent-Type: application/dicom\r\n\r\n", b)
		body.Write(data)
		body.WriteString("\r\n")
	}
	fmt.Fprintf(&body, "--%s--\r\n", b)
	return body.Bytes()
}

// stowResponse is the part of a Store Instances Response the tests read.
type stowResponse struct {
	Referenced struct {
		Value []map[string]struct {
			Value []any `json:"Value"`
		} `json:"Value"`
	} `json:"00081199"`
	Failed struct {
		Value []map[string]struct {
			Value []any `json:"Value"`
		} `json:"Value"`
	} `json:"00081198"`
}

// TestStowThenGetscu: pydicom's test files go into a real ward serve by
// STOW-RS (Go's HTTP client, chunked, and curl), with an uploader's write
// token; DCMTK getscu retrieves them over DIMSE and they equal the
// originals. A viewer's token and the uploader's read-scope token are
// refused with 403, without storing.
func TestStowThenGetscu(t *testing.T) {
	requireTool(t, "getscu", "curl")
	requirePydicom(t)
	s := startStowSite(t)
	write := s.token(t, "upl", "uploader", "write")
	read := s.ward(t, "", "token", "issue", "upl", "--scope", "read")
	viewer := s.token(t, "vie", "viewer", "read")

	var paths []string
	originals := map[string]string{}
	var uids []string
	studies := map[string]bool{}
	for _, name := range stowFiles {
		p := filepath.Join(pydicomTestFiles, name)
		meta, rc, err := dicom.OpenFile(p)
		if err != nil {
			t.Fatal(err)
		}
		ds, err := dicom.ReadDataSet(rc, dicom.LookupTransferSyntax(meta.TransferSyntaxUID), 64<<20)
		rc.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		paths = append(paths, p)
		// Named by the data set's UID: rtplan.dcm and rtdose.dcm carry
		// another in their meta.
		uid := ds.String(dicom.SOPInstanceUID)
		originals[uid] = p
		uids = append(uids, uid)
		studies[ds.String(dicom.StudyInstanceUID)] = true
	}
	curlFile := paths[len(paths)-1]
	goFiles := paths[:len(paths)-1]

	post := func(tok string, body io.Reader) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, s.base+"/studies", body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1 // chunked
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", `multipart/related; type=application/dicom; boundary=ward-interop`)
		req.Header.Set("Accept", "application/dicom+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, raw
	}
	body := stowBody(t, "ward-interop", goFiles...)
	for name, tok := range map[string]string{"viewer": viewer, "read scope": read} {
		if code, raw := post(tok, bytes.NewReader(body)); code != http.StatusForbidden {
			t.Fatalf("%s token: %d %s", name, code, raw)
		}
	}
	getStudies := func(dir string) {
		t.Helper()
		for study := range studies {
			out, ok := harness.RunDCMTK(t, "getscu", "-S", "-aec", "WARD", "-od", dir, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+study, "127.0.0.1", s.dport)
			if !ok || strings.Contains(out, "E: ") {
				t.Fatalf("getscu: %s", out)
			}
		}
	}
	empty := t.TempDir()
	getStudies(empty)
	if fs, _ := os.ReadDir(empty); len(fs) != 0 {
		t.Fatalf("refused STOW requests stored %d instances", len(fs))
	}

	// Go's client, chunked through a pipe.
	pr, pw := io.Pipe()
	go func() {
		for b := body; len(b) > 0; {
			n := min(len(b), 4096)
			if _, err := pw.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
		pw.Close()
	}()
	code, raw := post(write, pr)
	var res stowResponse
	if err := json.Unmarshal(raw, &res); err != nil || code != http.StatusOK || len(res.Referenced.Value) != len(goFiles) || len(res.Failed.Value) != 0 {
		t.Fatalf("STOW: %d %v %s", code, err, raw)
	}

	// curl, with a quoted boundary.
	bodyFile := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(bodyFile, stowBody(t, "curl boundary", curlFile), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("curl", "-sS", "-w", "\n%{http_code}", "-X", "POST", s.base+"/studies",
		"-H", "Authorization: Bearer "+write,
		"-H", `Content-Type: multipart/related; type="application/dicom"; boundary="curl boundary"`,
		"-H", "Transfer-Encoding: chunked",
		"--data-binary", "@"+bodyFile).CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "200") {
		t.Fatalf("curl: %v\n%s", err, out)
	}

	// DCMTK getscu brings each study back.
	dir := t.TempDir()
	getStudies(dir)
	compareReceived(t, dir, originals, uids)

	// Each STOW request is one Instances Transferred record, with the user;
	// the refused ones are recorded as failures.
	readAudit(t, s.dir, func(r []audit.Record) bool {
		n := 0
		for _, rec := range r {
			if rec.Event == "instances-transferred" && rec.Outcome == audit.OutcomeSuccess && strings.Contains(rec.XML, "upl") {
				n++
			}
		}
		return n == 2 && hasEvent(r, "instances-transferred", audit.OutcomeMinorFailure, "vie")
	})
}
