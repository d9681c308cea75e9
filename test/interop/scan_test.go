package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"testing"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/cli"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
	"github.com/ward-pacs/ward/scan"
)

// The scan tests target 127.0.0.1 only: every peer listens on loopback
// (through the bind shim) and the scope is 127.0.0.1 with the peers' ports.

// runScan runs `ward scan --format json` and decodes the report.
func runScan(t *testing.T, extra []string, ports ...int) *scan.Report {
	t.Helper()
	var ps []string
	for _, p := range ports {
		ps = append(ps, strconv.Itoa(p))
	}
	args := append([]string{"scan", "--format", "json", "--timeout", "2s", "--deadline", "2m", "--ports", joinComma(ps)}, extra...)
	args = append(args, "127.0.0.1")
	var out, errb bytes.Buffer
	if code := cli.Run(args, &out, &errb); code != 0 {
		t.Fatalf("ward scan exit %d: %s", code, errb.String())
	}
	var rep scan.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Logf("scan report:\n%s", out.String())
	return &rep
}

func joinComma(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(x)
	}
	return b.String()
}

func findingsAt(rep *scan.Report, port int) map[string]scan.Finding {
	m := map[string]scan.Finding{}
	for _, f := range rep.Findings {
		if f.Port == port {
			m[f.ID] = f
		}
	}
	return m
}

