// Package browser drives the viewer Ward serves in a real browser:
// Debian's Chromium, headless, through the DevTools protocol (chromedp),
// against `ward serve` with studies stored over DIMSE by DCMTK's storescu.
// Locally the tests skip when Chromium, storescu or the viewer bundle
// (npm) is missing; under CI=true that is a failure.
package browser

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// The studies stored, from pydicom's test files: a CT and an MR in
// explicit VR little endian, and an NM in JPEG 2000.
var studies = []struct {
	file, listed, studyUID string   // listed: the patient name as the list shows it
	storescu               []string // the transfer syntax option storescu needs
}{
	{"CT_small.dcm", "CompressedSamples, CT1", "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322", nil},
	{"MR_small.dcm", "CompressedSamples, MR1", "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457", nil},
	{"JPEG2000.dcm", "CompressedSamples, NM1", "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457", []string{"-xw"}},
}

// The CT patient's prior study (made from the CT with another study UID).
const (
	priorStudyUID    = "1.2.826.0.1.3680043.2.1143.9000.1"
	priorDescription = "PRIOR CT OF THE SAME PATIENT"
)

const (
	user     = "reader"
	passcode = "correct horse battery"
)

// chromium finds Debian's Chromium.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testci.SkipOrFail(t, "chromium is not installed (apt-get install chromium)")
	return ""
}

// ward is a running ward serve with the viewer and the studies.
type ward struct {
	base   string
	scheme string
	spki   string // over HTTPS: the base64 SHA-256 of the certificate's key
	proc   *harness.Proc
}

