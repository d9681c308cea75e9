package interop

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/cli"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/scan"
	"github.com/ward-pacs/ward/test/harness"
)

// nmapRun is the part of nmap's XML output (-oX) the comparison reads.
type nmapRun struct {
	Hosts []struct {
		Addresses []struct {
			Addr string `xml:"addr,attr"`
		} `xml:"address"`
		Ports []struct {
			PortID int `xml:"portid,attr"`
			State  struct {
				State string `xml:"state,attr"`
			} `xml:"state"`
			Scripts []struct {
				ID     string `xml:"id,attr"`
				Output string `xml:"output,attr"`
				Elems  []struct {
					Key   string `xml:"key,attr"`
					Value string `xml:",chardata"`
				} `xml:"elem"`
			} `xml:"script"`
		} `xml:"ports>port"`
	} `xml:"host"`
}

// nmapDICOM runs nmap's dicom-ping on 127.0.0.1 at ports and returns, per
// port, the script's "config" line for every port it flags as DICOM.
// "+dicom-ping" runs the script on every open port, not only on the ports
// of its portrule (104, 2345, 2761, 2762, 4242, 11112): the peers here
// listen on free ports. -sT (connect scan) needs no privileges.
// --script-timeout: against a web server that waits for a request line,
// dicom-ping otherwise waits 30 s.
func nmapDICOM(t *testing.T, ports ...int) map[int]string {
	t.Helper()
	var ps []string
	for _, p := range ports {
		ps = append(ps, strconv.Itoa(p))
	}
	cmd := exec.Command("nmap", "-n", "-Pn", "-sT", "-p", strings.Join(ps, ","), "--script", "+dicom-ping", "--script-timeout", "5s", "-oX", "-", "127.0.0.1")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nmap: %v\n%s", err, errb.String())
	}
	var run nmapRun
	if err := xml.Unmarshal(out, &run); err != nil {
		t.Fatalf("nmap XML: %v\n%s", err, out)
	}
	flagged := map[int]string{}
	for _, h := range run.Hosts {
		for _, p := range h.Ports {
			for _, s := range p.Scripts {
				if s.ID != "dicom-ping" {
					continue
				}
				var dicomSeen bool
				var config string
				for _, e := range s.Elems {
					switch e.Key {
					case "dicom":
						dicomSeen = strings.Contains(e.Value, "DICOM")
					case "config":
						config = e.Value
					}
				}
				if dicomSeen {
					flagged[p.PortID] = config
				}
			}
		}
	}
	t.Logf("nmap dicom-ping: %v", flagged)
	return flagged
}

// requireNmap skips (or, under CI=true, fails) without nmap.
func requireNmap(t *testing.T) {
	t.Helper()
	requireTool(t, "nmap")
}

// TestScanCoversNmapDicomPing: on the same loopback targets (a DCMTK
// storescp, an open Orthanc, a dcmqrscp that refuses unknown AEs, a plain
// HTTP server), every service nmap's
// dicom-ping flags as DICOM, Ward flags too; and Ward does not call the
// HTTP server DICOM. What Ward finds beyond nmap is logged (docs/scan.md,
// "Compared with nmap dicom-ping").
func TestScanCoversNmapDicomPing(t *testing.T) {
	requireNmap(t)
	sport, _ := startStorescp(t)
	qport := startDcmqrscpRestricted(t)
	o := startOrthanc(t, func(c map[string]any) {
		c["DicomCheckCalledAet"] = false
		c["DicomAlwaysAllowFind"] = true
	})
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "<html>hello</html>")
	}))
	defer web.Close()
	wport := web.Listener.Addr().(*net.TCPAddr).Port
	ports := []int{sport, qport, o.DICOMPort, o.HTTPPort, wport}

	nm := nmapDICOM(t, ports...)
	for _, p := range []int{sport, qport, o.DICOMPort} {
		if _, ok := nm[p]; !ok {
			// nmap is the reference here: if it misses these, the
			// comparison proves nothing.
			t.Errorf("nmap did not flag the DICOM service on %d", p)
		}
	}
	rep := runScan(t, nil, ports...)
	for p, config := range nm {
		f := findingsAt(rep, p)
		if _, ok := f[scan.IDService]; !ok {
			t.Errorf("nmap flags port %d as DICOM, Ward does not", p)
		}
		if _, ok := f[scan.IDAnyAEAccepted]; ok != strings.Contains(config, "Any AET is accepted") {
			t.Errorf("port %d: nmap says %q, Ward %s=%v", p, config, scan.IDAnyAEAccepted, ok)
		}
	}
	for _, p := range []int{o.HTTPPort, wport} {
		if _, ok := findingsAt(rep, p)[scan.IDService]; ok {
			t.Errorf("HTTP port %d reported as DICOM", p)
		}
	}
	if _, ok := findingsAt(rep, wport)[scan.IDHTTPNoTLS]; !ok {
		t.Errorf("plain HTTP server on %d: no %s", wport, scan.IDHTTPNoTLS)
	}
	for _, p := range ports {
		var beyond []string
		for id := range findingsAt(rep, p) {
			if id != scan.IDService {
				beyond = append(beyond, id)
			}
		}
		sort.Strings(beyond)
		t.Logf("port %d: nmap %q; Ward also %v", p, nm[p], beyond)
	}
}

