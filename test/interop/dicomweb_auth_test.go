package interop

import (
	"bytes"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/test/harness"
)

// The DICOMweb front end's authentication, authorization, hardening and
// audit, driven through a real `ward serve --http-listen` with tokens made
// by `ward token issue`, as any HTTP client sees them.

// tokenID is the public ID of a token (ward_ID_SECRET).
func tokenID(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.SplitN(tok, "_", 3)
	if len(parts) != 3 {
		t.Fatalf("token %q is not ward_ID_SECRET", tok)
	}
	return parts[1]
}

// hasPeer reports whether a record names who in its participants.
func hasPeer(r audit.Record, who string) bool { return slices.Contains(r.Peers, who) }

// assertHardened checks the security headers every answer carries, over
// TLS or not.
func assertHardened(t *testing.T, what string, resp *http.Response, tls bool) {
	t.Helper()
	h := resp.Header
	if h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("%s: X-Content-Type-Options %q", what, h.Get("X-Content-Type-Options"))
	}
	if !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("%s: Content-Security-Policy %q", what, h.Get("Content-Security-Policy"))
	}
	if hsts := h.Get("Strict-Transport-Security"); tls != (hsts != "") {
		t.Errorf("%s: Strict-Transport-Security %q over TLS=%v", what, hsts, tls)
	}
}

// TestDICOMwebUnauthenticated: without a token, or with a wrong one, every
// DICOMweb route answers 401 with a Bearer challenge, and no answer names
// a study; the wrong token is a failed User Authentication in the audit
// trail, naming the source. Answers carry nosniff and frame-ancestors
// 'none', and no HSTS on plain HTTP.
func TestDICOMwebUnauthenticated(t *testing.T) {
	w := startWebWard(t, "lockout_after = -1\n", nil)
	routes := []struct{ method, path string }{
		{"GET", "/dicom-web/studies"},
		{"GET", "/dicom-web/studies?PatientName=*"},
		{"GET", "/dicom-web/series"},
		{"GET", "/dicom-web/instances"},
		{"GET", "/dicom-web/studies/1.2.3"},
		{"GET", "/dicom-web/studies/1.2.3/series/4.5/metadata"},
		{"GET", "/dicom-web/studies/1.2.3/series/4.5/instances/6.7/frames/1"},
		{"POST", "/dicom-web/studies"},
		{"GET", "/wado?requestType=WADO&studyUID=1.2.3&seriesUID=4.5&objectUID=6.7"},
	}
	for _, rt := range routes {
		resp, body := w.do(t, rt.method, rt.path, "", nil)
		if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s %s without a token: %s, WWW-Authenticate %q: %s", rt.method, rt.path, resp.Status, resp.Header.Get("WWW-Authenticate"), body)
		}
		assertHardened(t, rt.path, resp, false)
	}
	// Shaped like a token Ward issues (ward_ID_SECRET, 43 characters of
	// secret), so that the failure names its ID.
	wrong := "ward_0123456789abcdef_notthesecret" + strings.Repeat("A", 43-len("notthesecret"))
	resp, body := w.do(t, "GET", "/dicom-web/studies", wrong, nil)
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("a wrong token: %s %q: %s", resp.Status, resp.Header.Get("WWW-Authenticate"), body)
	}
	if bytes.Contains(body, []byte("notthesecret")) {
		t.Errorf("the answer repeats the token: %s", body)
	}
	resp, _ = w.do(t, "GET", "/dicom-web/studies", "", nil, "Authorization", "Basic YWRtaW46YWRtaW4=")
	if resp.StatusCode != 401 {
		t.Errorf("basic authentication: %s", resp.Status)
	}
	recs, ok := harness.PollAudit(w.dir, 10*time.Second, func(r []audit.Record) bool {
		return auditHas(r, "authentication", audit.OutcomeMinorFailure, "0123456789abcdef", "127.0.0.1")
	})
	if !ok {
		for _, r := range recs {
			t.Logf("%s", r.XML)
		}
		t.Error("no failed User Authentication naming the token and the source")
	}
	for _, r := range recs {
		if strings.Contains(r.XML, "notthesecret") {
			t.Errorf("a token's secret in the audit trail: %s", r.XML)
		}
	}
	if strings.Contains(w.proc.Log.String(), "notthesecret") {
		t.Errorf("a token's secret in Ward's log")
	}
}

