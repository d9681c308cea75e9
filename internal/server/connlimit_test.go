package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

// TestConnGate: pending places per source and in total, the peers'
// reserve, and the trade of a pending place for an association slot.
func TestConnGate(t *testing.T) {
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 0, byte(i)}) }
	must := func(t *testing.T, g *connGate, src netip.Addr, known bool) *pass {
		t.Helper()
		p, why := g.enter(src, known)
		if why != admitted {
			t.Fatalf("%s refused (%s)", src, why)
		}
		return p
	}
	refused := func(t *testing.T, g *connGate, src netip.Addr, known bool, want gateRefusal) {
		t.Helper()
		if _, why := g.enter(src, known); why != want {
			t.Fatalf("%s: got %s, want %s", src, why, want)
		}
	}
	t.Run("per source", func(t *testing.T) {
		g := newConnGate(100, 2, 0, 10)
		a := must(t, g, addr(2), false)
		must(t, g, addr(2), false)
		refused(t, g, addr(2), false, overSource)
		// A source a peer is bound to has twice the budget.
		for range 4 {
			must(t, g, addr(1), true)
		}
		refused(t, g, addr(1), true, overSource)
		a.done()
		must(t, g, addr(2), false)
	})
	t.Run("reserve", func(t *testing.T) {
		g := newConnGate(6, 10, 2, 10)
		var strangers []*pass
		for i := range 4 {
			strangers = append(strangers, must(t, g, addr(10+i), false))
		}
		// The last two places are the peers'.
		refused(t, g, addr(20), false, overPending)
		must(t, g, addr(1), true)
		must(t, g, addr(1), true)
		refused(t, g, addr(1), true, overPending)
		// A peer may take a place a stranger gave back.
		strangers[0].done()
		must(t, g, addr(1), true)
		refused(t, g, addr(20), false, overPending)
		if pending, _ := g.counts(); pending != 6 {
			t.Fatalf("pending %d", pending)
		}
	})
	t.Run("admission", func(t *testing.T) {
		g := newConnGate(4, 4, 0, 1)
		x, y := must(t, g, addr(1), true), must(t, g, addr(2), false)
		if !x.admit() {
			t.Fatal("no association slot")
		}
		if pending, assocs := g.counts(); pending != 1 || assocs != 1 {
			t.Fatalf("pending %d, associations %d", pending, assocs)
		}
		if y.admit() {
			t.Fatal("an association past max_associations")
		}
		x.done()
		x.done() // twice: nothing more
		if !y.admit() {
			t.Fatal("the slot was not given back")
		}
		y.done()
		if pending, assocs := g.counts(); pending != 0 || assocs != 0 {
			t.Fatalf("after done: pending %d, associations %d", pending, assocs)
		}
	})
}

// TestConnGateIPv6: an IPv6 source's budget is its /64's.
func TestConnGateIPv6(t *testing.T) {
	g := newConnGate(10, 2, 0, 1)
	for _, a := range []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"} {
		if _, why := g.enter(netip.MustParseAddr(a), false); why != admitted {
			t.Fatalf("%s: %s", a, why)
		}
	}
	if _, why := g.enter(netip.MustParseAddr("2001:db8:1:2::77"), false); why != overSource {
		t.Fatalf("a third address of the same /64: %s", why)
	}
	if _, why := g.enter(netip.MustParseAddr("2001:db8:1:3::1"), false); why != admitted {
		t.Fatalf("another /64: %s", why)
	}
}

func TestFitToFileLimit(t *testing.T) {
	tests := []struct {
		nofile         uint64
		assoc, pending int
		wantA, wantP   int
		lowered        bool
	}{
		{0, 64, 64, 64, 64, false},
		{1024, 64, 64, 64, 64, false},
		{328, 64, 64, 64, 64, false},
		{256, 64, 64, 46, 46, true},
		{60, 64, 64, 1, 1, true},
	}
	for _, tt := range tests {
		a, p, lowered := fitToFileLimit(tt.nofile, tt.assoc, tt.pending)
		if a != tt.wantA || p != tt.wantP || lowered != tt.lowered {
			t.Errorf("nofile %d: got %d, %d, %v; want %d, %d, %v", tt.nofile, a, p, lowered, tt.wantA, tt.wantP, tt.lowered)
		}
		if lowered && tt.nofile > fdReserve+refuserSlots+fdPerAssociation+1 && uint64(fdReserve+refuserSlots+p+fdPerAssociation*a) > tt.nofile {
			t.Errorf("nofile %d: %d associations and %d pending do not fit", tt.nofile, a, p)
		}
	}
}

