package interop

import (
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/scan"
)

// serviceAt is the scan report's service at port.
func serviceAt(rep *scan.Report, port int) *scan.Service {
	for i := range rep.Services {
		if rep.Services[i].Port == port {
			return &rep.Services[i]
		}
	}
	return nil
}

// TestScanWardWebListener: `ward scan` of Ward's own web listener, on
// plain HTTP (loopback) and on HTTPS, with a study stored so that an open
// QIDO would have something to show: no http.dicomweb-open and no
// http.orthanc-rest-open on either; http.no-tls on the plain listener
// only. The scanner sees the 401 and says so.
func TestScanWardWebListener(t *testing.T) {
	requireTool(t, "storescu")
	requireDir(t, pydicomTestFiles)
	p := makePKI(t, "viewer")
	plain := startWebWard(t, "lockout_after = -1\n", nil)
	secure := startWebWard(t, "lockout_after = -1\n[web]\ntls_cert = \""+p.srvCert+"\"\ntls_key = \""+p.srvKey+"\"\n", p.roots(t))
	for _, w := range []*webWard{plain, secure} {
		if out, err := dcmtk("storescu", "-aec", "WARD", "127.0.0.1", strconv.Itoa(w.dicomPort), filepath.Join(pydicomTestFiles, "CT_small.dcm")).CombinedOutput(); err != nil {
			t.Fatalf("storescu: %v\n%s", err, out)
		}
		// The listener answers a token, so a 401 to the scanner is
		// authentication, not a dead route.
		w.user(t, "vera", "viewer")
		if resp, body := w.do(t, "GET", "/dicom-web/studies", w.token(t, "vera", "read"), nil); resp.StatusCode == http.StatusUnauthorized {
			t.Fatalf("QIDO with a token: %s: %s", resp.Status, body)
		}
	}
	rep := runScan(t, nil, plain.webPort, secure.webPort)
	for _, c := range []struct {
		w     *webWard
		proto string
		noTLS bool
	}{{plain, "http", true}, {secure, "https", false}} {
		f := findingsAt(rep, c.w.webPort)
		for _, id := range []string{scan.IDDICOMwebOpen, scan.IDOrthancRESTOpen} {
			if x, ok := f[id]; ok {
				t.Errorf("%s listener: %s: %s", c.proto, id, x.Evidence.Received)
			}
		}
		if _, ok := f[scan.IDHTTPNoTLS]; ok != c.noTLS {
			t.Errorf("%s listener: %s reported: %v, want %v", c.proto, scan.IDHTTPNoTLS, ok, c.noTLS)
		}
		for id, x := range f {
			if id != scan.IDHTTPNoTLS {
				t.Errorf("%s listener: unexpected finding %s (%s): %s", c.proto, id, x.Severity, x.Evidence.Received)
			}
		}
		svc := serviceAt(rep, c.w.webPort)
		if svc == nil || svc.Protocol != c.proto {
			t.Errorf("%s listener: service %+v", c.proto, svc)
			continue
		}
		if !strings.Contains(strings.Join(svc.Notes, "; "), "401") {
			t.Errorf("%s listener: the scan does not note the 401: %v", c.proto, svc.Notes)
		}
	}
}