// startDcmqrscpRestricted runs dcmqrscp whose one AE, DCMQRSCP, accepts
// only the calling AE titles ECHOSCU (for the readiness check) and LOADER
// (the AETable peers list), so a scanner's random calling AE is refused.
// Same layout as startDcmqrscp (qr_cli_test.go), README gotcha 7.
func startDcmqrscpRestricted(t *testing.T) int {
	t.Helper()
	return harness.StartDcmqrscp(t, `echo   = (ECHOSCU, localhost, 0)
loader = (LOADER, localhost, 0)
allowed = echo, loader
`, "allowed")
}

// TestScanDcmqrscpRestricted: a dcmqrscp whose AE table names its peers
// gives no open finding, with or without --discover-aet.
//
// dcmqrscp answers a calling AE title that is not in the peers list with
// the same A-ASSOCIATE-RJ (rejected-permanent, service user, "called AE
// title not recognized") whether the called title is its own or not, so
// an outsider cannot learn the title: dicom.called-ae-discovered must not
// appear without the flag, and with the flag it must not appear either
// (claiming it would be a false positive); the report notes that the
// common titles were tried. The positive path of discovery is
// TestScanWard and scan's unit tests.
func TestScanDcmqrscpRestricted(t *testing.T) {
	port := startDcmqrscpRestricted(t)
	// The peers list works: an unlisted calling AE is refused.
	if out, err := dcmtk("echoscu", "-to", "2", "-aet", "OUTSIDER", "-aec", "DCMQRSCP", "127.0.0.1", strconv.Itoa(port)).CombinedOutput(); err == nil {
		t.Fatalf("dcmqrscp accepted an unlisted calling AE:\n%s", out)
	}
	for _, discover := range []bool{false, true} {
		var extra []string
		if discover {
			extra = []string{"--discover-aet"}
		}
		rep := runScan(t, extra, port)
		f := findingsAt(rep, port)
		if _, ok := f[scan.IDService]; !ok {
			t.Fatalf("discover=%v: dcmqrscp not detected", discover)
		}
		for _, id := range append(openIDs, scan.IDNoTLS, scan.IDCalledAEDiscovered) {
			if x, ok := f[id]; ok {
				t.Errorf("discover=%v: %s: %s", discover, id, x.Evidence.Received)
			}
		}
		tried := false
		for _, s := range rep.Services {
			for _, n := range s.Notes {
				tried = tried || strings.Contains(n, "called-AE discovery")
			}
		}
		if tried != discover {
			t.Errorf("discover=%v: discovery note present=%v", discover, tried)
		}
	}
}

// TestScanCLIFailOnAndFormats drives `ward scan` through cli.Run against
// storescp (high and medium findings, nothing critical): --fail-on sets
// exit status 3 only at or below the highest severity found; text and
// html reports are written; a bad severity is a usage error.
func TestScanCLIFailOnAndFormats(t *testing.T) {
	port, _ := startStorescp(t)
	base := []string{"scan", "--timeout", "2s", "--deadline", "1m", "--ports", strconv.Itoa(port)}
	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := cli.Run(append(append(append([]string{}, base...), args...), "127.0.0.1"), &out, &errb)
		return out.String(), errb.String(), code
	}
	for _, c := range []struct {
		sev  string
		want int
	}{{"critical", 0}, {"high", 3}, {"medium", 3}, {"info", 3}} {
		_, errs, code := run("--fail-on", c.sev)
		if code != c.want {
			t.Errorf("--fail-on %s: exit %d, want %d: %s", c.sev, code, c.want, errs)
		}
	}
	if _, _, code := run("--fail-on", "severe"); code != 2 {
		t.Errorf("--fail-on severe: exit %d, want 2", code)
	}

	out, errs, code := run("--format", "text")
	if code != 0 {
		t.Fatalf("text: exit %d: %s", code, errs)
	}
	for _, want := range []string{scan.IDAnyAEAccepted, scan.IDCStoreOpen, "127.0.0.1", "complete"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}

	file := filepath.Join(t.TempDir(), "report.html")
	out, errs, code = run("--format", "html", "-o", file)
	if code != 0 {
		t.Fatalf("html: exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	for _, want := range []string{"<html", "<svg", scan.IDAnyAEAccepted, "127.0.0.1"} {
		if !strings.Contains(html, want) {
			t.Errorf("html report lacks %q", want)
		}
	}
	for _, bad := range []string{"<script src", "<link ", `src="http`, `href="http`, "@import"} {
		if strings.Contains(html, bad) {
			t.Errorf("html report is not self-contained: %q", bad)
		}
	}
	if out != "" || !strings.Contains(errs, "ward scan:") {
		t.Errorf("-o html: stdout %q, stderr summary %q", out, errs)
	}
}