// flakyListener fails Accept with errno for the next fail calls.
type flakyListener struct {
	net.Listener
	fail  atomic.Int32
	errno syscall.Errno
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fail.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: os.NewSyscallError("accept4", l.errno)}
	}
	return l.Listener.Accept()
}

// testServer opens a Ward on loopback with edit applied to its
// configuration and serves it until the test ends; before lets the test
// change the server between Open and Serve.
func testServer(t *testing.T, edit func(*config.Config), before func(*Server)) (*Server, <-chan error) {
	t.Helper()
	c := config.Default()
	c.DataDir = filepath.Join(t.TempDir(), "data") // ward serve makes it 0700
	c.DICOM.Listen = "127.0.0.1:0"
	c.Web.Listen = "127.0.0.1:0"
	c.Storage.MinFree = "16MiB"
	c.DICOM.LockoutAfter = -1
	if edit != nil {
		edit(c)
	}
	s := &Server{Config: c, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("ward did not stop")
		}
	})
	return s, done
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// echo runs a C-ECHO as aet from the local address from (nil: any).
func echo(ctx context.Context, addr, aet string, from net.Addr) error {
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: aet, ApplicationContext: pdu.ApplicationContextName,
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian.UID}}}}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := net.Dialer{LocalAddr: from}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	a, err := assoc.Request(ctx, conn, assoc.Config{AETitle: aet, ARTIMTimeout: 10 * time.Second}, rq)
	if err != nil {
		return err
	}
	cl := dimse.NewClient(a)
	if err := cl.Echo(ctx); err != nil {
		a.Abort()
		return err
	}
	return a.Release()
}

