package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/policy/identity"
	"github.com/ward-pacs/ward/policy/tokens"
)

// proxyHeader is the PROXY header a balancer sends for a client at src
// (host:port) that reached it at dst; version 1 or 2.
func proxyHeader(t testing.TB, version byte, src, dst string) []byte {
	t.Helper()
	s, err := net.ResolveTCPAddr("tcp", src)
	if err != nil {
		t.Fatal(err)
	}
	d, err := net.ResolveTCPAddr("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	h := proxyproto.HeaderProxyFromAddrs(version, s, d)
	h.Command = proxyproto.PROXY
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// localHeader is a v2 LOCAL header (the balancer's own connection).
func localHeader(t testing.TB) []byte {
	t.Helper()
	b, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeConn is a connection from remote that reads r.
type fakeConn struct {
	net.Conn // nil: only what is below is used
	r        io.Reader
	remote   net.Addr
}

func (c *fakeConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *fakeConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *fakeConn) Close() error                     { return nil }
func (c *fakeConn) RemoteAddr() net.Addr             { return c.remote }
func (c *fakeConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 11112} }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

func tcpAddr(s string) *net.TCPAddr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

// TestReadProxyHeader: what a listed balancer's connection may open
// with, and what is read after it.
func TestReadProxyHeader(t *testing.T) {
	balancer := tcpAddr("10.0.0.5:40000")
	rest := []byte("\x01\x00rest of the stream")
	for _, tc := range []struct {
		name   string
		header []byte
		want   string // the remote address; "" refused
	}{
		{"v2 tcp4", proxyHeader(t, 2, "192.0.2.7:5000", "10.0.0.11:2762"), "192.0.2.7:5000"},
		{"v2 tcp6", proxyHeader(t, 2, "[2001:db8::7]:5000", "[2001:db8::11]:2762"), "[2001:db8::7]:5000"},
		{"v1 tcp4", proxyHeader(t, 1, "192.0.2.8:5001", "10.0.0.11:2762"), "192.0.2.8:5001"},
		{"v2 local: the balancer's own", localHeader(t), "10.0.0.5:40000"},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), ""},
		{"v2 unspecified source", proxyHeader(t, 2, "0.0.0.0:5000", "10.0.0.11:2762"), ""},
		{"no header: an A-ASSOCIATE-RQ", nil, ""},
		{"no header: HTTP", []byte("GET / HTTP/1.1\r\n"), ""},
		{"truncated v2", proxyHeader(t, 2, "192.0.2.7:5000", "10.0.0.11:2762")[:20], ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append(append([]byte(nil), tc.header...), rest...)
			if strings.HasPrefix(tc.name, "truncated") {
				in = tc.header // and then the balancer closes
			}
			if tc.header == nil {
				in = (&pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "X", ApplicationContext: pdu.ApplicationContextName}).AppendTo(nil)
			}
			pc, err := readProxyHeader(&fakeConn{r: bytes.NewReader(in), remote: balancer})
			if tc.want == "" {
				if err == nil || !errors.Is(err, errProxyHeader) {
					t.Fatalf("accepted (remote %v), err %v", pc.RemoteAddr(), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := pc.RemoteAddr().String(); got != tc.want {
				t.Errorf("remote %s, want %s", got, tc.want)
			}
			got, _ := io.ReadAll(pc)
			if !bytes.Equal(got, rest) {
				t.Errorf("after the header: %q, want %q", got, rest)
			}
		})
	}
}

func TestBalancersListed(t *testing.T) {
	b, err := newBalancers([]string{"127.0.0.3", "10.0.0.4/30", "::ffff:192.0.2.9", "2001:db8::5"})
	if err != nil {
		t.Fatal(err)
	}
	for a, want := range map[string]bool{
		"127.0.0.3": true, "127.0.0.4": false, "10.0.0.6": true, "10.0.0.8": false,
		"::ffff:127.0.0.3": true, "192.0.2.9": true, "2001:db8::5": true, "2001:db8::6": false,
	} {
		if got := b.listed(netip.MustParseAddr(a)); got != want {
			t.Errorf("%s listed: %v, want %v", a, got, want)
		}
	}
	if (balancers(nil)).listed(netip.MustParseAddr("127.0.0.1")) {
		t.Error("an empty list lists an address")
	}
	if _, err := newBalancers([]string{"haproxy.internal"}); err == nil {
		t.Error("a host name was taken")
	}
}

// balancerDial connects from the local address from (a balancer, or a
// client calling directly) to addr and sends header first when not nil.
func balancerDial(ctx context.Context, addr, from string, header []byte) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if header != nil {
		if _, err := c.Write(header); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// echoVia runs a C-ECHO as aet over conn.
func echoVia(ctx context.Context, conn net.Conn, aet string) error {
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: aet, ApplicationContext: pdu.ApplicationContextName,
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian.UID}}}}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	a, err := assoc.Request(ctx, conn, assoc.Config{AETitle: aet, ARTIMTimeout: 5 * time.Second}, rq)
	if err != nil {
		return err
	}
	if err := dimse.NewClient(a).Echo(ctx); err != nil {
		a.Abort()
		return err
	}
	return a.Release()
}

