package server

// The PROXY protocol from listed load balancers ([dicom] proxy_from,
// [web] proxy_from). Behind HAProxy every connection comes from HAProxy's
// address; HAProxy's send-proxy-v2 opens each connection with a header
// naming the client's address, and Ward uses that address for everything
// a source address decides: admission and peer binding, the pending
// limits per source, the lockout, the audit trail and the logs.
//
// The rule is by the connection's own (TCP) source address:
//
//   - from a listed balancer, the connection must open with a valid
//     PROXY header (version 2, or version 1) naming a TCP source; else it
//     is closed. A balancer that forgot send-proxy-v2 must not make every
//     client look like the balancer. A LOCAL header (the balancer's own
//     connection, e.g. a health check) keeps the balancer's addresses;
//   - from any other address, nothing is read as a header: a client
//     cannot claim another address, and a header it sends is the
//     protocol's problem (on DIMSE, an invalid PDU: the association is
//     aborted).
//
// The header is read in the connection's own goroutine, never in an
// accept loop, within the deadline the connection already has (DIMSE: the
// first-PDU timeout, which also covers the TLS handshake and the
// A-ASSOCIATE-RQ; web: the header timeout). Until it is read, a DIMSE
// connection holds a place in the pending budget counted in the total
// only (connGate.enterBalancer); once the source is known, it is judged
// like a direct connection from that source: lockout, then the per-source
// and strangers' limits (pass.rebind). The web listener counts it against
// the total at accept and against its source once the header is read
// (limitedListener).

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/policy"
)

// proxyReadBuffer is the read buffer in front of a balancer's connection:
// the header is read through it, and what the buffer holds past the header
// is read first afterwards. (A v2 header's address block and TLVs may be
// larger; bufio reads them through.)
const proxyReadBuffer = 512

// errProxyHeader is wrapped by every refusal of a balancer's header.
var errProxyHeader = errors.New("no valid PROXY protocol header")

// balancers are the load balancers a listener reads the PROXY protocol
// from. The zero value lists none.
type balancers []netip.Prefix

// newBalancers parses a proxy_from list (config.Validate has checked it).
func newBalancers(list []string) (balancers, error) {
	ps, err := config.ParseProxyFrom(list)
	return balancers(ps), err
}

// listed reports whether a connection from a comes from a listed
// balancer (a is unmapped first).
func (b balancers) listed(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for _, p := range b {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// proxiedConn is a balancer's connection once its PROXY header is read:
// reads go on from the buffer the header was read through, and
// RemoteAddr is the client's address (the balancer's own for a LOCAL
// header).
type proxiedConn struct {
	net.Conn
	r        *bufio.Reader
	remote   net.Addr
	balancer net.Addr // the connection's own source address
}

func (c *proxiedConn) Read(b []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(b)
		}
		c.r = nil // drained: read the socket directly from now on
	}
	return c.Conn.Read(b)
}

func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }

// readProxyHeader reads the PROXY header a balancer's connection opens
// with, within the read deadline the caller has set, and returns the
// connection as seen from the client. Any failure wraps errProxyHeader:
// the caller closes the connection.
func readProxyHeader(conn net.Conn) (*proxiedConn, error) {
	br := bufio.NewReaderSize(conn, proxyReadBuffer)
	h, err := proxyproto.Read(br)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("%w: none arrived in time", errProxyHeader)
		}
		return nil, fmt.Errorf("%w: %w", errProxyHeader, err)
	}
	pc := &proxiedConn{Conn: conn, r: br, remote: conn.RemoteAddr(), balancer: conn.RemoteAddr()}
	switch {
	case h.Version == 1 && h.TransportProtocol == proxyproto.UNSPEC:
		// "PROXY UNKNOWN": HAProxy sends it for a client it has no TCP
		// address of; it would make that client the balancer.
		return nil, fmt.Errorf("%w: the header names no source address (PROXY UNKNOWN)", errProxyHeader)
	case h.Command.IsLocal():
		// The balancer's own connection: its own addresses stand.
		return pc, nil
	case h.Command.IsProxy():
		src, _, ok := h.TCPAddrs()
		if !ok {
			return nil, fmt.Errorf("%w: the header names no TCP source address (%v)", errProxyHeader, h.TransportProtocol)
		}
		a, ok := netip.AddrFromSlice(src.IP)
		if a = a.Unmap(); !ok || !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
			return nil, fmt.Errorf("%w: the header's source address %v is not a client's", errProxyHeader, src.IP)
		}
		pc.remote = net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, uint16(src.Port)))
		return pc, nil
	}
	return nil, fmt.Errorf("%w: unknown command", errProxyHeader)
}

