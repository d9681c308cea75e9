package scan

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		in     string
		prefix string
		host   string
		port   int
		bad    bool
	}{
		{in: "127.0.0.1", prefix: "127.0.0.1/32"},
		{in: "127.0.0.1:104", prefix: "127.0.0.1/32", port: 104},
		{in: "127.1.0.5/22", prefix: "127.1.0.0/22"},
		{in: "::1", prefix: "::1/128"},
		{in: "[::1]:11112", prefix: "::1/128", port: 11112},
		{in: "[::1]", prefix: "::1/128"},
		{in: "fd00::/120", prefix: "fd00::/120"},
		{in: "localhost", host: "localhost"},
		{in: "localhost:4242", host: "localhost", port: 4242},
		{in: "127.0.0.1:0", bad: true},
		{in: "127.0.0.1:99999", bad: true},
		{in: "a b", bad: true},
		{in: "", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			sp, err := ParseSpec(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", sp)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.prefix != "" && sp.Prefix.String() != tc.prefix || sp.Host != tc.host || sp.Port != tc.port {
				t.Fatalf("got %+v", sp)
			}
		})
	}
}

func TestReadSpecsAndPorts(t *testing.T) {
	specs, err := ReadSpecs(strings.NewReader("# loopback lab\n127.0.0.1, 127.0.0.2:104\n\n::1 # v6\n"))
	if err != nil || len(specs) != 3 {
		t.Fatalf("%v %+v", err, specs)
	}
	if _, err := ReadSpecs(strings.NewReader("127.0.0.1\nnot a target!\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("err = %v", err)
	}
	p, err := ParsePorts("104, 11112,8000-8002,104")
	if err != nil || len(p) != 5 {
		t.Fatalf("%v %v", p, err)
	}
	for _, bad := range []string{"", "0", "70000", "5-3", "x"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) accepted", bad)
		}
	}
}

func mustSpecs(t *testing.T, s ...string) []Spec {
	var out []Spec
	for _, x := range s {
		sp, err := ParseSpec(x)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sp)
	}
	return out
}

