package interop

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/config"
)

// silentFlood keeps per connections open from each source to addr, never
// sending a byte, and opens a new one 100 ms after Ward closes one (as
// the first-PDU deadline or ARTIM closes them), until end is called.
type silentFlood struct {
	wg     sync.WaitGroup
	stop   chan struct{}
	opened atomic.Int64
}

func startSilentFlood(addr string, sources []string, per int) *silentFlood {
	f := &silentFlood{stop: make(chan struct{})}
	for _, src := range sources {
		for range per {
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
				for range 2000 { // bounded: each round lasts 100 ms at least
					c, err := d.Dial("tcp", addr)
					if err == nil {
						f.opened.Add(1)
						closed := make(chan struct{})
						go func() {
							var b [1]byte
							_, _ = c.Read(b[:])
							close(closed)
						}()
						select {
						case <-f.stop:
						case <-closed:
						}
						c.Close()
						<-closed
					}
					select {
					case <-f.stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
				}
			}()
		}
	}
	return f
}

func (f *silentFlood) end() int {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	f.wg.Wait()
	return int(f.opened.Load())
}

func loopbackSources(first, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.0.0.%d", first+i)
	}
	return out
}

// TestSilentConnectionsDoNotKeepPeersOut (issue 14, item 2): 64 TCP
// connections that never send a byte on the plain port and 64 on the TLS
// port, from other loopback addresses (and a few from the peers' own),
// reopened as Ward closes them, used to fill the association slots: a
// registered peer's DCMTK echoscu got in 0 times out of 25 on the plain
// port and 5 on the TLS port (a TLS connection took a slot before its
// handshake). Now they wait in the pending budget and the peer gets in
// every time, on both ports, during the flood.
func TestSilentConnectionsDoNotKeepPeersOut(t *testing.T) {
	requireTool(t, "echoscu")
	p := makePKI(t, "TLSPEER")
	fp := certFingerprint(t, p.peerCert)
	w := startWard(t, func(c *config.Config) {
		c.DICOM.LoopbackAnyAE = false
		c.DICOM.LockoutAfter = 5 // the default: silent connections must not count
		c.DICOM.TLSListen = "127.0.0.1:0"
		c.DICOM.TLSCert, c.DICOM.TLSKey, c.DICOM.TLSClientCA = p.srvCert, p.srvKey, p.ca
		// Short, so that the flood's connections are closed and reopened
		// while the peers call.
		c.DICOM.FirstPDUTimeout.Duration = 2 * time.Second
		c.Peers = []config.Peer{
			{AETitle: "MODALITY", Host: "127.0.0.1", Allow: []string{"echo"}},
			{AETitle: "TLSPEER", Networks: []string{"127.0.0.1/32"}, CertFingerprint: fp, Allow: []string{"echo"}},
		}
	})
	_, tlsPort, _ := net.SplitHostPort(w.srv.TLSAddr().String())
	// 8 sources with 8 each on either port, and 2 from the peers' own
	// address on each (its budget, max_pending_per_source, is 8).
	plain := startSilentFlood(w.addr, loopbackSources(2, 8), 8)
	defer plain.end()
	secure := startSilentFlood(w.srv.TLSAddr().String(), loopbackSources(10, 8), 8)
	defer secure.end()
	for _, addr := range []string{w.addr, w.srv.TLSAddr().String()} {
		own := startSilentFlood(addr, []string{"127.0.0.1"}, 2)
		defer own.end()
	}
	time.Sleep(time.Second)

	tlsArgs := []string{"+tls", p.peerKey, p.peerCert, "+cf", p.ca}
	calls := []struct {
		name string
		args []string
	}{
		{"plain", []string{"-to", "10", "-aet", "MODALITY", "-aec", "WARD", "127.0.0.1", w.port}},
		{"TLS", append(append([]string{"-to", "10"}, tlsArgs...), "-aet", "TLSPEER", "-aec", "WARD", "127.0.0.1", tlsPort)},
	}
	for _, call := range calls {
		got := 0
		var fails []string
		for range 10 {
			out, err := dcmtk("echoscu", call.args...).CombinedOutput()
			if err == nil {
				got++
			} else {
				fails = append(fails, strings.TrimSpace(string(out)))
			}
			time.Sleep(200 * time.Millisecond)
		}
		if got != 10 {
			t.Errorf("%s: the registered peer got in %d times out of 10 during the flood; failures:\n%s", call.name, got, strings.Join(fails, "\n"))
		}
	}
	n, m := plain.end(), secure.end()
	if n < 72 || m < 72 {
		t.Fatalf("the flood opened only %d plain and %d TLS connections", n, m)
	}
	t.Logf("flood: %d plain and %d TLS connections opened", n, m)
	if strings.Contains(w.log.String(), "locked out") {
		t.Fatal("silent connections locked a source out")
	}
}

// TestOverBudgetRefusalDCMTK: a connection over its source's pending
// budget (2, so 4 for the peer's address) is refused before negotiation with what DCMTK reports as a
// transient local limit, and the source is not locked out for it: the
// peer gets in once the silent connections close.
func TestOverBudgetRefusalDCMTK(t *testing.T) {
	requireTool(t, "echoscu")
	w := startWard(t, func(c *config.Config) {
		c.DICOM.LoopbackAnyAE = false
		c.DICOM.LockoutAfter = 2
		c.DICOM.MaxPendingPerSource = 2
		c.Peers = []config.Peer{{AETitle: "MODALITY", Host: "127.0.0.1", Allow: []string{"echo"}}}
	})
	var held []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond)
	echo := func() (string, error) {
		out, err := dcmtk("echoscu", "-to", "10", "-aet", "MODALITY", "-aec", "WARD", w.host, w.port).CombinedOutput()
		return string(out), err
	}
	for i := range 3 {
		if out, err := echo(); err == nil || !strings.Contains(out, "Local Limit Exceeded") {
			t.Fatalf("call %d over the budget: %v\n%s", i+1, err, out)
		}
	}
	for _, c := range held {
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := echo()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused once the silent connections closed: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