// spkiHash is what Chromium's --ignore-certificate-errors-spki-list takes
// for the certificate in file crt.
func spkiHash(t *testing.T, crt string) string {
	t.Helper()
	b, err := os.ReadFile(crt)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", crt)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// startWard runs ward serve with the viewer: the bundle WARD_VIEWER_BUNDLE
// names (.ci/run fetches one), or one `ward viewer fetch` brings into the
// data directory as a user's would be. It adds a viewer user and stores
// the studies with storescu.
func startWard(t *testing.T, https bool, extra ...func(base string) string) *ward {
	t.Helper()
	if _, err := exec.LookPath("storescu"); err != nil {
		testci.SkipOrFail(t, "storescu (DCMTK) is not installed")
	}
	harness.RequireDir(t, harness.PydicomTestFiles)
	bin := harness.WardBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := "[storage]\nmin_free = \"16MiB\"\n[web]\n"
	w := &ward{scheme: "http"}
	if https {
		// HTTPS on loopback, with a certificate of ward pki's CA, which
		// the browser is told to accept by its key.
		if out, err := exec.Command(bin, "pki", "init", "--data", data).CombinedOutput(); err != nil {
			t.Fatalf("ward pki init: %v\n%s", err, out)
		}
		crt, key := filepath.Join(data, "pki", "server.crt"), filepath.Join(data, "pki", "server.key")
		conf += "tls_cert = " + strconv.Quote(crt) + "\ntls_key = " + strconv.Quote(key) + "\n"
		w.scheme, w.spki = "https", spkiHash(t, crt)
	}
	if b := os.Getenv("WARD_VIEWER_BUNDLE"); b != "" {
		conf += "viewer = " + strconv.Quote(b) + "\n"
	} else {
		if _, err := exec.LookPath("npm"); err != nil {
			testci.SkipOrFail(t, "no viewer bundle: npm is not installed and WARD_VIEWER_BUNDLE is not set")
		}
		fetch := exec.Command(bin, "viewer", "fetch", "--data", data)
		if out, err := fetch.CombinedOutput(); err != nil {
			testci.SkipOrFail(t, "ward viewer fetch: %v\n%s", err, out)
		}
	}
	dicomPort, httpPort := harness.FreePort(t), harness.FreePort(t)
	w.base = w.scheme + "://127.0.0.1:" + strconv.Itoa(httpPort)
	for _, f := range extra {
		conf += f(w.base)
	}
	if err := os.WriteFile(filepath.Join(data, "ward.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	add := exec.Command(bin, "user", "add", user, "--role", "viewer", "--data", data)
	add.Stdin = strings.NewReader(passcode + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ward user add: %v\n%s", err, out)
	}
	p := harness.Start(t, exec.Command(bin, "serve", "--data", data, "--loopback-any-ae",
		"--dicom-listen", "127.0.0.1:"+strconv.Itoa(dicomPort), "--http-listen", "127.0.0.1:"+strconv.Itoa(httpPort)), true)
	harness.WaitListen(t, dicomPort)
	harness.WaitListen(t, httpPort)
	p.WaitLog(t, "serving the OHIF viewer", 10*time.Second)
	for _, s := range studies {
		args := append([]string{"-aet", "MODALITY", "-aec", "WARD"}, s.storescu...)
		args = append(args, "127.0.0.1", strconv.Itoa(dicomPort), filepath.Join(harness.PydicomTestFiles, s.file))
		if out, ok := harness.RunDCMTK(t, "storescu", args...); !ok {
			t.Fatalf("storescu %s: %s", s.file, out)
		}
	}
	// A prior of the CT's patient: the same file as another study.
	prior := filepath.Join(t.TempDir(), "prior.dcm")
	b, err := os.ReadFile(filepath.Join(harness.PydicomTestFiles, studies[0].file))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prior, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, ok := harness.RunDCMTK(t, "dcmodify", "-nb", "-m", "StudyInstanceUID="+priorStudyUID, "-m", "SeriesInstanceUID="+priorStudyUID+".1",
		"-m", "SOPInstanceUID="+priorStudyUID+".1.1", "-m", "StudyDate=20020101", "-m", "StudyDescription="+priorDescription, prior); !ok {
		t.Fatalf("dcmodify: %s", out)
	}
	if out, ok := harness.RunDCMTK(t, "storescu", "-aet", "MODALITY", "-aec", "WARD", "127.0.0.1", strconv.Itoa(dicomPort), prior); !ok {
		t.Fatalf("storescu prior: %s", out)
	}
	w.proc = p
	return w
}

// browser is a headless Chromium tab with what the page reported: console
// errors, uncaught exceptions, the browser's own error entries (failed
// loads, CSP refusals) and the page's securitypolicyviolation events.
type browser struct {
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

// watchCSP records the page's CSP violations, from before its first
// script (a script the DevTools add is not bound by the page's CSP).
const watchCSP = `window.__csp = [];
document.addEventListener('securitypolicyviolation', e =>
  window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || '(inline)') + ' ' + (e.sourceFile || '') + ':' + e.lineNumber));`

func newBrowser(t *testing.T, w *ward) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("enable-unsafe-swiftshader", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	}
	if w.spki != "" {
		opts = append(opts, chromedp.Flag("ignore-certificate-errors-spki-list", w.spki))
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	b := &browser{ctx: ctx}
	// The first call starts the browser: no timeout on it.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: watchCSP}); err != nil {
		testci.SkipOrFail(t, "chromium does not start: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.report(m.String() + " " + m.URL)
			}
		}
	}()
	return b
}

func (b *browser) report(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errors = append(b.errors, s)
}

// takeErrors returns what the page reported since the last call, with its
// CSP violations.
func (b *browser) takeErrors(t *testing.T) []string {
	t.Helper()
	csp, _ := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](`(window.__csp || []).splice(0)`))
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.errors
	b.errors = nil
	for _, v := range csp {
		e = append(e, "CSP violation: "+v)
	}
	return e
}

func (b *browser) do(t *testing.T, limit time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, limit)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// eval evaluates expr (awaiting a promise) and returns its value.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// poll evaluates expr until ok accepts its value or limit passes.
func poll[T any](t *testing.T, b *browser, limit time.Duration, what, expr string, ok func(T) bool) T {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
		cancel()
		if err == nil && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last value %v, err %v)", what, limit, v, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (b *browser) location(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// litPixels counts, on the viewport canvases, the pixels that are not