// TestDICOMwebLockout: wrong tokens from one source are locked out after
// the DIMSE default of 5 failures (429 with Retry-After, a Security Alert),
// and the lockout is the DIMSE one: then a good token from that source,
// and a DCMTK echoscu, are refused too.
func TestDICOMwebLockout(t *testing.T) {
	requireTool(t, "echoscu")
	w := startWebWard(t, "", nil)
	w.user(t, "vera", "viewer")
	good := w.token(t, "vera", "read")
	if out, err := dcmtk("echoscu", "-to", "5", "-aec", "WARD", "127.0.0.1", strconv.Itoa(w.dicomPort)).CombinedOutput(); err != nil {
		t.Fatalf("echoscu before the lockout: %v\n%s", err, out)
	}
	var last *http.Response
	for i := 0; i < 6; i++ {
		last, _ = w.do(t, "GET", "/dicom-web/studies", "ward_00000000000000"+strconv.Itoa(10+i)+"_guess"+strconv.Itoa(i), nil)
		if i < 5 && last.StatusCode != 401 {
			t.Fatalf("guess %d: %s, want 401", i+1, last.Status)
		}
	}
	if last.StatusCode != 429 {
		t.Fatalf("the 6th guess: %s, want 429", last.Status)
	}
	if ra, err := strconv.Atoi(last.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q", last.Header.Get("Retry-After"))
	}
	resp, _ := w.do(t, "GET", "/dicom-web/studies", good, nil)
	if resp.StatusCode != 429 {
		t.Errorf("a good token from the locked-out source: %s, want 429", resp.Status)
	}
	if out, err := dcmtk("echoscu", "-to", "5", "-aec", "WARD", "127.0.0.1", strconv.Itoa(w.dicomPort)).CombinedOutput(); err == nil {
		t.Errorf("echoscu from the source the web front end locked out was accepted:\n%s", out)
	}
	readAudit(t, w.dir, func(r []audit.Record) bool {
		return auditHas(r, "security-alert", audit.OutcomeSuccess, "127.0.0.1") || auditHas(r, "security-alert", audit.OutcomeMinorFailure, "127.0.0.1")
	})
}

// TestDICOMwebRolesAndScopes: STOW needs the uploader (or admin) role and
// a write token: a viewer's read and write tokens and an uploader's read
// token get 403, an uploader's write token stores; every role reads. A
// token revoked with `ward token revoke` while ward serve runs stops
// working at once. Each request is audited with its user: QIDO as Query,
// WADO and STOW as DICOM Instances Transferred, the refused STOW as a
// failure.
func TestDICOMwebRolesAndScopes(t *testing.T) {
	requireDir(t, pydicomTestFiles)
	w := startWebWard(t, "lockout_after = -1\n", nil)
	w.user(t, "vera", "viewer")
	w.user(t, "ulla", "uploader")
	w.user(t, "adam", "admin")
	veraRead, veraWrite := w.token(t, "vera", "read"), w.token(t, "vera", "write")
	ullaRead, ullaWrite := w.token(t, "ulla", "read"), w.token(t, "ulla", "write")
	adamWrite := w.token(t, "adam", "write")
	ct := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	mr := filepath.Join(pydicomTestFiles, "MR_small.dcm")
	studyCT, seriesCT, sopCT := uidsOfFile(t, ct)

	for _, c := range []struct{ who, tok string }{{"viewer read", veraRead}, {"viewer write", veraWrite}, {"uploader read", ullaRead}} {
		resp, body := w.stow(t, c.tok, ct)
		if resp.StatusCode != 403 {
			t.Errorf("STOW with a %s token: %s, want 403: %s", c.who, resp.Status, body)
		}
	}
	if resp, body := w.stow(t, ullaWrite, ct); resp.StatusCode != 200 {
		t.Fatalf("STOW with an uploader's write token: %s: %s", resp.Status, body)
	}
	if resp, body := w.stow(t, adamWrite, mr); resp.StatusCode != 200 {
		t.Errorf("STOW with an admin's write token: %s: %s", resp.Status, body)
	}
	for _, tok := range []string{veraRead, veraWrite, ullaRead, adamWrite} {
		resp, body := w.do(t, "GET", "/dicom-web/studies?StudyInstanceUID="+studyCT, tok, nil, "Accept", "application/dicom+json")
		if resp.StatusCode != 200 || !strings.Contains(string(body), studyCT) {
			t.Errorf("QIDO: %s: %.300s", resp.Status, body)
		}
	}
	resp, body := w.do(t, "GET", "/dicom-web/studies/"+studyCT+"/series/"+seriesCT+"/instances/"+sopCT, veraRead, nil,
		"Accept", `multipart/related; type="application/dicom"; transfer-syntax=*`)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/related") {
		t.Errorf("WADO-RS instance: %s %q: %.300s", resp.Status, resp.Header.Get("Content-Type"), body)
	}

	// Revoked while ward serve runs: refused at once.
	w.cli(t, "", "token", "revoke", tokenID(t, veraRead))
	resp, _ = w.do(t, "GET", "/dicom-web/studies?StudyInstanceUID="+studyCT, veraRead, nil)
	if resp.StatusCode != 401 {
		t.Errorf("a revoked token: %s, want 401", resp.Status)
	}
	resp, _ = w.do(t, "GET", "/dicom-web/studies?StudyInstanceUID="+studyCT, veraWrite, nil)
	if resp.StatusCode == 401 || resp.StatusCode == 403 {
		t.Errorf("the user's other token after one was revoked: %s", resp.Status)
	}

	readAudit(t, w.dir, func(r []audit.Record) bool {
		var stowOK, stowRefused, query, wado bool
		for _, x := range r {
			switch {
			case x.Event == "instances-transferred" && x.Outcome == audit.OutcomeSuccess && hasPeer(x, "ulla") && strings.Contains(x.XML, `EventActionCode="C"`):
				stowOK = true
			case x.Event == "instances-transferred" && x.Outcome != audit.OutcomeSuccess && hasPeer(x, "vera"):
				stowRefused = true
			case x.Event == "query" && hasPeer(x, "vera"):
				query = true
			case x.Event == "instances-transferred" && hasPeer(x, "vera") && strings.Contains(x.XML, `EventActionCode="R"`):
				wado = true
			}
		}
		return stowOK && stowRefused && query && wado && auditHas(r, "authentication", audit.OutcomeMinorFailure, tokenID(t, veraRead))
	})
}