// forward relays a [::1] listener to a loopback IPv4 address until the
// test ends (the loopback shim binds the DCMTK peers to 127.0.0.1 only).
func forward(t *testing.T, to string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		testci.SkipOrFail(t, "no IPv6 loopback: %v", err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.DialTimeout("tcp", to, 5*time.Second)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c); _ = u.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestScanIPv6Loopback: `ward scan '[::1]:port'` reaches a DCMTK storescp
// over IPv6 loopback and reports the host as ::1.
func TestScanIPv6Loopback(t *testing.T) {
	sport, _ := startStorescp(t)
	port := forward(t, "127.0.0.1:"+strconv.Itoa(sport))
	var out, errb bytes.Buffer
	if code := cli.Run([]string{"scan", "--format", "json", "--timeout", "2s", "--deadline", "1m", fmt.Sprintf("[::1]:%d", port)}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	rep := decodeReport(t, out.Bytes())
	ids := map[string]bool{}
	for _, f := range rep.Findings {
		if f.Host != "::1" || f.Port != port {
			t.Errorf("finding at %s:%d", f.Host, f.Port)
		}
		ids[f.ID] = true
	}
	for _, id := range []string{scan.IDService, scan.IDAnyAEAccepted, scan.IDCStoreOpen} {
		if !ids[id] {
			t.Errorf("[::1]: missing %s", id)
		}
	}
	// The same scan over the /128 CIDR form.
	out.Reset()
	errb.Reset()
	if code := cli.Run([]string{"scan", "--format", "json", "--timeout", "2s", "--ports", strconv.Itoa(port), "::1/128"}, &out, &errb); code != 0 {
		t.Fatalf("::1/128: exit %d: %s", code, errb.String())
	}
	if rep := decodeReport(t, out.Bytes()); len(rep.Services) != 1 || rep.Services[0].Protocol != "dicom" {
		t.Errorf("::1/128: services %+v", rep.Services)
	}
}

// TestScanStorescpTLS: a DCMTK storescp speaking only DICOM over TLS is
// detected as dicom-tls, and dicom.no-tls is not reported for it.
func TestScanStorescpTLS(t *testing.T) {
	requireTool(t, "storescp", "openssl", "gcc")
	if out, _ := exec.Command("storescp", "--help").CombinedOutput(); !bytes.Contains(out, []byte("+tls")) {
		testci.SkipOrFail(t, "storescp was built without TLS")
	}
	dir := t.TempDir()
	key, cert := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout", key, "-out", cert).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	port := freePort(t)
	// -ic: the scanner presents no client certificate.
	daemon(t, "storescp-tls.log", "storescp", "-dhl", "-aet", "STORESCP", "-od", t.TempDir(), "+tls", key, cert, "-ic", strconv.Itoa(port))
	waitListen(t, port)
	assertLoopbackOnly(t, port)

	rep := runScan(t, nil, port)
	f := findingsAt(rep, port)
	for _, id := range []string{scan.IDService, scan.IDAnyAEAccepted, scan.IDCStoreOpen} {
		if _, ok := f[id]; !ok {
			t.Errorf("DICOM over TLS: missing %s", id)
		}
	}
	if _, ok := f[scan.IDNoTLS]; ok {
		t.Errorf("%s reported for a TLS-only service", scan.IDNoTLS)
	}
	if len(rep.Services) != 1 || rep.Services[0].Protocol != "dicom-tls" {
		t.Errorf("services %+v, want one dicom-tls", rep.Services)
	}
}

func decodeReport(t *testing.T, b []byte) *scan.Report {
	t.Helper()
	var rep scan.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return &rep
}

// TestScanDcmqrscpCalledAEChecked: dcmqrscp whose AE table knows only its
// own called title (any calling AE): the scan's random titles are refused,
// so nothing is reported open; only with --discover-aet does the scanner
// find the title (dicom.called-ae-discovered), and then what that title
// exposes.
func TestScanDcmqrscpCalledAEChecked(t *testing.T) {
	port := startDcmqrscp(t, nil)
	rep := runScan(t, nil, port)
	f := findingsAt(rep, port)
	if _, ok := f[scan.IDService]; !ok {
		t.Fatal("dcmqrscp not detected")
	}
	for _, id := range append(openIDs, scan.IDCalledAEDiscovered) {
		if x, ok := f[id]; ok {
			t.Errorf("without --discover-aet: %s: %s", id, x.Evidence.Received)
		}
	}
	rep = runScan(t, []string{"--discover-aet"}, port)
	f = findingsAt(rep, port)
	x, ok := f[scan.IDCalledAEDiscovered]
	if !ok {
		t.Fatalf("--discover-aet did not find DCMQRSCP; findings: %v", f)
	}
	t.Logf("discovered: %s", x.Evidence.Received)
}
