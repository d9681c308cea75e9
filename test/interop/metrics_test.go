package interop

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/test/harness"
)

// metricsSite is a real `ward serve` with its metrics listener on
// loopback and a drain of drain on SIGTERM.
type metricsSite struct {
	proc                       *harness.Proc
	bin, dir                   string
	dport, hport, mport        int
	dicomweb, metrics, webRoot string
}

func startMetricsSite(t *testing.T, drain string) *metricsSite {
	t.Helper()
	requireTool(t, "go")
	s := &metricsSite{bin: harness.WardBinary(t), dir: harness.DataDir(t)}
	s.dport, s.hport, s.mport = freePort(t), freePort(t), freePort(t)
	cfg := fmt.Sprintf("[metrics]\nlisten = \"127.0.0.1:%d\"\ndrain = %q\n", s.mport, drain)
	if err := os.WriteFile(filepath.Join(s.dir, "ward.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.proc = harness.Start(t, exec.Command(s.bin, "serve", "--data", s.dir, "--dicom-listen", "127.0.0.1:"+strconv.Itoa(s.dport), "--aet", "WARD",
		"--loopback-any-ae", "--http-listen", "127.0.0.1:"+strconv.Itoa(s.hport), "--min-free", "16MiB", "--log-format", "json"), true)
	s.proc.WaitServing(t)
	waitListen(t, s.hport)
	waitListen(t, s.mport)
	s.webRoot = "http://127.0.0.1:" + strconv.Itoa(s.hport)
	s.dicomweb = s.webRoot + "/dicom-web"
	s.metrics = "http://127.0.0.1:" + strconv.Itoa(s.mport)
	return s
}

// ward runs a ward command on the site's data directory.
func (s *metricsSite) ward(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(s.bin, append(args, "--data", s.dir)...)
	cmd.Stdin = strings.NewReader(stdin)
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ward %s: %v\n%s%s", strings.Join(args, " "), err, out, errb.String())
	}
	return strings.TrimSpace(string(out))
}

// httpGet returns the status and body of a GET.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	rs, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer rs.Body.Close()
	b, _ := io.ReadAll(rs.Body)
	return rs.StatusCode, string(b)
}

// seriesValue is one series' value in a text exposition.
func seriesValue(body, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// TestMetricsAfterStorescuAndStow: DCMTK storescu stores two of
// pydicom's files in a real ward serve and Go's HTTP client STOW-RS another
// (an uploader's token); the metrics listener's /metrics then shows the
// C-STOREs and the STOW-RS request counted, both latency histograms
// moved, the associations accepted, and every JSON log line names the
// node. Nothing in the metrics names the peer's AE title or a UID.
func TestMetricsAfterStorescuAndStow(t *testing.T) {
	requireTool(t, "storescu")
	requirePydicom(t)
	s := startMetricsSite(t, "0s")
	_, before := httpGet(t, s.metrics+"/metrics")
	files := []string{filepath.Join(pydicomTestFiles, "CT_small.dcm"), filepath.Join(pydicomTestFiles, "MR_small.dcm")}
	if out, ok := harness.RunDCMTK(t, "storescu", append([]string{"-aet", "MODALITY9", "-aec", "WARD", "127.0.0.1", strconv.Itoa(s.dport)}, files...)...); !ok {
		t.Fatalf("storescu: %s", out)
	}
	tok := func() string {
		s.ward(t, "a long passcode\n", "user", "add", "upl", "--role", "uploader")
		return s.ward(t, "", "token", "issue", "upl", "--scope", "write")
	}()
	body := stowBody(t, "b0undary", filepath.Join(pydicomTestFiles, "rtplan.dcm"))
	rq, _ := http.NewRequest(http.MethodPost, s.dicomweb+"/studies", bytes.NewReader(body))
	rq.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=b0undary`)
	rq.Header.Set("Authorization", "Bearer "+tok)
	rs, err := http.DefaultClient.Do(rq)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, rs.Body)
	rs.Body.Close()
	if rs.StatusCode != 200 {
		t.Fatalf("STOW-RS: %d", rs.StatusCode)
	}

	moved := map[string]float64{
		`ward_dicom_operations_total{service="store",status="success"}`: 2,
		`ward_dicom_store_duration_seconds_count`:                       2,
		`ward_dicom_associations_total{outcome="accepted"}`:             1,
		`ward_http_requests_total{code="2xx",route="stow"}`:             1,
		`ward_http_stow_duration_seconds_count`:                         1,
	}
	var after string
	deadline := time.Now().Add(10 * time.Second)
	for {
		var code int
		code, after = httpGet(t, s.metrics+"/metrics")
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		short := ""
		for series, by := range moved {
			was, _ := seriesValue(before, series)
			now, _ := seriesValue(after, series)
			if now-was < by {
				short = fmt.Sprintf("%s went from %v to %v, want +%v", series, was, now, by)
			}
		}
		if short == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s\n%s", short, after)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v, ok := seriesValue(after, `ward_dicom_store_duration_seconds_bucket{le="+Inf"}`); !ok || v < 2 {
		t.Errorf("C-STORE histogram +Inf bucket %v", v)
	}
	for _, private := range []string{"MODALITY9", "1.3.6.1.4.1.5962", "CompressedSamples"} {
		if strings.Contains(after, private) {
			t.Errorf("/metrics names %q", private)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(s.proc.Log.String()), "\n") {
		if strings.HasPrefix(line, "{") && !strings.Contains(line, `"node":"`) {
			t.Errorf("a JSON log record without the node: %s", line)
		}
	}
}