// TestDIMSEBehindBalancer: behind a listed balancer (127.0.0.3), the
// client's address from the PROXY header is what peer binding, the
// lockout and the audit trail see; a connection from the balancer without
// a header is closed; a header from an address not listed is not read as
// one.
func TestDIMSEBehindBalancer(t *testing.T) {
	s, _ := testServer(t, func(c *config.Config) {
		c.DICOM.ProxyFrom = []string{"127.0.0.3"}
		c.DICOM.LockoutAfter = 2
		c.DICOM.LockoutBase = config.Duration{Duration: time.Minute}
		c.Peers = []config.Peer{{AETitle: "MODALITY", Host: "127.0.0.5", Allow: []string{"echo"}}}
	}, nil)
	addr := s.Addr().String()
	ctx := t.Context()
	via := func(client string) net.Conn {
		t.Helper()
		c, err := balancerDial(ctx, addr, "127.0.0.3", proxyHeader(t, 2, client+":40001", addr))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The peer, bound to 127.0.0.5, through the balancer.
	if err := echoVia(ctx, via("127.0.0.5"), "MODALITY"); err != nil {
		t.Fatalf("the peer through the balancer: %v", err)
	}
	// Its AE title from another client: refused, as bound elsewhere.
	if err := echoVia(ctx, via("127.0.0.6"), "MODALITY"); !errors.Is(err, assoc.ErrRejected) {
		t.Fatalf("the peer's title from another client: %v, want a rejection", err)
	}
	// 127.0.0.6 is now locked out (2 refusals in a row); 127.0.0.5 is not.
	_ = echoVia(ctx, via("127.0.0.6"), "MODALITY")
	// (The refusal is counted after the rejection is sent: wait for it.)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, locked := s.limits.Locked(netip.MustParseAddr("127.0.0.6")); locked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("127.0.0.6 is not locked out after 2 refusals")
		}
	}
	if _, locked := s.limits.Locked(netip.MustParseAddr("127.0.0.3")); locked {
		t.Fatal("the balancer's own address is locked out")
	}
	if err := echoVia(ctx, via("127.0.0.5"), "MODALITY"); err != nil {
		t.Fatalf("another client behind the same balancer, after a lockout: %v", err)
	}
	// From the balancer without a header: closed, not negotiated.
	c, err := balancerDial(ctx, addr, "127.0.0.3", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := echoVia(ctx, c, "MODALITY"); err == nil || errors.Is(err, assoc.ErrRejected) {
		t.Fatalf("the balancer without a header: %v, want the connection closed", err)
	}
	// From 127.0.0.7, not listed, claiming to be the peer: the header is
	// not read as one (the upper layer sees an invalid PDU).
	c, err = balancerDial(ctx, addr, "127.0.0.7", proxyHeader(t, 2, "127.0.0.5:40002", addr))
	if err != nil {
		t.Fatal(err)
	}
	if err := echoVia(ctx, c, "MODALITY"); err == nil {
		t.Fatal("a PROXY header from an address not listed was honoured")
	}
	// The audit trail names the clients, never the balancer.
	waitAudit(t, s, func(xmls []string) bool {
		var ok5, ok6 bool
		for _, x := range xmls {
			if strings.Contains(x, `NetworkAccessPointID="127.0.0.3"`) {
				t.Fatalf("the balancer's address is in the audit trail: %s", x)
			}
			ok5 = ok5 || strings.Contains(x, `NetworkAccessPointID="127.0.0.5"`)
			ok6 = ok6 || strings.Contains(x, `NetworkAccessPointID="127.0.0.6"`)
		}
		return ok5 && ok6
	})
}

