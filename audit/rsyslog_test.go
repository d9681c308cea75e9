package audit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/testci"
)

// rsyslogd finds Debian's rsyslogd (packages rsyslog and rsyslog-gnutls).
// Locally the test skips without it; under CI=true it fails.
func rsyslogd(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"rsyslogd", "/usr/sbin/rsyslogd"} {
		if path, err := exec.LookPath(p); err == nil && gtlsPresent() {
			return path
		}
	}
	testci.SkipOrFail(t, "rsyslogd with its GnuTLS driver is missing (apt-get install rsyslog rsyslog-gnutls)")
	return ""
}

// gtlsPresent: rsyslog-gnutls's driver is installed.
func gtlsPresent() bool {
	m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so")
	m2, _ := filepath.Glob("/usr/lib/rsyslog/lmnsd_gtls.so")
	return len(m)+len(m2) > 0
}

// TestForwardToRsyslog sends records to rsyslogd listening with TLS
// (imtcp, gtls driver) on 127.0.0.1, run with its own configuration only,
// and finds them in its output file with their syslog fields.
func TestForwardToRsyslog(t *testing.T) {
	bin := rsyslogd(t)
	p := newPKI(t)
	work := t.TempDir()
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	out := filepath.Join(work, "out.log")
	conf := filepath.Join(work, "rsyslog.conf")
	// One line per message: PRI, VERSION, APP-NAME, MSGID, STRUCTURED-DATA
	// and MSG. %msg:::drop-last-lf% keeps a message one line.
	cfg := fmt.Sprintf(`global(workDirectory=%q maxMessageSize="64k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile=%q defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port=%q)
template(name="ward" type="string" string="%%pri%%|%%protocol-version%%|%%app-name%%|%%msgid%%|%%structured-data%%|%%msg:::drop-last-lf%%\n")
action(type="omfile" file=%q template="ward")
`, work, p.caFile, p.certFile, p.keyFile, port, out)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-n", "-f", conf, "-i", filepath.Join(work, "rsyslogd.pid"))
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	// The forwarder retries until rsyslogd listens.
	l := openForwarding(t, t.TempDir(), nil, ForwardConfig{Addr: addr, CA: p.caFile})
	writeNumbered(t, l, 0, 6)
	if err := l.Write(SecurityAlert(ward, peer, "n=6", time.Now())); err != nil {
		t.Fatal(err)
	}
	var lines []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(b) > 0 && len(lines) >= 7 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("rsyslogd exited: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("rsyslogd wrote %q\n%s", b, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	closeLog(t, l)
	for i, line := range lines {
		f := strings.SplitN(line, "|", 6)
		if len(f) != 6 {
			t.Fatalf("line %d: %q", i, line)
		}
		pri := "85"
		if i%2 == 1 || i == 6 {
			pri = "84"
		}
		if f[0] != pri || f[1] != "1" || f[2] != "ward" || f[3] != "DICOM+RFC3881" || f[4] != "-" {
			t.Errorf("line %d fields %q", i, f[:5])
		}
		if !strings.Contains(f[5], "<AuditMessage>") || !strings.Contains(f[5], fmt.Sprintf("<EventOutcomeDescription>n=%d</EventOutcomeDescription>", i)) ||
			!strings.HasSuffix(f[5], "</AuditMessage>") {
			t.Errorf("line %d MSG %.200q", i, f[5])
		}
	}
}