// black (copied onto a 2D canvas to be read).
const litPixels = `(() => {
  let best = -1;
  for (const c of document.querySelectorAll('canvas.cornerstone-canvas')) {
    if (!c.width || !c.height) continue;
    const t = document.createElement('canvas');
    t.width = c.width; t.height = c.height;
    const x = t.getContext('2d');
    x.drawImage(c, 0, 0);
    const d = x.getImageData(0, 0, t.width, t.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] > 24 || d[i+1] > 24 || d[i+2] > 24) n++;
    best = Math.max(best, n);
  }
  return best;
})()`

// fetchStatus is the status of a same-origin GET from the page (with its
// cookies, as the viewer's requests go).
func fetchStatus(path, accept string) string {
	return fmt.Sprintf(`fetch(%q, {headers: {Accept: %q}, credentials: 'same-origin'}).then(r => r.status, e => { console.warn("fetch failed", e); return -1; })`, path, accept)
}

// TestViewer: the viewer needs sign-in; signed in, its study list shows
// the studies stored over DIMSE, and it draws each (a CT, an MR, a JPEG
// 2000 NM) with no console error and no CSP violation; signed out, the
// page's DICOMweb requests are refused.
func TestViewer(t *testing.T) {
	for _, https := range []bool{false, true} {
		name := map[bool]string{false: "http", true: "https"}[https]
		t.Run(name, func(t *testing.T) { testViewer(t, https) })
	}
}