// writeStudies writes n single-instance studies into a new folder.
func writeStudies(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	for i := 0; i < n; i++ {
		o := dimsetest.NewObject(map[string]string{
			"PatientID": fmt.Sprintf("SCANPAT%d", i), "PatientName": "SCAN^TEST",
			"StudyInstanceUID":  fmt.Sprintf("1.2.826.0.1.3680043.10.1432.99.%d", i+1),
			"SeriesInstanceUID": fmt.Sprintf("1.2.826.0.1.3680043.10.1432.99.%d.1", i+1),
			"SOPInstanceUID":    fmt.Sprintf("1.2.826.0.1.3680043.10.1432.99.%d.1.1", i+1),
			"Modality":          "CT",
		}, dicom.ExplicitVRLittleEndian, "")
		if err := o.WriteFile(fmt.Sprintf("%s/%d.dcm", dir, i)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var openIDs = []string{scan.IDAnyAEAccepted, scan.IDCFindOpen, scan.IDCStoreOpen, scan.IDCGetOffered, scan.IDCMoveOffered, scan.IDOrthancRESTOpen, scan.IDDICOMwebOpen, scan.IDUserIdentityNotForced}

// TestScanOrthancOpen: Orthanc configured the way exposed servers were.
func TestScanOrthancOpen(t *testing.T) {
	const n = 5
	o := startOrthanc(t, func(c map[string]any) {
		c["DicomCheckCalledAet"] = false
		c["DicomAlwaysAllowFind"] = true
		c["DicomAlwaysAllowStore"] = true
		c["AuthenticationEnabled"] = false
	})
	requireTool(t, "storescu")
	dir := writeStudies(t, n)
	if out, err := dcmtk("storescu", "-aec", "ORTHANC", "+sd", "127.0.0.1", strconv.Itoa(o.DICOMPort), dir).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	rep := runScan(t, nil, o.DICOMPort, o.HTTPPort)
	d := findingsAt(rep, o.DICOMPort)
	for _, id := range []string{scan.IDService, scan.IDAnyAEAccepted, scan.IDNoTLS, scan.IDCFindOpen, scan.IDCStoreOpen} {
		if _, ok := d[id]; !ok {
			t.Errorf("DICOM port: missing %s", id)
		}
	}
	if c := d[scan.IDCFindOpen].Evidence.Count; c == nil || *c != n {
		t.Errorf("C-FIND count %+v, want %d", d[scan.IDCFindOpen].Evidence, n)
	}
	h := findingsAt(rep, o.HTTPPort)
	if _, ok := h[scan.IDService]; ok {
		t.Error("Orthanc's HTTP port reported as DICOM")
	}
	if f, ok := h[scan.IDOrthancRESTOpen]; !ok || f.Evidence.Count == nil || *f.Evidence.Count != n {
		t.Errorf("REST: %+v", f)
	}
	if bytes.Contains(mustJSON(t, rep), []byte("SCANPAT")) || bytes.Contains(mustJSON(t, rep), []byte("SCAN^TEST")) {
		t.Error("patient data in the report")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestScanOrthancHardened: called-AE check, no find or store for unknown
// AEs, REST authentication: none of the open findings.
func TestScanOrthancHardened(t *testing.T) {
	o := startOrthanc(t, func(c map[string]any) {
		c["DicomCheckCalledAet"] = true
		c["DicomAlwaysAllowFind"] = false
		c["DicomAlwaysAllowStore"] = false
		c["AuthenticationEnabled"] = true
		c["RegisteredUsers"] = map[string]string{"admin": "a-long-random-passphrase"}
	})
	rep := runScan(t, nil, o.DICOMPort, o.HTTPPort)
	for _, id := range openIDs {
		for _, f := range rep.Findings {
			if f.ID == id {
				t.Errorf("hardened Orthanc: %s on port %d: %s", id, f.Port, f.Evidence.Received)
			}
		}
	}
	if _, ok := findingsAt(rep, o.DICOMPort)[scan.IDService]; !ok {
		t.Error("DICOM service not detected")
	}
}

// TestScanStorescp: DCMTK storescp accepts any AE and storage, and offers
// no query.
func TestScanStorescp(t *testing.T) {
	port, _ := startStorescp(t)
	rep := runScan(t, nil, port)
	f := findingsAt(rep, port)
	for _, id := range []string{scan.IDService, scan.IDAnyAEAccepted, scan.IDCStoreOpen} {
		if _, ok := f[id]; !ok {
			t.Errorf("missing %s", id)
		}
	}
	for _, id := range []string{scan.IDCFindOpen, scan.IDCGetOffered, scan.IDCMoveOffered} {
		if _, ok := f[id]; ok {
			t.Errorf("unexpected %s", id)
		}
	}
}

// TestScanWardSecureConfig: Ward in its secure configuration (no loopback
// any-AE, registered peers bound to their source or certificate, a TLS
// listener requiring client certificates) scanned on both listeners,
// called-AE discovery included: nothing open. An unregistered caller gets
// the same rejection (reason 3) whatever title it calls, so not even
// Ward's AE title is found.
func TestScanWardSecureConfig(t *testing.T) {
	// With the lockout (the default) discovery stops when the scanner is
	// locked out; without it, every common title gets the same rejection.
	for _, lockout := range []int{5, -1} {
		t.Run(fmt.Sprintf("lockout_after=%d", lockout), func(t *testing.T) { scanWardSecure(t, lockout) })
	}
}

func scanWardSecure(t *testing.T, lockout int) {
	p := makePKI(t, "PINNED")
	w := startWard(t, func(c *config.Config) {
		c.DICOM.LoopbackAnyAE = false
		c.DICOM.LockoutAfter = lockout
		c.DICOM.TLSListen = "127.0.0.1:0"
		c.DICOM.TLSCert, c.DICOM.TLSKey, c.DICOM.TLSClientCA = p.srvCert, p.srvKey, p.ca
		c.Peers = []config.Peer{
			{AETitle: "MODALITY", Host: "127.0.0.1", Allow: []string{"echo", "store"}},
			{AETitle: "PINNED", CertFingerprint: certFingerprint(t, p.peerCert), Allow: []string{"echo", "store", "find", "move", "get"}},
		}
	})
	if fs := w.srv.Config.Check(); len(fs) > 0 && lockout > 0 {
		t.Fatalf("the test's configuration is not clean by ward config check: %v", fs)
	}
	port, _ := strconv.Atoi(w.port)
	_, tp, _ := net.SplitHostPort(w.srv.TLSAddr().String())
	tlsPort, _ := strconv.Atoi(tp)
	rep := runScan(t, []string{"--discover-aet"}, port, tlsPort)
	for _, f := range rep.Findings {
		t.Logf("%d %s %s", f.Port, f.Severity, f.ID)
		switch f.ID {
		case scan.IDService, scan.IDNoTLS:
			// Informational: DICOM answers there (the plain listener is
			// loopback, for the machine's own tools).
		default:
			t.Errorf("finding on Ward in its secure configuration: %s (%s) at port %d: %s", f.ID, f.Severity, f.Port, f.Title)
		}
	}
	if _, ok := findingsAt(rep, port)[scan.IDService]; !ok {
		t.Error("Ward not detected on its plain port")
	}
}