// TestDICOMwebHardening: CORS headers only for an origin in [web]
// allow_origins (a preflight from another gets 403), a body over [web]
// max_body gets 413 naming the limit, and no HSTS on plain HTTP.
func TestDICOMwebHardening(t *testing.T) {
	w := startWebWard(t, "lockout_after = -1\n[web]\nallow_origins = [\"https://viewer.example.org\"]\nmax_body = \"1MiB\"\n", nil)
	w.user(t, "ulla", "uploader")
	tok := w.token(t, "ulla", "write")

	resp, _ := w.do(t, "GET", "/dicom-web/studies", tok, nil, "Origin", "https://viewer.example.org")
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://viewer.example.org" {
		t.Errorf("allowed origin: Access-Control-Allow-Origin %q", resp.Header.Get("Access-Control-Allow-Origin"))
	}
	assertHardened(t, "GET /studies", resp, false)
	resp, _ = w.do(t, "GET", "/dicom-web/studies", tok, nil, "Origin", "https://evil.example.net")
	if v := resp.Header.Get("Access-Control-Allow-Origin"); v != "" {
		t.Errorf("another origin: Access-Control-Allow-Origin %q", v)
	}
	resp, _ = w.do(t, "OPTIONS", "/dicom-web/studies", "", nil, "Origin", "https://viewer.example.org", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization, content-type")
	if resp.StatusCode/100 != 2 || resp.Header.Get("Access-Control-Allow-Origin") != "https://viewer.example.org" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight from the allowed origin: %s %v", resp.Status, resp.Header)
	}
	resp, _ = w.do(t, "OPTIONS", "/dicom-web/studies", "", nil, "Origin", "https://evil.example.net", "Access-Control-Request-Method", "GET")
	if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %s %v", resp.Status, resp.Header)
	}
	// Over max_body: with a Content-Length, and chunked.
	big := bytes.Repeat([]byte("x"), 2<<20)
	resp, body := w.do(t, "POST", "/dicom-web/studies", tok, bytes.NewReader(big), "Content-Type", `multipart/related; type="application/dicom"; boundary=b`)
	if resp.StatusCode != 413 || !strings.Contains(string(body), "max_body") {
		t.Errorf("a 2 MiB body over max_body 1MiB: %s: %s", resp.Status, body)
	}
	// Chunked, so that the length is not known beforehand: one part that
	// runs past the limit.
	part := append([]byte("--b\r\nContent-Type: application/dicom\r\n\r\n"), big...)
	part = append(part, "\r\n--b--\r\n"...)
	resp, body = w.do(t, "POST", "/dicom-web/studies", tok, struct{ *bytes.Reader }{bytes.NewReader(part)}, "Content-Type", `multipart/related; type="application/dicom"; boundary=b`)
	if resp.StatusCode != 413 {
		t.Errorf("a chunked 2 MiB body over max_body 1MiB: %s: %.300s", resp.Status, body)
	}
}