// TestWebBehindBalancer: the web listener behind a listed balancer
// (127.0.0.3): wrong tokens from one client lock out that client, not
// another behind the same balancer; without a header the balancer's
// connection is closed; a header from an address not listed is not read.
func TestWebBehindBalancer(t *testing.T) {
	hash, err := identity.HashPasscode("a long passcode")
	if err != nil {
		t.Fatal(err)
	}
	var tok string
	s, _ := testServer(t, func(c *config.Config) {
		c.Web.ProxyFrom = []string{"127.0.0.3"}
		c.DICOM.LockoutAfter = 3
		c.DICOM.LockoutBase = config.Duration{Duration: time.Minute}
		c.Users = []config.User{{Name: "ana", Hash: hash, Roles: []string{"viewer"}}}
	}, func(s *Server) {
		if err := config.EditTokens(config.TokenFile(s.Config.DataDir), func(set *tokens.Set) error {
			var err error
			tok, _, err = set.Issue("ana", tokens.Read, time.Hour, time.Now())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := s.setPolicy(s.Config); err != nil {
			t.Fatal(err)
		}
	})
	addr := s.WebAddr().String()
	v2 := func(src string) []byte { return proxyHeader(t, 2, src+":41000", addr) }
	// client calls through the balancer as from.
	client := func(from string) *http.Client {
		return &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return balancerDial(ctx, addr, "127.0.0.3", v2(from))
			}}}
	}
	get := func(c *http.Client, bearer string) (int, error) {
		rq, _ := http.NewRequest("GET", "http://"+addr+"/dicom-web/studies?PatientID=X", nil)
		rq.Header.Set("Authorization", "Bearer "+bearer)
		rs, err := c.Do(rq)
		if err != nil {
			return 0, err
		}
		rs.Body.Close()
		return rs.StatusCode, nil
	}
	alice, mallory := client("127.0.0.5"), client("127.0.0.6")
	for range 3 {
		if code, err := get(mallory, "wrd_wrong"); err != nil || code != 401 {
			t.Fatalf("wrong token: %d %v", code, err)
		}
	}
	if code, _ := get(mallory, tok); code != 429 {
		t.Fatalf("127.0.0.6 after 3 wrong tokens: %d, want 429", code)
	}
	if code, err := get(alice, tok); err != nil || code != 200 {
		t.Fatalf("127.0.0.5 behind the same balancer: %d %v, want 200", code, err)
	}
	// The balancer without a header: closed without an answer.
	noHeader := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return balancerDial(ctx, addr, "127.0.0.3", nil)
		}}}
	if code, err := get(noHeader, tok); err == nil {
		t.Fatalf("the balancer without a header got %d", code)
	}
	// 127.0.0.7 is not listed: its header is not read (a bad request).
	c, err := balancerDial(t.Context(), addr, "127.0.0.7", v2("127.0.0.5"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, " 400 ") {
		t.Fatalf("a PROXY header from an address not listed: %q, want 400", line)
	}
	waitAudit(t, s, func(xmls []string) bool {
		for _, x := range xmls {
			if strings.Contains(x, "bearer token refused") && strings.Contains(x, `"127.0.0.3"`) {
				t.Fatalf("the balancer's address is in the audit trail: %s", x)
			}
			if strings.Contains(x, "bearer token refused") && strings.Contains(x, `NetworkAccessPointID="127.0.0.6"`) {
				return true
			}
		}
		return false
	})
}

// listenerOf is a listener that accepts one connection, c.
type listenerOf struct {
	c    chan net.Conn
	addr net.Addr
}

func (l *listenerOf) Accept() (net.Conn, error) {
	c, ok := <-l.c
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l *listenerOf) Close() error   { return nil }
func (l *listenerOf) Addr() net.Addr { return l.addr }