// fromBalancer reads the PROXY header of a DIMSE connection from a listed
// balancer (p holds its place, counted in the total only) and judges the
// client's address as admitConn judges a direct connection's: a
// locked-out source or one over the budget is refused (plain: an
// A-ASSOCIATE-RJ, TLS: closed). It returns the connection as seen from
// the client, or false when it was refused or closed.
func (s *Server) fromBalancer(conn net.Conn, p *pass, isTLS bool) (net.Conn, bool) {
	pc, err := readProxyHeader(conn)
	if err != nil {
		s.refusals.note(s.Logger, noProxyHeader, remoteAddr(conn))
		s.mx.refusedAtAccept(noProxyHeader)
		s.Logger.Debug("connection from a load balancer closed", "balancer", conn.RemoteAddr().String(), "err", err.Error())
		conn.Close()
		return nil, false
	}
	src := remoteAddr(pc)
	why := admitted
	if _, locked := s.limits.Locked(src); locked {
		why = lockedOut
	} else {
		why = p.rebind(src, s.policy.Load().BindsSource(src))
	}
	if why == admitted {
		return pc, true
	}
	s.refusals.note(s.Logger, why, src)
	s.mx.refusedAtAccept(why)
	if isTLS {
		pc.Close()
	} else {
		// This goroutine holds a pending place already: it refuses
		// itself, within refuseTimeout.
		refuseBusy(pc)
	}
	return nil, false
}

// proxyLazyConn is a web connection from a listed balancer (see
// limitedListener): its PROXY header is read, within timeout, in the
// connection's own goroutine when net/http first asks for the remote
// address (its first call on a new connection) or reads, and the client's
// address is then counted in the listener's per-source limit. A
// connection whose header fails, or whose client is over that limit,
// fails every read and write: net/http closes it without serving a
// request.
type proxyLazyConn struct {
	net.Conn
	l       *limitedListener
	timeout time.Duration

	once    sync.Once
	err     error
	pc      *proxiedConn
	release func()
	closed  sync.Once
}

// resolve reads the header, once.
func (c *proxyLazyConn) resolve() error {
	c.once.Do(func() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
		pc, err := readProxyHeader(c.Conn)
		_ = c.Conn.SetReadDeadline(time.Time{})
		if err != nil {
			c.err = err
			c.l.log.Debug("connection from a load balancer closed", "balancer", c.Conn.RemoteAddr().String(), "err", err.Error())
			return
		}
		src := policy.SourceKey(policy.AddrOf(pc.RemoteAddr()))
		release, ok := c.l.enterSource(src)
		if !ok {
			c.err = fmt.Errorf("source %s has the most connections open it may", src)
			return
		}
		c.release = release
		c.pc = pc
	})
	return c.err
}

func (c *proxyLazyConn) Read(b []byte) (int, error) {
	if err := c.resolve(); err != nil {
		return 0, err
	}
	return c.pc.Read(b)
}

func (c *proxyLazyConn) Write(b []byte) (int, error) {
	if err := c.resolve(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (c *proxyLazyConn) RemoteAddr() net.Addr {
	if c.resolve() != nil {
		return c.Conn.RemoteAddr()
	}
	return c.pc.RemoteAddr()
}

// Close closes the connection and gives back its client's place. A Close
// before the header was read ends the wait for it.
func (c *proxyLazyConn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(func() {
		c.once.Do(func() { c.err = net.ErrClosed })
		if c.release != nil {
			c.release()
		}
	})
	return err
}
