package interop

import (
	"bufio"
	"crypto/tls"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/config"
)

// syslogCollector is a TLS syslog receiver (RFC 5425 octet counting) on
// 127.0.0.1 with the site's server certificate.
type syslogCollector struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs []string
}

func startCollector(t *testing.T, p *sitePKI, addr string) *syslogCollector {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.srvCert, p.srvKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	c := &syslogCollector{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go c.read(conn)
		}
	}()
	return c
}

func (c *syslogCollector) read(conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	for {
		n, err := br.ReadString(' ')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil || size <= 0 || size > 1<<20 {
			return
		}
		buf := make([]byte, size)
		if _, err := ioReadFull(br, buf); err != nil {
			return
		}
		c.mu.Lock()
		c.msgs = append(c.msgs, string(buf))
		c.mu.Unlock()
	}
}

func ioReadFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *syslogCollector) waitFor(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		all := strings.Join(c.msgs, "\n")
		c.mu.Unlock()
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(all, w)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector did not receive %q; got:\n%s", want, all)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAuditSyslogForwarding: ward serve forwards its audit records to a
// syslog collector over TLS (PS3.15 A.6). A collector that is down when
// DIMSE traffic happens does not slow it, and receives the records once it
// comes up.
func TestAuditSyslogForwarding(t *testing.T) {
	requireTool(t, "echoscu")
	p := makePKI(t, "COLLECTOR")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // down for now
	w := startWard(t, func(c *config.Config) {
		c.Audit.Syslog, c.Audit.SyslogCA = addr, p.ca
		c.DICOM.LoopbackAnyAE = false
		c.Peers = []config.Peer{{AETitle: "ECHOER", Host: "127.0.0.1", Allow: []string{"echo"}}}
	})
	for range 5 {
		start := time.Now()
		if out, err := dcmtk("echoscu", "-aet", "ECHOER", "-aec", "WARD", w.host, w.port).CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("C-ECHO took %v with the collector down", d)
		}
	}
	c := startCollector(t, p, addr)
	c.waitFor(t, "DICOM+RFC3881", "110114", "ECHOER", "110100")
	// And live traffic after that.
	if out, err := dcmtk("echoscu", "-aet", "NOBODYHERE", "-aec", "WARD", w.host, w.port).CombinedOutput(); err == nil {
		t.Fatalf("an unregistered AE got in:\n%s", out)
	}
	c.waitFor(t, "NOBODYHERE", "110113")
}