// testViewer is TestViewer over plain HTTP (loopback) or HTTPS (the only
// way Ward serves beyond loopback: Secure, __Host- session cookies, HSTS).
func testViewer(t *testing.T, https bool) {
	w := startWard(t, https)
	b := newBrowser(t, w)

	// Sign-in is required: the viewer's address lands on the sign-in page.
	b.do(t, 30*time.Second, chromedp.Navigate(w.base+"/"), chromedp.WaitVisible(chromedp.CSS(`input[name=user]`)))
	if loc := b.location(t); !strings.HasPrefix(loc, w.base+"/signin") {
		t.Fatalf("the viewer without a session is at %s, want the sign-in page", loc)
	}
	b.do(t, 30*time.Second,
		chromedp.SendKeys(chromedp.CSS(`input[name=user]`), user),
		chromedp.SendKeys(chromedp.CSS(`input[name=passcode]`), passcode),
		chromedp.Submit(chromedp.CSS(`input[name=passcode]`)),
	)

	// The study list shows the studies stored over DIMSE.
	start := time.Now()
	poll(t, b, 60*time.Second, "the study list shows every study", `document.body.innerText`, func(s string) bool {
		for _, st := range studies {
			if !strings.Contains(s, st.listed) {
				return false
			}
		}
		return true
	})
	t.Logf("study list after %s", time.Since(start).Round(time.Millisecond))
	if loc := b.location(t); loc != w.base+"/" {
		t.Errorf("after sign-in the browser is at %s, want %s/", loc, w.base)
	}
	if errs := b.takeErrors(t); len(errs) > 0 {
		t.Errorf("the study list reported errors:\n  %s", strings.Join(errs, "\n  "))
	}
	// The session cookie as the browser keeps it: out of the page's
	// reach, not sent from other sites, over HTTPS Secure and bound to
	// this origin (__Host-).
	jar, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{w.base + "/"}})
	if err != nil {
		t.Fatal(err)
	}
	wantName := map[bool]string{false: "ward-session", true: "__Host-ward-session"}[https]
	var session *network.Cookie
	for _, c := range jar.Cookies {
		if c.Name == wantName {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict || session.Secure != https || session.Path != "/" {
		t.Errorf("the browser's session cookie: %+v, want %s, HttpOnly, SameSite=Strict, Secure=%v, Path=/", session, wantName, https)
	}

	// Search: the study list's filters (here from its URL) become QIDO-RS
	// queries, by patient name with wildcards and by patient ID.
	for _, q := range []struct{ query, want, not string }{
		{"patientName=CT1", studies[0].listed, studies[1].listed},
		{"mrn=4MR1", studies[1].listed, studies[0].listed},
	} {
		b.do(t, 30*time.Second, chromedp.Navigate(w.base+"/?"+q.query))
		poll(t, b, 30*time.Second, "the study list searched with "+q.query, `document.body.innerText`, func(s string) bool {
			return strings.Contains(s, q.want) && !strings.Contains(s, q.not) && !strings.Contains(s, studies[2].listed)
		})
	}

	// Each study draws.
	for _, st := range studies {
		start := time.Now()
		b.do(t, 30*time.Second, chromedp.Navigate(w.base+"/viewer?StudyInstanceUIDs="+st.studyUID))
		n := poll(t, b, 90*time.Second, st.file+" draws", litPixels, func(n int) bool { return n > 100 })
		t.Logf("%s: %d lit pixels after %s", st.file, n, time.Since(start).Round(time.Millisecond))
		if st.file == studies[0].file {
			// Priors by PatientID: the study browser lists the patient's
			// other study.
			poll(t, b, 30*time.Second, "the CT's prior is listed", `document.body.innerText`, func(s string) bool {
				return strings.Contains(strings.ToUpper(s), priorDescription)
			})
		}
		time.Sleep(500 * time.Millisecond) // late errors of the same page
		if errs := b.takeErrors(t); len(errs) > 0 {
			t.Errorf("viewing %s reported errors:\n  %s", st.file, strings.Join(errs, "\n  "))
		}
	}

	// The browser reports CSP violations to Ward, its workers' too (which
	// the page does not see): none was logged.
	time.Sleep(time.Second)
	for _, l := range strings.Split(w.proc.Log.String(), "\n") {
		if strings.Contains(l, "CSP violation") {
			t.Errorf("ward logged %s", l)
		}
	}

	// Signed in, the page's DICOMweb requests are served.
	// The page's requests: a search, and the images (a study retrieve).
	requests := []struct{ path, accept string }{
		{"/dicom-web/studies/" + studies[0].studyUID + "/series", "application/dicom+json"},
		{"/dicom-web/studies", "application/dicom+json"},
		{"/dicom-web/studies/" + studies[2].studyUID, `multipart/related; type="application/dicom"; transfer-syntax=*`},
	}
	for _, rq := range requests {
		if status := eval[int](t, b, fetchStatus(rq.path, rq.accept)); status != http.StatusOK {
			t.Fatalf("signed in, GET %s from the page: %d, want 200", rq.path, status)
		}
	}

	// Sign-out, in a second tab, from the link the viewer shows, through
	// the sign-out page: the viewer left open in the first tab is refused
	// from then on.
	tab, cancelTab := chromedp.NewContext(b.ctx)
	defer cancelTab()
	other := &browser{ctx: tab}
	// The tab's first call opens it: no timeout on that one.
	if err := chromedp.Do(tab, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	other.do(t, 30*time.Second, chromedp.Navigate(w.base+"/"), chromedp.WaitVisible(chromedp.CSS(`a[href="/signout"]`)))
	other.do(t, 30*time.Second, chromedp.Click(chromedp.CSS(`a[href="/signout"]`)), chromedp.WaitVisible(chromedp.CSS(`form[action="/signout"] button`)))
	other.do(t, 30*time.Second, chromedp.Click(chromedp.CSS(`form[action="/signout"] button`)), chromedp.WaitVisible(chromedp.CSS(`input[name=user]`)))
	if loc := other.location(t); !strings.HasPrefix(loc, w.base+"/signin") {
		t.Errorf("after sign-out the browser is at %s, want the sign-in page", loc)
	}
	for _, rq := range requests {
		if status := eval[int](t, b, fetchStatus(rq.path, rq.accept)); status != http.StatusUnauthorized {
			t.Errorf("signed out, GET %s from the viewer's page: %d, want 401", rq.path, status)
		}
	}
	b.takeErrors(t) // the refused requests' own console entries
	b.do(t, 30*time.Second, chromedp.Navigate(w.base+"/viewer?StudyInstanceUIDs="+studies[0].studyUID), chromedp.WaitVisible(chromedp.CSS(`input[name=user]`)))
	if loc := b.location(t); !strings.HasPrefix(loc, w.base+"/signin") {
		t.Errorf("signed out, the viewer is at %s, want the sign-in page", loc)
	}
}