// FuzzProxyHeader drives the web listener's wrapper (the DIMSE path
// reads the header with the same readProxyHeader) with a connection from
// a listed balancer or from an address not listed, opening with data. It
// must never panic; from an address not listed, nothing is taken as a
// header (the remote address and the bytes are the connection's own);
// from a balancer, either the connection fails, or its remote address is
// a valid one (the client's, or the balancer's for LOCAL) and the bytes
// read are what followed a header.
func FuzzProxyHeader(f *testing.F) {
	rq := (&pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "X", ApplicationContext: pdu.ApplicationContextName}).AppendTo(nil)
	for _, h := range [][]byte{
		proxyHeader(f, 2, "192.0.2.7:5000", "10.0.0.11:2762"),
		proxyHeader(f, 2, "[2001:db8::7]:5000", "[2001:db8::11]:2762"),
		proxyHeader(f, 1, "192.0.2.8:5001", "10.0.0.11:2762"),
		localHeader(f),
		[]byte("PROXY UNKNOWN\r\n"),
		nil,
	} {
		for _, rest := range [][]byte{rq, []byte("GET / HTTP/1.1\r\n\r\n"), {0x16, 0x03, 0x01, 0x00, 0x05}} {
			in := append(append([]byte(nil), h...), rest...)
			f.Add(in, true)
			f.Add(in, false)
		}
	}
	b, err := newBalancers([]string{"10.0.0.5"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, fromBalancer bool) {
		remote := tcpAddr("192.0.2.99:40000")
		if fromBalancer {
			remote = tcpAddr("10.0.0.5:40000")
		}
		lnc := &listenerOf{c: make(chan net.Conn, 1), addr: tcpAddr("127.0.0.1:8080")}
		lnc.c <- &fakeConn{r: bytes.NewReader(data), remote: remote}
		close(lnc.c)
		ln := limitListener(lnc, 4, 4).fromBalancers(b, time.Second, slog.New(slog.DiscardHandler))
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got := c.RemoteAddr()
		read, rerr := io.ReadAll(c)
		if !fromBalancer {
			if got.String() != remote.String() || !bytes.Equal(read, data) || rerr != nil {
				t.Fatalf("not listed: remote %v, read %q (%v), want %v and the bytes unchanged", got, read, rerr, remote)
			}
			return
		}
		if rerr != nil {
			return // refused: net/http closes it
		}
		a := netip.MustParseAddrPort(got.String()).Addr()
		if !a.IsValid() || a.IsUnspecified() {
			t.Fatalf("balancer: remote %v", got)
		}
		if !bytes.HasSuffix(data, read) || len(read) == len(data) {
			t.Fatalf("balancer: read %q is not what followed a header in %q", read, data)
		}
	})
}

// TestConnGateBalancer: a balancer's connection counts in the total at
// once, and against the client's address (and as a stranger's) once its
// header is read; what it holds comes back when it is done.
func TestConnGateBalancer(t *testing.T) {
	client := netip.MustParseAddr("192.0.2.7")
	g := newConnGate(4, 1, 1, 10)
	a, why := g.enterBalancer()
	if why != admitted {
		t.Fatal(why)
	}
	if why := a.rebind(client, false); why != admitted {
		t.Fatalf("first from %s: %s", client, why)
	}
	b, _ := g.enterBalancer()
	if why := b.rebind(client, false); why != overSource {
		t.Fatalf("second from %s, over max_pending_per_source: %s", client, why)
	}
	// b, refused, stays counted in the total until done.
	c, _ := g.enterBalancer()
	if why := c.rebind(netip.MustParseAddr("192.0.2.8"), false); why != admitted {
		t.Fatal(why)
	}
	d, _ := g.enterBalancer()
	if _, why := g.enterBalancer(); why != overPending {
		t.Fatalf("fifth pending: %s, want max_pending", why)
	}
	// Two strangers so far (a's and c's clients), of the 4-1 places
	// strangers may hold: d's client is the third.
	if why := d.rebind(netip.MustParseAddr("192.0.2.9"), false); why != admitted {
		t.Fatal(why)
	}
	for _, p := range []*pass{a, b, c, d} {
		p.done()
	}
	if pending, _ := g.counts(); pending != 0 || len(g.bySource) != 0 || g.strangers != 0 {
		t.Fatalf("after done: pending %d, by source %v, strangers %d", pending, g.bySource, g.strangers)
	}
	// The strangers' limit applies after the header.
	g = newConnGate(3, 3, 1, 10)
	var held []*pass
	for i := range 2 {
		p, _ := g.enterBalancer()
		if why := p.rebind(netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), false); why != admitted {
			t.Fatal(why)
		}
		held = append(held, p)
	}
	p, _ := g.enterBalancer()
	if why := p.rebind(netip.MustParseAddr("192.0.2.20"), false); why != overPending {
		t.Fatalf("a third stranger with one place reserved: %s", why)
	}
	p.done()
	p, _ = g.enterBalancer()
	if why := p.rebind(netip.MustParseAddr("192.0.2.21"), true); why != admitted {
		t.Fatalf("a peer's source in the reserve: %s", why)
	}
}