func TestPlanLimitsAndExclusions(t *testing.T) {
	ctx := t.Context()
	if _, err := makePlan(ctx, nil, Scope{Targets: mustSpecs(t, "127.0.0.0/15")}); err == nil {
		t.Fatal("a /15 was accepted without AllowLarge")
	}
	if _, err := makePlan(ctx, nil, Scope{Targets: mustSpecs(t, "127.0.0.0/15"), AllowLarge: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := makePlan(ctx, nil, Scope{Targets: mustSpecs(t, "::/64"), AllowLarge: true}); err == nil {
		t.Fatal("a /64 was accepted")
	}
	if _, err := makePlan(ctx, nil, Scope{Targets: mustSpecs(t, "127.0.0.0/16")}); err != nil {
		t.Fatalf("a /16 needs no flag: %v", err)
	}
	p, err := makePlan(ctx, nil, Scope{Targets: mustSpecs(t, "127.0.0.0/30", "127.0.0.1:104", "::1"), Exclude: mustSpecs(t, "127.0.0.2"), Ports: []int{104, 11112}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	p.endpoints(func(e Endpoint) bool { got = append(got, e.String()); return true })
	want := "127.0.0.0:104 127.0.0.0:11112 127.0.0.1:104 127.0.0.1:11112 127.0.0.3:104 127.0.0.3:11112 [::1]:104 [::1]:11112"
	if strings.Join(got, " ") != want {
		t.Fatalf("endpoints\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	if n := p.count(); n != 8 {
		t.Fatalf("count %d", n)
	}
}

func TestProductAndVulns(t *testing.T) {
	for _, tc := range []struct {
		name, product, version string
		cves                   int
	}{
		{"OFFIS_DCMTK_366", "DCMTK", "3.6.6", 3},
		{"OFFIS_DCMTK_367", "DCMTK", "3.6.7", 0},
		{"Orthanc 1.5.7", "Orthanc", "1.5.7", 2},
		{"Orthanc 1.12.4", "Orthanc", "1.12.4", 0},
		{"ORTHANC_1_10_1", "Orthanc", "1.10.1", 1},
	} {
		p, v, ok := Product(tc.name)
		if !ok || p != tc.product || versionString(v) != tc.version {
			t.Errorf("Product(%q) = %s %v %v", tc.name, p, v, ok)
			continue
		}
		n := 0
		for _, row := range Lookup(p, v) {
			n += len(row.CVEs)
		}
		if n != tc.cves {
			t.Errorf("%s: %d CVEs, want %d", tc.name, n, tc.cves)
		}
	}
	if _, _, ok := Product("WARD_0.1"); ok {
		t.Error("WARD recognised as a vulnerable product")
	}
}

// TestOpenArchive: a scripted archive that accepts any AE title, answers
// C-FIND with 7 studies, offers C-MOVE/C-GET (refusing unknown
// destinations) and storage.
func TestOpenArchive(t *testing.T) {
	port := serveDICOM(t, fakePeer{anyAE: true, versionRaw: "OFFIS_DCMTK_366", store: true, handlers: dimseHandlers(studies{n: 7}, true)})
	rep := scanPort(t, port, Options{})
	f := ids(rep)
	for _, id := range []string{IDService, IDAnyAEAccepted, IDNoTLS, IDUserIdentityNotForced, IDCFindOpen, IDCGetOffered, IDCMoveOffered, IDCStoreOpen, IDKnownVulnerable} {
		if _, ok := f[id]; !ok {
			t.Errorf("missing %s", id)
		}
	}
	if c := f[IDCFindOpen].Evidence.Count; c == nil || *c != 7 || f[IDCFindOpen].Evidence.CapReached {
		t.Errorf("cfind evidence %+v", f[IDCFindOpen].Evidence)
	}
	if m := f[IDCMoveOffered]; m.Evidence.Status != "0xA801" || m.Severity != Medium {
		t.Errorf("cmove %+v", m)
	}
	if len(rep.Services) != 1 || rep.Services[0].Protocol != "dicom" || rep.Services[0].Product != "DCMTK" {
		t.Errorf("services %+v", rep.Services)
	}
	var buf bytes.Buffer
	for _, format := range Formats {
		buf.Reset()
		if err := rep.Write(&buf, format); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(buf.String(), "SECRET") || strings.Contains(buf.String(), "1.2.3.7") {
			t.Fatalf("%s report holds patient data:\n%s", format, buf.String())
		}
	}
	if rep.Exposure.Studies != 7 {
		t.Errorf("exposure %+v", rep.Exposure)
	}
}

// TestClosedArchive: the called AE title is checked; nothing but the
// service is reported, and discovery finds the title only when asked.
func TestClosedArchive(t *testing.T) {
	port := serveDICOM(t, fakePeer{versionRaw: "WARD_0.1", store: true, handlers: dimseHandlers(studies{n: 3}, true)})
	rep := scanPort(t, port, Options{})
	if got := ids(rep); len(got) != 1 || got[IDService].ID == "" {
		t.Fatalf("findings %+v", rep.Findings)
	}
	rep = scanPort(t, port, Options{DiscoverAET: true})
	f := ids(rep)
	if _, ok := f[IDCalledAEDiscovered]; !ok {
		t.Fatalf("discovery: %+v", rep.Findings)
	}
	if rep.Services[0].CalledAETitle != "ARCHIVE" {
		t.Fatalf("service %+v", rep.Services[0])
	}
}

// TestFindCap: an archive that never stops sending pending responses and
// ignores C-CANCEL costs the scan the cap plus a bounded drain.
func TestFindCap(t *testing.T) {
	port := serveDICOM(t, fakePeer{anyAE: true, handlers: dimseHandlers(studies{endless: true}, false)})
	start := time.Now()
	rep := scanPort(t, port, Options{FindCap: 50})
	f, ok := ids(rep)[IDCFindOpen]
	if !ok || f.Evidence.Count == nil || *f.Evidence.Count != 50 || !f.Evidence.CapReached {
		t.Fatalf("cfind %+v", rep.Findings)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("took %s", d)
	}
}

// hostile peers: each must cost bounded time and never be called DICOM.
func TestHostilePeers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		handle func(net.Conn)
		note   string
	}{
		{"silent", func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }, "nothing answered"},
		{"gigabyte-length", func(c net.Conn) {
			_, _ = c.Read(make([]byte, 4096))
			_, _ = c.Write([]byte{0x02, 0, 0xFF, 0xFF, 0xFF, 0xF0, 0, 1})
			_, _ = io.Copy(io.Discard, c)
		}, "malformed or oversized"},
		{"gigabyte-length-streaming", func(c net.Conn) {
			_, _ = c.Read(make([]byte, 4096))
			_, _ = c.Write([]byte{0x02, 0, 0x7F, 0xFF, 0xFF, 0xF0})
			junk := make([]byte, 64<<10)
			for {
				if _, err := c.Write(junk); err != nil {
					return
				}
			}
		}, "malformed or oversized"},
		{"truncated-ac", func(c net.Conn) {
			_, _ = c.Read(make([]byte, 4096))
			_, _ = c.Write([]byte{0x02, 0, 0, 0, 0, 4, 1, 2, 3, 4})
		}, "malformed or oversized"},
		{"banner", func(c net.Conn) { _, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n")) }, "not a DICOM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := listen(t, tc.handle)
			start := time.Now()
			rep := scanPort(t, port, Options{Timeout: 500 * time.Millisecond})
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s", d)
			}
			if len(rep.Findings) != 0 {
				t.Errorf("findings %+v", rep.Findings)
			}
			if len(rep.Services) != 1 || rep.Services[0].Protocol == "dicom" || !strings.Contains(strings.Join(rep.Services[0].Notes, ";"), tc.note) {
				t.Errorf("services %+v", rep.Services)
			}
		})
	}
}

// TestHTTPNotDICOM: a web server on a "DICOM port" is a web service.
func TestHTTPNotDICOM(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/dicom-web/studies":
			w.Header().Set("Content-Type", "application/dicom+json")
			_, _ = w.Write([]byte(`[{"0020000D":{"vr":"UI","Value":["1.2.3.99"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"SECRET^PATIENT"}]}}]`))
		case "/system":
			_, _ = w.Write([]byte(`{"Version":"1.5.7","ApiVersion":3,"DicomAet":"ORTHANC"}`))
		case "/patients":
			_, _ = w.Write([]byte(`["a","b","c"]`))
		default:
			http.Redirect(w, r, "http://192.0.2.1/elsewhere", http.StatusFound)
		}
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	rep := scanPort(t, port, Options{})
	f := ids(rep)
	if _, ok := f[IDService]; ok {
		t.Fatal("HTTP server reported as DICOM")
	}
	for _, id := range []string{IDHTTPNoTLS, IDOrthancRESTOpen, IDDICOMwebOpen, IDKnownVulnerable} {
		if _, ok := f[id]; !ok {
			t.Errorf("missing %s: %+v", id, rep.Findings)
		}
	}
	if c := f[IDOrthancRESTOpen].Evidence.Count; c == nil || *c != 3 {
		t.Errorf("patients %+v", f[IDOrthancRESTOpen].Evidence)
	}
	if c := f[IDDICOMwebOpen].Evidence.Count; c == nil || *c != 1 {
		t.Errorf("qido %+v", f[IDDICOMwebOpen].Evidence)
	}
	b, _ := json.Marshal(rep)
	if bytes.Contains(b, []byte("SECRET")) || bytes.Contains(b, []byte("1.2.3.99")) {
		t.Fatalf("patient data in report: %s", b)
	}
	if rep.Services[0].Protocol != "http" || rep.Services[0].Product != "Orthanc" {
		t.Errorf("service %+v", rep.Services[0])
	}
}

