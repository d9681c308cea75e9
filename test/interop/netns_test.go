package interop

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/test/harness"
)

// The tests here open Ward to a network: one made of network namespaces
// the test creates (Ward's, a modality's on an acknowledged plaintext
// network, a stranger's on another), joined by veth pairs. Nothing leaves
// those namespaces.

type netnsLab struct {
	ward, modality, stranger string // namespace names
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// newNetnsLab makes three namespaces: Ward's with 10.77.0.1/24 towards the
// modality (10.77.0.2) and 10.77.1.1/24 towards the stranger (10.77.1.2).
func newNetnsLab(t *testing.T) *netnsLab {
	t.Helper()
	testci.RequireRoot(t, "network namespaces")
	testci.RequireTool(t, "ip")
	id := os.Getpid() % 100000
	l := &netnsLab{ward: fmt.Sprintf("ward-w%d", id), modality: fmt.Sprintf("ward-m%d", id), stranger: fmt.Sprintf("ward-s%d", id)}
	for _, ns := range []string{l.ward, l.modality, l.stranger} {
		exec.Command("ip", "netns", "del", ns).Run() // a leftover of a killed run
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	for i, peer := range []string{l.modality, l.stranger} {
		a, b := fmt.Sprintf("wv%d%c", id, 'a'+2*i), fmt.Sprintf("wv%d%c", id, 'b'+2*i)
		run(t, "ip", "link", "add", a, "netns", l.ward, "type", "veth", "peer", "name", b, "netns", peer)
		run(t, "ip", "-n", l.ward, "addr", "add", fmt.Sprintf("10.77.%d.1/24", i), "dev", a)
		run(t, "ip", "-n", peer, "addr", "add", fmt.Sprintf("10.77.%d.2/24", i), "dev", b)
		run(t, "ip", "-n", l.ward, "link", "set", a, "up")
		run(t, "ip", "-n", peer, "link", "set", b, "up")
	}
	return l
}

// in runs a command in namespace ns, with Nagle off for DCMTK tools.
func (l *netnsLab) in(ns string, name string, args ...string) *exec.Cmd {
	return dcmtk("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// TestOpenToNetwork: Ward listening beyond loopback in its own namespace.
// Plain DIMSE is served only to the network acknowledged in
// plaintext_networks (and the start log warns about it); a peer bound to
// that network is refused from elsewhere, over TLS too; a peer pinned by
// certificate is served over TLS from the other network; the loopback
// any-AE opt-in is refused beside an open listener.
func TestOpenToNetwork(t *testing.T) {
	requireTool(t, "echoscu", "storescu")
	l := newNetnsLab(t)
	bin := harness.WardBinary(t)
	p := makePKI(t, "REMOTE")
	data := harness.DataDir(t)
	conf := filepath.Join(data, "ward.toml")
	toml := fmt.Sprintf(`[dicom]
listen = "0.0.0.0:11112"
plaintext_networks = ["10.77.0.0/24"]
tls_listen = "0.0.0.0:2762"
tls_cert = %q
tls_key = %q
tls_client_ca = %q
lockout_after = -1

[[peers]]
aet = "MODALITY"
networks = ["10.77.0.0/24"]
allow = ["echo", "store"]

[[peers]]
aet = "REMOTE"
cert_fingerprint = %q
allow = ["echo", "store"]
`, p.srvCert, p.srvKey, p.ca, certFingerprint(t, p.peerCert))
	if err := os.WriteFile(conf, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	// The any-AE opt-in is refused beside these listeners.
	if out, err := l.in(l.ward, bin, "serve", "--config", conf, "--data", data, "--loopback-any-ae").CombinedOutput(); err == nil || !strings.Contains(string(out), "loopback_any_ae") {
		t.Fatalf("started with --loopback-any-ae beside an open listener: %v\n%s", err, out)
	}
	serve := harness.Start(t, l.in(l.ward, bin, "serve", "--config", conf, "--data", data), true)
	echo := func(ns, addr, port, aet string, tls ...string) (string, error) {
		args := append(append([]string{"-to", "5"}, tls...), "-aet", aet, "-aec", "WARD", addr, port)
		out, err := l.in(ns, "echoscu", args...).CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := echo(l.modality, "10.77.0.1", "11112", "MODALITY"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Ward never answered the modality")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b := serve.Log.String(); !strings.Contains(b, "plaintext_networks") || !strings.Contains(b, "risky setting") {
		t.Errorf("no plaintext warning at start:\n%s", b)
	}
	tlsArgs := []string{"+tls", p.peerKey, p.peerCert, "+cf", p.ca}
	for _, tc := range []struct {
		name, ns, addr, port, aet string
		tls                       []string
		ok                        bool
		says                      string
	}{
		{"modality, plain, from its network", l.modality, "10.77.0.1", "11112", "MODALITY", nil, true, ""},
		{"modality's title, plain, from the other network", l.stranger, "10.77.1.1", "11112", "MODALITY", nil, false, "Association Rejected"},
		{"modality's title over TLS from the other network", l.stranger, "10.77.1.1", "2762", "MODALITY", tlsArgs, false, "Calling AE Title Not Recognized"},
		{"pinned peer over TLS from the other network", l.stranger, "10.77.1.1", "2762", "REMOTE", tlsArgs, true, ""},
		{"pinned peer, plain, from the acknowledged network", l.modality, "10.77.0.1", "11112", "REMOTE", nil, false, "Calling AE Title Not Recognized"},
		{"unregistered title from the acknowledged network", l.modality, "10.77.0.1", "11112", "NOBODY", nil, false, "Calling AE Title Not Recognized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := echo(tc.ns, tc.addr, tc.port, tc.aet, tc.tls...)
			if tc.ok != (err == nil) || !strings.Contains(out, tc.says) {
				t.Fatalf("err=%v, want ok=%v with %q:\n%s", err, tc.ok, tc.says, out)
			}
		})
	}
	// A store from the modality over the acknowledged plain network.
	ct := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	if out, err := l.in(l.modality, "storescu", "-aet", "MODALITY", "-aec", "WARD", "10.77.0.1", "11112", ct).CombinedOutput(); err != nil {
		t.Fatalf("storescu from the modality: %v\n%s", err, out)
	}
	// ward scan from the stranger's network: Ward's TLS port is DICOM
	// behind TLS with client certificates, the plain port refuses it.
	out, err := l.in(l.stranger, bin, "scan", "--format", "text", "--timeout", "2s", "--ports", "11112,2762", "--discover-aet", "10.77.1.1").CombinedOutput()
	if err != nil {
		t.Fatalf("ward scan: %v\n%s", err, out)
	}
	for _, bad := range []string{"any-ae-accepted", "cfind-open", "cstore-open", "called-ae-discovered"} {
		if strings.Contains(string(out), bad) {
			t.Errorf("scan from the stranger's network found %s:\n%s", bad, out)
		}
	}
	t.Logf("scan from 10.77.1.2:\n%s", out)
}