// TestSilentBalancerConnectionsBounded: connections from a listed
// balancer that never send their header hold pending places (so, at most
// max_pending of them, and a goroutine each), are closed at
// first_pdu_timeout, and give their places back.
func TestSilentBalancerConnectionsBounded(t *testing.T) {
	s, _ := testServer(t, func(c *config.Config) {
		c.DICOM.ProxyFrom = []string{"127.0.0.3"}
		c.DICOM.MaxPending = 4
		c.DICOM.PendingPeerReserve = -1
		c.DICOM.FirstPDUTimeout.Duration = time.Second
	}, nil)
	addr := s.Addr().String()
	var silent []net.Conn
	for range 4 {
		c, err := balancerDial(t.Context(), addr, "127.0.0.3", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	waitCounts := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if p, _ := s.gate.counts(); p == want {
				return
			}
			if time.Now().After(deadline) {
				p, _ := s.gate.counts()
				t.Fatalf("pending %d, want %d", p, want)
			}
		}
	}
	waitCounts(4)
	// A fifth is closed at once, before any header is read.
	c, err := balancerDial(t.Context(), addr, "127.0.0.3", proxyHeader(t, 2, "192.0.2.7:5000", addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(900 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("a fifth connection over max_pending: %v, want it closed", err)
	}
	// The silent ones are closed at first_pdu_timeout.
	for _, c := range silent {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a silent balancer connection: %v, want it closed by Ward", err)
		}
	}
	waitCounts(0)
}

// TestBalancerIsNotLoopback: a plain loopback listener behind a balancer
// on the same machine is no longer a door for remote clients: the
// plaintext rule judges the client's address (before, every client was
// the balancer's 127.0.0.x and passed), and the loopback any-AE opt-in
// does not apply through the balancer.
func TestBalancerIsNotLoopback(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plain []string
		aet   string
		ok    bool
	}{
		{"remote client, no plaintext_networks", nil, "REMOTE", false},
		{"remote client in plaintext_networks", []string{"192.0.2.0/24"}, "REMOTE", true},
		{"any-AE through the balancer", []string{"192.0.2.0/24"}, "STRANGER", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := testServer(t, func(c *config.Config) {
				c.DICOM.ProxyFrom = []string{"127.0.0.3"}
				c.DICOM.LoopbackAnyAE = true
				c.DICOM.PlaintextNetworks = tc.plain
				c.Peers = []config.Peer{{AETitle: "REMOTE", Networks: []string{"192.0.2.0/24"}, Allow: []string{"echo"}}}
			}, nil)
			addr := s.Addr().String()
			c, err := balancerDial(t.Context(), addr, "127.0.0.3", proxyHeader(t, 2, "192.0.2.7:5000", addr))
			if err != nil {
				t.Fatal(err)
			}
			err = echoVia(t.Context(), c, tc.aet)
			if tc.ok != (err == nil) {
				t.Fatalf("C-ECHO as %s from 192.0.2.7 through the balancer: %v, want ok=%v", tc.aet, err, tc.ok)
			}
			// The same without a balancer's header: a loopback client may
			// use the opt-in.
			if err := echo(t.Context(), addr, "STRANGER", nil); err != nil {
				t.Fatalf("any-AE from loopback directly: %v", err)
			}
		})
	}
}