// TestDrainBehindHAProxy: HAProxy (Debian's, TCP mode for DIMSE and HTTP
// mode for DICOMweb, both checking the metrics listener's /readyz) passes
// echoscu and /healthz to a ward serve while it is ready. On SIGTERM, with
// [metrics] drain, /readyz answers 503 while Ward still accepts
// associations directly; HAProxy's check takes the node out (no server
// for a new C-ECHO or request), and Ward stops once the drain is over.
func TestDrainBehindHAProxy(t *testing.T) {
	requireTool(t, "haproxy", "echoscu")
	s := startMetricsSite(t, "4s")
	if code, body := httpGet(t, s.metrics+"/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	tcpPort, httpPort := freePort(t), freePort(t)
	cfg := fmt.Sprintf(`global
    maxconn 100
defaults
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    default-server inter 200ms fall 1 rise 1
frontend dimse
    mode tcp
    bind 127.0.0.1:%[1]d
    default_backend ward_dimse
backend ward_dimse
    mode tcp
    option httpchk GET /readyz
    http-check expect status 200
    server n1 127.0.0.1:%[3]d check port %[4]d
frontend dicomweb
    mode http
    bind 127.0.0.1:%[2]d
    default_backend ward_web
backend ward_web
    mode http
    option httpchk GET /readyz
    http-check expect status 200
    server n1 127.0.0.1:%[5]d check
`, tcpPort, httpPort, s.dport, s.mport, s.hport)
	cfgFile := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("haproxy", "-c", "-f", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	harness.Start(t, exec.Command("haproxy", "-db", "-f", cfgFile), false)
	waitListen(t, tcpPort)
	waitListen(t, httpPort)
	echoVia := func(port int) bool {
		_, ok := harness.RunDCMTK(t, "echoscu", "-to", "5", "-aet", "ECHOER", "-aec", "WARD", "127.0.0.1", strconv.Itoa(port))
		return ok
	}
	poll := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 3 s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	poll("C-ECHO through HAProxy", func() bool { return echoVia(tcpPort) })
	poll("/healthz through HAProxy", func() bool {
		code, _ := httpGet(t, "http://127.0.0.1:"+strconv.Itoa(httpPort)+"/healthz")
		return code == 200
	})

	start := time.Now()
	if err := s.proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	poll("/readyz draining", func() bool {
		code, body := httpGet(t, s.metrics+"/readyz")
		return code == 503 && body == "not ready: draining\n"
	})
	if !echoVia(s.dport) {
		t.Error("C-ECHO straight to Ward while draining failed")
	}
	poll("HAProxy takes the node out of DIMSE", func() bool { return !echoVia(tcpPort) })
	poll("HAProxy takes the node out of DICOMweb", func() bool {
		code, _ := httpGet(t, "http://127.0.0.1:"+strconv.Itoa(httpPort)+"/healthz")
		return code == 503
	})
	if took := time.Since(start); took > 3500*time.Millisecond {
		t.Errorf("HAProxy saw the drain after %s, too near the 4 s drain to be the check", took)
	}
	if s.proc.Exited() {
		t.Fatalf("ward stopped before the drain was over (%s)", time.Since(start))
	}
	select {
	case <-s.proc.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("ward did not stop after the drain")
	}
	if took := time.Since(start); took < 4*time.Second {
		t.Errorf("ward stopped %s after SIGTERM, before the 4 s drain", took)
	}
	if err := s.proc.Err(); err != nil {
		t.Errorf("ward exit: %v", err)
	}
	s.proc.WaitLog(t, "draining", time.Second)
}

// TestHAProxyExampleConfig: docs/examples/haproxy.cfg, run unchanged by
// Debian's HAProxy with its variables pointing at one Ward on loopback
// (its other two nodes at addresses where nothing listens), checks the
// node's /readyz over TLS and passes DIMSE over TLS through (DCMTK
// echoscu with a client certificate pinned by fingerprint reaches Ward)
// and DICOMweb in HTTP mode (TLS ended and made again: /readyz answers
// "ready" through it), both after a PROXY header that Ward reads from
// HAProxy's address (proxy_from).
func TestHAProxyExampleConfig(t *testing.T) {
	requireTool(t, "haproxy", "echoscu")
	p := makePKI(t, "MODALITY")
	der, err := os.ReadFile(p.peerCert)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(der)
	if block == nil {
		t.Fatal("no PEM certificate")
	}
	sum := sha256.Sum256(block.Bytes)
	w := startWard(t, func(c *config.Config) {
		c.DICOM.LoopbackAnyAE = false
		c.DICOM.TLSListen = "127.0.0.1:0"
		c.DICOM.TLSCert, c.DICOM.TLSKey, c.DICOM.TLSClientCA = p.srvCert, p.srvKey, p.ca
		c.Web.TLSCert, c.Web.TLSKey = p.srvCert, p.srvKey
		c.Metrics.Listen = "127.0.0.1:0"
		c.Metrics.TLSCert, c.Metrics.TLSKey = p.srvCert, p.srvKey
		c.Peers = []config.Peer{{AETitle: "MODALITY", CertFingerprint: hex.EncodeToString(sum[:]), Allow: []string{"echo"}}}
		// The example sends a PROXY header (send-proxy-v2) to both.
		c.DICOM.ProxyFrom = []string{"127.0.0.1"}
		c.Web.ProxyFrom = []string{"127.0.0.1"}
	})
	lbCert := filepath.Join(t.TempDir(), "lb.pem")
	crt, _ := os.ReadFile(p.srvCert)
	key, _ := os.ReadFile(p.srvKey)
	if err := os.WriteFile(lbCert, append(crt, key...), 0o600); err != nil {
		t.Fatal(err)
	}
	port := func(a net.Addr) string { _, p, _ := net.SplitHostPort(a.String()); return p }
	dimsePort, webPort, statsPort := freePort(t), freePort(t), freePort(t)
	cmd := exec.Command("haproxy", "-db", "-f", filepath.Join(harness.RepoRoot(), "docs", "examples", "haproxy.cfg"))
	cmd.Env = append(os.Environ(),
		"WARD_LB_ADDR=127.0.0.1", "WARD_DIMSE_PORT="+strconv.Itoa(dimsePort), "WARD_WEB_PORT="+strconv.Itoa(webPort), "WARD_STATS_PORT="+strconv.Itoa(statsPort),
		"WARD_NODE1=127.0.0.1", "WARD_NODE2=127.0.0.2", "WARD_NODE3=127.0.0.3",
		"WARD_NODE_DIMSE="+port(w.srv.TLSAddr()), "WARD_NODE_WEB="+port(w.srv.WebAddr()), "WARD_NODE_METRICS="+port(w.srv.MetricsAddr()),
		"WARD_LB_CERT="+lbCert, "WARD_NODE_CA="+p.ca, "WARD_NODE_NAME=localhost")
	harness.Start(t, cmd, false)
	waitListen(t, dimsePort)
	waitListen(t, webPort)

	pool := p.roots(t)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, echoErr := harness.DCMTK("echoscu", "-to", "5", "+tls", p.peerKey, p.peerCert, "+cf", p.ca, "-aet", "MODALITY", "-aec", "WARD", "127.0.0.1", strconv.Itoa(dimsePort)).CombinedOutput()
		rs, err := client.Get("https://127.0.0.1:" + strconv.Itoa(webPort) + "/readyz")
		var body []byte
		if err == nil {
			body, _ = io.ReadAll(rs.Body)
			rs.Body.Close()
		}
		if echoErr == nil && err == nil && rs.StatusCode == 200 && string(body) == "ready\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("through HAProxy: echoscu %v\n%s\nGET /readyz: %v %v %q", echoErr, out, err, rs, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// HAProxy's own view: node n1 passed its /readyz check (L7OK: HTTP
	// 200, over TLS) in both backends.
	stats := "http://127.0.0.1:" + strconv.Itoa(statsPort) + "/stats;csv"
	for {
		_, csv := httpGet(t, stats)
		ok := 0
		for _, line := range strings.Split(csv, "\n") {
			if (strings.HasPrefix(line, "ward_dimse_tls,n1,") || strings.HasPrefix(line, "ward_web,n1,")) && strings.Contains(line, ",L7OK,") {
				ok++
			}
		}
		if ok == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n1's checks did not both pass:\n%s", csv)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
