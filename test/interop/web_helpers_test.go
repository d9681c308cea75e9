package interop

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/test/harness"
)

// webWard is a `ward serve` process with its web listener on a loopback
// port: the DICOMweb tests drive it as clients do, over the network, with
// users and tokens made by the ward command.
type webWard struct {
	bin, dir  string
	dicomPort int
	webPort   int
	scheme    string
	proc      *harness.Proc
	client    *http.Client
}

// startWebWard writes DIR/ward.toml ([dicom] on a free loopback port,
// loopback_any_ae for DCMTK's default AE titles, then extra: its first
// lines are still in [dicom]) and runs
// `ward serve --http-listen 127.0.0.1:PORT` until the test ends. With
// roots the listener is HTTPS (extra sets [web] tls_cert and tls_key) and
// the client verifies its certificate for 127.0.0.1 against roots.
func startWebWard(t *testing.T, extra string, roots *x509.CertPool) *webWard {
	t.Helper()
	requireTool(t, "go")
	w := &webWard{bin: harness.WardBinary(t), dir: harness.DataDir(t), dicomPort: freePort(t), webPort: freePort(t), scheme: "http"}
	conf := "[storage]\nmin_free = \"16MiB\"\n[dicom]\nlisten = \"127.0.0.1:" + strconv.Itoa(w.dicomPort) + "\"\nloopback_any_ae = true\n" + extra
	if err := os.WriteFile(filepath.Join(w.dir, "ward.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if roots != nil {
		w.scheme = "https"
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	w.client = &http.Client{Transport: tr, Timeout: 60 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	w.proc = harness.Start(t, exec.Command(w.bin, "serve", "--data", w.dir, "--http-listen", "127.0.0.1:"+strconv.Itoa(w.webPort)), true)
	w.proc.WaitServing(t)
	waitListen(t, w.webPort)
	return w
}

// url is the address of path on the web listener.
func (w *webWard) url(path string) string {
	return w.scheme + "://127.0.0.1:" + strconv.Itoa(w.webPort) + path
}

// dicomweb is the DICOMweb root, with a trailing slash (as Orthanc's
// configuration wants it).
func (w *webWard) dicomweb() string { return w.url("/dicom-web/") }

// cli runs the ward command on the data directory with stdin and returns
// its stdout; it fails the test when the command fails.
func (w *webWard) cli(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(w.bin, append(args, "--data", w.dir)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("ward %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// user adds a user with roles (comma-separated) and a passcode nobody
// uses (the tests authenticate by token).
func (w *webWard) user(t *testing.T, name, roles string) {
	t.Helper()
	w.cli(t, "a long passcode for "+name+"\n", "user", "add", name, "--role", roles)
}

// token issues a token of scope (read or write) for user and returns it.
func (w *webWard) token(t *testing.T, user, scope string) string {
	t.Helper()
	tok := strings.TrimSpace(w.cli(t, "", "token", "issue", user, "--scope", scope, "--ttl", "2h"))
	if tok == "" || strings.ContainsAny(tok, " \n") {
		t.Fatalf("ward token issue printed %q", tok)
	}
	return tok
}

// do sends a request to the web listener with a bearer token ("" for
// none) and extra headers, and returns the answer with its body read.
func (w *webWard) do(t *testing.T, method, path, token string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, w.url(path), body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return resp, b
}

// multipartDICOM is a STOW-RS request body holding files, with its Content-Type.
func multipartDICOM(t *testing.T, files ...string) (io.Reader, string) {
	t.Helper()
	var b bytes.Buffer
	const boundary = "ward-interop-7d3c2a"
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("--" + boundary + "\r\nContent-Type: application/dicom\r\n\r\n")
		b.Write(data)
		b.WriteString("\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return &b, `multipart/related; type="application/dicom"; boundary=` + boundary
}

// stow stores files with STOW-RS as token and returns the answer.
func (w *webWard) stow(t *testing.T, token string, files ...string) (*http.Response, []byte) {
	t.Helper()
	body, ct := multipartDICOM(t, files...)
	return w.do(t, "POST", "/dicom-web/studies", token, body, "Content-Type", ct, "Accept", "application/dicom+json")
}

// auditHas reports whether recs hold a record of event with outcome whose
// XML contains every one of texts.
func auditHas(recs []audit.Record, event string, outcome int, texts ...string) bool {
	for _, r := range recs {
		if r.Event != event || r.Outcome != outcome {
			continue
		}
		ok := true
		for _, s := range texts {
			if !strings.Contains(r.XML, s) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// uidsOfFile reads the study, series and instance UIDs of a Part 10 file.
func uidsOfFile(t *testing.T, path string) (study, series, sop string) {
	t.Helper()
	meta, rc, err := dicom.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want := func(tg dicom.Tag) bool {
		return tg == dicom.StudyInstanceUID || tg == dicom.SeriesInstanceUID || tg == dicom.SOPInstanceUID
	}
	a, err := dicom.Scan(rc, dicom.LookupTransferSyntax(meta.TransferSyntaxUID), want, 1024)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return a.String(dicom.StudyInstanceUID), a.String(dicom.SeriesInstanceUID), a.String(dicom.SOPInstanceUID)
}

// writeFile writes a file of the test's, mode 0600.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