// TestAcceptErrorsDoNotStopServing: accept failing with EMFILE or ENFILE
// (out of file descriptors) on the DIMSE listener and on the admin socket
// makes Ward wait and try again; it used to return from Serve, and the
// process exited.
func TestAcceptErrorsDoNotStopServing(t *testing.T) {
	var dimseLn, adminLn *flakyListener
	s, done := testServer(t, func(c *config.Config) { c.DICOM.LoopbackAnyAE = true }, func(s *Server) {
		dimseLn = &flakyListener{Listener: s.ln, errno: syscall.EMFILE}
		dimseLn.fail.Store(8)
		s.ln = dimseLn
		if s.adminLn != nil {
			adminLn = &flakyListener{Listener: s.adminLn, errno: syscall.ENFILE}
			adminLn.fail.Store(5)
			s.adminLn = adminLn
		}
	})
	if err := echo(t.Context(), s.Addr().String(), "ANY", nil); err != nil {
		t.Fatalf("C-ECHO after accept errors: %v", err)
	}
	if dimseLn.fail.Load() >= 0 {
		t.Fatal("the errors were not all returned")
	}
	if adminLn != nil {
		if _, err := admin.RemoteStatus(t.Context(), s.Config.DataDir); err != nil {
			t.Fatalf("admin socket after accept errors: %v", err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned: %v", err)
	default:
	}
}

// flooder keeps n connections from each of its sources open on an
// address, never sending a byte, reopening those Ward closes (after
// 200 ms), until stop is closed.
type flooder struct {
	wg     sync.WaitGroup
	stop   chan struct{}
	opened atomic.Int64 // connections opened
	open   atomic.Int64 // connections open now
	n      int          // goroutines holding connections
}

func flood(addr string, sources []string, n int) *flooder {
	f := &flooder{stop: make(chan struct{}), n: len(sources) * n}
	stop := f.stop
	for _, src := range sources {
		for range n {
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
				for i := 0; i < 1000; i++ {
					select {
					case <-stop:
						return
					default:
					}
					c, err := d.Dial("tcp", addr)
					if err != nil {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					f.opened.Add(1)
					f.open.Add(1)
					closed := make(chan struct{})
					go func() {
						var b [1]byte
						_, _ = c.Read(b[:])
						close(closed)
					}()
					select {
					case <-stop:
						c.Close()
						<-closed
						f.open.Add(-1)
						return
					case <-closed:
						c.Close()
						f.open.Add(-1)
					}
					select {
					case <-stop:
						return
					case <-time.After(200 * time.Millisecond):
					}
				}
			}()
		}
	}
	return f
}

// end stops the flood and returns how many connections it opened.
func (f *flooder) end() int {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	f.wg.Wait()
	return int(f.opened.Load())
}

func sources(first, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.0.0.%d", first+i)
	}
	return out
}

// TestSilentConnectionsKeepNoPeerOut: 16 sources each holding 8
// connections that never send a byte do not keep a registered peer out
// (they used to take every association slot), and Ward spends no goroutine
// on those over the budget (each used to get one for 5 s).
func TestSilentConnectionsKeepNoPeerOut(t *testing.T) {
	s, _ := testServer(t, func(c *config.Config) {
		c.DICOM.MaxAssociations = 8
		c.DICOM.MaxPending = 16
		c.DICOM.MaxPendingPerSource = 4
		c.DICOM.PendingPeerReserve = 4
		c.DICOM.FirstPDUTimeout.Duration = time.Second
		c.Peers = []config.Peer{{AETitle: "MODALITY", Host: "127.0.0.1", Allow: []string{"echo"}}}
	}, nil)
	addr := s.Addr().String()
	base := runtime.NumGoroutine()
	f := flood(addr, sources(2, 16), 8)
	defer f.end()
	time.Sleep(500 * time.Millisecond)
	peak := 0
	for i := range 10 {
		if err := echo(t.Context(), addr, "MODALITY", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			t.Fatalf("echo %d of 10 during the flood: %v", i+1, err)
		}
		pending, _ := s.gate.counts()
		if pending > 16 {
			t.Fatalf("%d connections pending, max_pending 16", pending)
		}
		// Ward's goroutines: the count less the flood's own (one per
		// holder, one per connection it holds).
		peak = max(peak, runtime.NumGoroutine()-base-f.n-int(f.open.Load()))
		time.Sleep(200 * time.Millisecond)
	}
	opened := f.end()
	if opened < 16*8 {
		t.Fatalf("the flood opened only %d connections", opened)
	}
	// 3 per pending connection (the connection, the upper layer's reader
	// and owner), the refusers, and some slack for the peer's own
	// associations winding down.
	if limit := 3*16 + refuserSlots + 16; peak > limit {
		t.Fatalf("Ward ran %d goroutines during the flood, more than %d", peak, limit)
	}
	t.Logf("flood: %d connections opened; Ward's goroutines at most %d", opened, peak)
}

// TestFirstPDUDeadline: a connection that sends its association request
// a byte at a time (or a TLS client that stalls its handshake) is closed
// first_pdu_timeout after accept, however steadily it trickles; ARTIM
// (30 s) used to restart with nothing.
func TestFirstPDUDeadline(t *testing.T) {
	s, _ := testServer(t, func(c *config.Config) {
		c.DICOM.LoopbackAnyAE = true
		c.DICOM.FirstPDUTimeout.Duration = time.Second
	}, nil)
	rq := (&pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "SLOW", ApplicationContext: pdu.ApplicationContextName,
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian.UID}}}}).AppendTo(nil)
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		var b [64]byte
		for {
			if _, err := c.Read(b[:]); err != nil {
				closed <- time.Since(start)
				return
			}
		}
	}()
	check := func(d time.Duration) {
		if d < 900*time.Millisecond || d > 5*time.Second {
			t.Fatalf("closed %s after accept, first_pdu_timeout 1s", d)
		}
	}
	for i := 0; i < len(rq); i++ {
		select {
		case d := <-closed:
			check(d)
			return
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := c.Write(rq[i : i+1]); err != nil {
			check(<-closed)
			return
		}
	}
	t.Fatalf("the whole request went through a byte every 100 ms (%d bytes, %s)", len(rq), time.Since(start))
}