// TestDICOMwebHTTPS: beyond loopback without a certificate ward serve
// refuses to start and says why; with `ward pki init`'s certificate the
// listener serves HTTPS (verified against the site's CA for 127.0.0.1),
// with HSTS, and refuses plain HTTP on that port.
func TestDICOMwebHTTPS(t *testing.T) {
	requireTool(t, "go")
	bin := harness.WardBinary(t)
	dir := harness.DataDir(t)
	conf := "[dicom]\nlisten = \"127.0.0.1:" + strconv.Itoa(freePort(t)) + "\"\n[storage]\nmin_free = \"16MiB\"\n[web]\nlisten = \"0.0.0.0:" + strconv.Itoa(freePort(t)) + "\"\n"
	writeFile(t, filepath.Join(dir, "ward.toml"), conf)
	cmd := exec.Command(bin, "serve", "--data", dir)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("ward serve with plain HTTP on 0.0.0.0 kept running")
	}
	if err == nil || !strings.Contains(string(out), "plain HTTP is served on loopback only") || !strings.Contains(string(out), "tls_cert") {
		t.Errorf("ward serve with plain HTTP on 0.0.0.0: %v\n%s", err, out)
	}

	p := makePKI(t, "viewer")
	w := startWebWard(t, "lockout_after = -1\n[web]\ntls_cert = \""+p.srvCert+"\"\ntls_key = \""+p.srvKey+"\"\n", p.roots(t))
	if !strings.Contains(w.proc.Log.String(), "web=https://") {
		t.Errorf("ward serve does not say it serves HTTPS:\n%s", w.proc.Log.String())
	}
	w.user(t, "vera", "viewer")
	tok := w.token(t, "vera", "read")
	resp, body := w.do(t, "GET", "/dicom-web/studies", tok, nil, "Accept", "application/dicom+json")
	if resp.TLS == nil || resp.StatusCode == 401 || resp.StatusCode == 403 {
		t.Fatalf("over HTTPS: %s: %s", resp.Status, body)
	}
	assertHardened(t, "HTTPS", resp, true)
	resp, _ = w.do(t, "GET", "/dicom-web/studies", "", nil)
	if resp.StatusCode != 401 {
		t.Errorf("HTTPS without a token: %s", resp.Status)
	}
	plain, err := http.Get("http://127.0.0.1:" + strconv.Itoa(w.webPort) + "/dicom-web/studies")
	if err == nil {
		plain.Body.Close()
		if plain.StatusCode != 400 {
			t.Errorf("plain HTTP on the HTTPS port: %s", plain.Status)
		}
	}
}

// TestDICOMwebTokenLockout: guesses at one token's secret from many
// loopback sources (each under the per-source limit) lock that token out:
// then the right secret gets 429 from a fresh source too, the user's other
// token still works, and the lockout is a Security Alert naming the token.
func TestDICOMwebTokenLockout(t *testing.T) {
	w := startWebWard(t, "", nil)
	w.user(t, "vera", "viewer")
	good, other := w.token(t, "vera", "read"), w.token(t, "vera", "read")
	id := tokenID(t, good)
	wrong := "ward_" + id + "_" + strings.Repeat("C", 43)
	from := func(src, tok string) *http.Response {
		t.Helper()
		tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("GET", w.url("/dicom-web/studies?StudyInstanceUID=1.2.3"), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("from %s: %v", src, err)
		}
		resp.Body.Close()
		return resp
	}
	for i := 2; i <= 6; i++ {
		if resp := from("127.0.0."+strconv.Itoa(i), wrong); resp.StatusCode != 401 {
			t.Fatalf("guess from 127.0.0.%d: %s, want 401", i, resp.Status)
		}
	}
	resp := from("127.0.0.7", good)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("the locked-out token from a fresh source: %s (Retry-After %q), want 429", resp.Status, resp.Header.Get("Retry-After"))
	}
	if resp := from("127.0.0.8", other); resp.StatusCode == 401 || resp.StatusCode == 429 {
		t.Errorf("the user's other token: %s", resp.Status)
	}
	readAudit(t, w.dir, func(r []audit.Record) bool {
		return auditHas(r, "security-alert", audit.OutcomeMinorFailure, "token "+id+" locked out")
	})
}