// TestHTTPAuthRequiredNoted: a plain web server whose DICOMweb asks for
// a bearer token (as Ward's does) gets the clear-text finding only, and
// the report notes that QIDO-RS asked for credentials. Go's server waits
// for a request line after the A-ASSOCIATE-RQ, so the probe takes the
// "accepted, then silent" path, which used to drop the web checks' notes.
func TestHTTPAuthRequiredNoted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/dicom-web/") {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ward"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	rep := scanPort(t, srv.Listener.Addr().(*net.TCPAddr).Port, Options{})
	f := ids(rep)
	if _, ok := f[IDHTTPNoTLS]; !ok || len(f) != 1 {
		t.Errorf("findings %+v, want %s only", rep.Findings, IDHTTPNoTLS)
	}
	if len(rep.Services) != 1 || rep.Services[0].Protocol != "http" || !strings.Contains(strings.Join(rep.Services[0].Notes, "; "), "/dicom-web/studies?limit=1: HTTP 401") {
		t.Errorf("services %+v", rep.Services)
	}
}

// TestHTTPSNoFinding: a TLS web server without DICOMweb is https, with no
// clear-text finding.
func TestHTTPSNoFinding(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	rep := scanPort(t, srv.Listener.Addr().(*net.TCPAddr).Port, Options{})
	if len(rep.Findings) != 0 || len(rep.Services) != 1 || rep.Services[0].Protocol != "https" {
		t.Fatalf("%+v %+v", rep.Findings, rep.Services)
	}
}

