package interop

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/test/harness"
)

// TestSourceAddressesBehindHAProxy: Debian's HAProxy in TCP mode with
// send-proxy-v2, connecting to Ward from 127.0.0.3 (listed in [dicom]
// proxy_from), in front of DCMTK echoscu and storescu calling from
// 127.0.0.5 and 127.0.0.6 (the source shim), and in HTTP mode in front of
// Go clients calling from those addresses:
//
//   - the peer bound to 127.0.0.5 is admitted through HAProxy, and refused
//     when the same title calls from 127.0.0.6;
//   - 127.0.0.6 is locked out after its refusals, 127.0.0.5 is not (on
//     DIMSE and on the web listener);
//   - the audit trail names the clients, never HAProxy;
//   - HAProxy without send-proxy-v2 from the listed address: closed;
//     HAProxy with send-proxy-v2 from an address not listed (127.0.0.4):
//     the header is not read, the association fails.
func TestSourceAddressesBehindHAProxy(t *testing.T) {
	requireTool(t, "haproxy", "echoscu", "storescu", "gcc")
	requireDir(t, pydicomTestFiles)
	w := startWard(t, func(c *config.Config) {
		c.DICOM.LoopbackAnyAE = false
		c.DICOM.ProxyFrom = []string{"127.0.0.3"}
		c.Web.ProxyFrom = []string{"127.0.0.3"}
		c.DICOM.LockoutAfter = 2
		c.DICOM.LockoutBase.Duration = 5 * time.Minute
		c.DICOM.LockoutMax.Duration = 10 * time.Minute
		c.Peers = []config.Peer{{AETitle: "MODALITY", Host: "127.0.0.5", Allow: []string{"echo", "store"}}}
	})
	_, webPort, _ := net.SplitHostPort(w.srv.WebAddr().String())
	dimse, noHeader, unlisted, web := freePort(t), freePort(t), freePort(t), freePort(t)
	cfg := fmt.Sprintf(`global
    maxconn 100
defaults
    timeout connect 2s
    timeout client 30s
    timeout server 30s
# The balancer as it should be: send-proxy-v2 from a listed address.
frontend dimse
    mode tcp
    bind 127.0.0.1:%[1]d
    default_backend ward_dimse
backend ward_dimse
    mode tcp
    server n1 127.0.0.1:%[5]s send-proxy-v2 source 127.0.0.3
# Misconfigured: from the listed address, without the header.
frontend dimse_no_header
    mode tcp
    bind 127.0.0.1:%[2]d
    default_backend ward_no_header
backend ward_no_header
    mode tcp
    server n1 127.0.0.1:%[5]s source 127.0.0.3
# Not listed: a header Ward must not read.
frontend dimse_unlisted
    mode tcp
    bind 127.0.0.1:%[3]d
    default_backend ward_unlisted
backend ward_unlisted
    mode tcp
    server n1 127.0.0.1:%[5]s send-proxy-v2 source 127.0.0.4
frontend web
    mode http
    bind 127.0.0.1:%[4]d
    default_backend ward_web
backend ward_web
    mode http
    server n1 127.0.0.1:%[6]s send-proxy-v2 source 127.0.0.3
`, dimse, noHeader, unlisted, web, w.port, webPort)
	cfgFile := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("haproxy", "-c", "-f", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	harness.Start(t, exec.Command("haproxy", "-db", "-f", cfgFile), false)
	for _, p := range []int{dimse, noHeader, unlisted, web} {
		waitListen(t, p)
	}
	shim := sourceShim(t)
	// dcmtkFrom runs a DCMTK tool as MODALITY from source through the
	// HAProxy frontend on port.
	dcmtkFrom := func(source string, port int, tool string) (string, bool) {
		t.Helper()
		args := []string{"-to", "10", "-aet", "MODALITY", "-aec", "WARD", "127.0.0.1", strconv.Itoa(port)}
		if tool == "storescu" {
			args = append(args, filepath.Join(pydicomTestFiles, "CT_small.dcm"))
		}
		cmd := dcmtk(tool, args...)
		cmd.Env = append(cmd.Env, "LD_PRELOAD="+shim, "WARD_TEST_SOURCE="+source)
		out, err := cmd.CombinedOutput()
		return string(out), err == nil
	}

	// The peer, bound to 127.0.0.5, through HAProxy.
	if out, ok := dcmtkFrom("127.0.0.5", dimse, "echoscu"); !ok {
		t.Fatalf("echoscu from 127.0.0.5 through HAProxy:\n%s\n%s", out, w.log)
	}
	if out, ok := dcmtkFrom("127.0.0.5", dimse, "storescu"); !ok {
		t.Fatalf("storescu from 127.0.0.5 through HAProxy:\n%s\n%s", out, w.log)
	}
	// Its title from 127.0.0.6: refused, twice; then 127.0.0.6 is locked
	// out (a transient rejection) and 127.0.0.5 is not.
	for i := range 2 {
		if out, ok := dcmtkFrom("127.0.0.6", dimse, "echoscu"); ok || !strings.Contains(out, "Rejected Permanent") {
			t.Fatalf("echoscu %d as MODALITY from 127.0.0.6: want a permanent rejection\n%s", i+1, out)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, ok := dcmtkFrom("127.0.0.6", dimse, "echoscu")
		if !ok && strings.Contains(out, "Rejected Transient") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("127.0.0.6 not locked out after 2 refusals:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, ok := dcmtkFrom("127.0.0.5", dimse, "echoscu"); !ok {
		t.Fatalf("127.0.0.5 after 127.0.0.6 was locked out, through the same HAProxy:\n%s", out)
	}
	// A misconfigured balancer: no header from the listed address.
	if out, ok := dcmtkFrom("127.0.0.5", noHeader, "echoscu"); ok || strings.Contains(out, "Rejected") {
		t.Fatalf("HAProxy without send-proxy-v2: want the connection closed\n%s", out)
	}
	// A header from an address not listed is not read as one.
	if out, ok := dcmtkFrom("127.0.0.5", unlisted, "echoscu"); ok {
		t.Fatalf("a PROXY header from 127.0.0.4 (not listed) was honoured\n%s", out)
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(w.log.String(), "invalid PDU instead of an A-ASSOCIATE-RQ"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Ward did not take the unlisted header for an invalid PDU:\n%s", w.log)
		}
	}

	// The web listener through HAProxy in HTTP mode: wrong tokens from
	// 127.0.0.6 lock it out; 127.0.0.5 is not.
	get := func(source string) int {
		t.Helper()
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: 5 * time.Second}
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
			DialContext: func(ctx context.Context, n, a string) (net.Conn, error) { return d.DialContext(ctx, n, a) }}}
		rq, _ := http.NewRequest("GET", "http://127.0.0.1:"+strconv.Itoa(web)+"/dicom-web/studies?PatientID=X", nil)
		rq.Header.Set("Authorization", "Bearer wrd_not-a-token")
		rs, err := c.Do(rq)
		if err != nil {
			t.Fatalf("GET from %s through HAProxy: %v", source, err)
		}
		rs.Body.Close()
		return rs.StatusCode
	}
	if code := get("127.0.0.7"); code != 401 {
		t.Fatalf("a wrong token from 127.0.0.7: %d, want 401", code)
	}
	if code := get("127.0.0.7"); code != 401 {
		t.Fatalf("a second wrong token from 127.0.0.7: %d, want 401", code)
	}
	if code := get("127.0.0.7"); code != 429 {
		t.Fatalf("127.0.0.7 after 2 wrong tokens: %d, want 429", code)
	}
	if code := get("127.0.0.8"); code != 401 {
		t.Fatalf("127.0.0.8 behind the same HAProxy: %d, want 401 (not locked out)", code)
	}

	// The audit trail names the clients, never HAProxy.
	recs := readAudit(t, w.dir, func(recs []audit.Record) bool {
		var has5, has6, has7 bool
		for _, r := range recs {
			has5 = has5 || strings.Contains(r.XML, `NetworkAccessPointID="127.0.0.5"`)
			has6 = has6 || strings.Contains(r.XML, `NetworkAccessPointID="127.0.0.6"`)
			has7 = has7 || strings.Contains(r.XML, `NetworkAccessPointID="127.0.0.7"`)
		}
		return has5 && has6 && has7
	})
	for _, r := range recs {
		if strings.Contains(r.XML, `NetworkAccessPointID="127.0.0.3"`) {
			t.Errorf("HAProxy's address in the audit trail: %s %s", r.Event, r.XML)
		}
	}
}