// TestClosedPortsAndDeadline: closed ports are not services; the deadline
// ends a scan of silent peers.
func TestClosedPortsAndDeadline(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	rep := scanPort(t, closed, Options{})
	if rep.Stats.Open != 0 || len(rep.Services) != 0 || !rep.Complete {
		t.Fatalf("%+v", rep)
	}
	var ports []string
	for i := 0; i < 6; i++ {
		ports = append(ports, strconv.Itoa(listen(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })))
	}
	sp := mustSpecs(t, "127.0.0.1")
	pp, _ := ParsePorts(strings.Join(ports, ","))
	start := time.Now()
	rep, err := Run(t.Context(), Scope{Targets: sp, Ports: pp}, Options{Concurrency: 1, Timeout: time.Second, Deadline: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second || rep.Complete {
		t.Fatalf("took %s, complete %v", d, rep.Complete)
	}
}

func TestRateLimit(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ln.Close()
	sp := mustSpecs(t, "127.0.0.1")
	start := time.Now()
	_, err := Run(t.Context(), Scope{Targets: sp, Ports: []int{1, 2, 3, 4, 5, 6}}, Options{Rate: 10})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 450*time.Millisecond {
		t.Fatalf("6 connections at 10/s took %s", d)
	}
}

func TestSARIFAndHTML(t *testing.T) {
	rep := &Report{Schema: Schema, Complete: true}
	rep.Services = []Service{{Host: "127.0.0.1", Port: 104, Protocol: "dicom"}}
	rep.Findings = []Finding{newFinding(IDCFindOpen, Endpoint{Addr: mustSpecs(t, "127.0.0.1")[0].Prefix.Addr(), Port: 104}, Evidence{Sent: "x", Received: "y", Count: count(5)})}
	rep.finish()
	var b bytes.Buffer
	if err := rep.WriteSARIF(&b); err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b.Bytes(), &s); err != nil || s["version"] != "2.1.0" {
		t.Fatalf("%v %s", err, b.String())
	}
	res := s["runs"].([]any)[0].(map[string]any)["results"].([]any)[0].(map[string]any)
	if res["ruleId"] != IDCFindOpen || res["level"] != "error" {
		t.Fatalf("%v", res)
	}
	b.Reset()
	if err := rep.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "Findings by severity", "Exposure by host", "dicom.cfind-open"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("html lacks %q", want)
		}
	}
	if strings.Contains(b.String(), "<script") || strings.Contains(b.String(), "http://") && !strings.Contains(b.String(), "http://www.w3.org/2000/svg") {
		t.Error("html is not self-contained")
	}
}
