package server

// The connection budget. Every connection accepted on a DIMSE listener is
// judged before a goroutine or a buffer is spent on it:
//
//   - a connection not yet admitted ("pending": TLS handshake under way,
//     A-ASSOCIATE-RQ not yet read, or being negotiated) takes a place in
//     the pending budget: at most MaxPendingPerSource per source address
//     (twice that for a source a registered peer is bound to, which may
//     open its associations all at once) and MaxPending in total, of
//     which PendingPeerReserve places are kept for sources a registered
//     peer is bound to;
//   - it has FirstPDUTimeout from accept to deliver its A-ASSOCIATE-RQ,
//     TLS handshake included;
//   - it takes one of the MaxAssociations slots only once the policy has
//     admitted its association (the pending place is then given back), so
//     silent or unauthenticated connections never hold the slots admitted
//     peers need;
//   - a connection over the budget, or from a locked-out source, is
//     refused at once: on the plain listener an A-ASSOCIATE-RJ is written
//     by one of a few refusers with a short deadline, or the connection
//     is closed when they are all busy; on the TLS listener it is closed
//     (no handshake is spent on it).
//
// So the sockets Ward holds are bounded by MaxAssociations + MaxPending +
// refuserSlots, and Open lowers those limits when the process's file
// descriptor limit could not hold them. An accept error (EMFILE, ENFILE,
// ENOBUFS, ...) never stops Ward: the accept loop waits, 5 ms doubling to
// 1 s, and goes on.

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/policy"
)

const (
	// refuserSlots bounds the connections being refused politely at once
	// (A-ASSOCIATE-RJ after reading the request); past it they are closed.
	refuserSlots = 8
	// refuseTimeout bounds one polite refusal.
	refuseTimeout = 2 * time.Second
	// fdReserve is the file descriptors kept for Ward's own files (index,
	// objects, audit log, admin socket, ...) when the connection limits
	// are fitted to the descriptor limit; fdPerAssociation is what an
	// association may hold at once (its socket, an object being written or
	// read, a C-MOVE sub-association).
	fdReserve        = 64
	fdPerAssociation = 3
	// acceptDelayMin and acceptDelayMax bound the wait after an accept
	// error (as net/http does).
	acceptDelayMin = 5 * time.Millisecond
	acceptDelayMax = time.Second
	// refusalLogEvery is how often refusals at accept are summed up in the
	// log (the first one is logged at once).
	refusalLogEvery = 10 * time.Second
)

// Why a connection is refused at accept.
type gateRefusal int

const (
	admitted        gateRefusal = iota
	overSource                  // its source has max_pending_per_source pending
	overPending                 // max_pending reached (or all but the peers' reserve)
	lockedOut                   // the source is locked out
	noProxyHeader               // a listed load balancer sent no valid PROXY header (proxy.go)
	numGateRefusals             // count of the above
)

func (r gateRefusal) String() string {
	switch r {
	case overSource:
		return "max_pending_per_source"
	case overPending:
		return "max_pending"
	case lockedOut:
		return "lockout"
	case noProxyHeader:
		return "proxy_header"
	}
	return "admitted"
}

// connGate counts connections against the budget. Its methods are safe
// for concurrent use.
type connGate struct {
	maxPending int // pending connections in total
	perSource  int // pending connections per source address (twice that for a known one)
	reserve    int // of maxPending, only for sources a peer is bound to
	maxAssoc   int // admitted associations

	mu        sync.Mutex
	pending   int
	strangers int // pending from sources no registered peer is bound to
	bySource  map[netip.Addr]int
	assoc     int
}

func newConnGate(maxPending, perSource, reserve, maxAssoc int) *connGate {
	return &connGate{maxPending: maxPending, perSource: perSource, reserve: reserve, maxAssoc: maxAssoc, bySource: map[netip.Addr]int{}}
}

// pass is one connection's place in the budget: pending, then (once
// admitted) an association slot, until done.
type pass struct {
	g     *connGate
	src   netip.Addr // invalid while a balancer's header is awaited
	known bool
	state passState
	// balanced: the connection came from a listed load balancer
	// (proxy.go); its source is the one its PROXY header names.
	balanced bool
}

type passState int

const (
	passPending passState = iota
	passAssoc
	passDone
)

// enter takes a pending place for a connection from src; known tells
// whether a registered peer is bound to src. It returns why not, when
// there is no place.
func (g *connGate) enter(src netip.Addr, known bool) (*pass, gateRefusal) {
	src = policy.SourceKey(src)
	g.mu.Lock()
	defer g.mu.Unlock()
	if n := g.bySource[src]; n >= 2*g.perSource || (!known && n >= g.perSource) {
		return nil, overSource
	}
	if g.pending >= g.maxPending || (!known && g.strangers >= g.maxPending-g.reserve) {
		return nil, overPending
	}
	g.pending++
	if !known {
		g.strangers++
	}
	g.bySource[src]++
	return &pass{g: g, src: src, known: known}, admitted
}

// enterBalancer takes a pending place for a connection from a listed
// load balancer, before its PROXY header names the source: it counts in
// the total only, neither against a source nor as a stranger's, until
// rebind. (A balancer sends the header as it connects.)
func (g *connGate) enterBalancer() (*pass, gateRefusal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending >= g.maxPending {
		return nil, overPending
	}
	g.pending++
	return &pass{g: g, known: true, balanced: true}, admitted
}

// rebind counts a balancer's connection against the source its header
// named, as enter would a direct one; on a refusal p stays counted in the
// total only, until done.
func (p *pass) rebind(src netip.Addr, known bool) gateRefusal {
	g := p.g
	src = policy.SourceKey(src)
	g.mu.Lock()
	defer g.mu.Unlock()
	if p.state != passPending || p.src.IsValid() {
		return admitted // already bound: nothing to do
	}
	if n := g.bySource[src]; n >= 2*g.perSource || (!known && n >= g.perSource) {
		return overSource
	}
	if !known && g.strangers >= g.maxPending-g.reserve {
		return overPending
	}
	if !known {
		g.strangers++
	}
	p.known = known
	p.src = src
	g.bySource[src]++
	return admitted
}

// leavePending gives back p's pending place; g.mu is held.
func (g *connGate) leavePending(p *pass) {
	g.pending--
	if !p.known {
		g.strangers--
	}
	if !p.src.IsValid() {
		return
	}
	if g.bySource[p.src]--; g.bySource[p.src] <= 0 {
		delete(g.bySource, p.src)
	}
}

// admit trades p's pending place for an association slot, once the
// policy has admitted the association; false (and p stays pending) when
// every slot is taken.
func (p *pass) admit() bool {
	g := p.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if p.state != passPending {
		return p.state == passAssoc
	}
	if g.assoc >= g.maxAssoc {
		return false
	}
	g.leavePending(p)
	g.assoc++
	p.state = passAssoc
	return true
}

// done gives back whatever p holds; calling it again does nothing.
func (p *pass) done() {
	g := p.g
	g.mu.Lock()
	defer g.mu.Unlock()
	switch p.state {
	case passPending:
		g.leavePending(p)
	case passAssoc:
		g.assoc--
	}
	p.state = passDone
}

// counts reports the pending connections and the associations (tests,
// logs).
func (g *connGate) counts() (pending, assocs int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pending, g.assoc
}

// refusalLog sums up refusals at accept so that a flood costs a log line
// every refusalLogEvery, not one per connection.
type refusalLog struct {
	mu     sync.Mutex
	last   time.Time
	counts [numGateRefusals]int
}

func (l *refusalLog) note(log *slog.Logger, why gateRefusal, remote netip.Addr) {
	l.mu.Lock()
	l.counts[why]++
	now := time.Now()
	if now.Sub(l.last) < refusalLogEvery {
		l.mu.Unlock()
		return
	}
	counts := l.counts
	l.counts = [numGateRefusals]int{}
	l.last = now
	l.mu.Unlock()
	attrs := []any{"last_remote", remote.String()}
	for r := overSource; r < numGateRefusals; r++ {
		if counts[r] > 0 {
			attrs = append(attrs, r.String(), counts[r])
		}
	}
	log.Warn("connections refused before negotiation (counts since the last such line; a flood is summed up every 10s)", attrs...)
}

// refuse turns away a connection refused at accept: closed at once on the
// TLS listener, or when every refuser is busy; else a refuser reads the
// association request and answers A-ASSOCIATE-RJ rejected-transient,
// local limit exceeded, within refuseTimeout.
func (s *Server) refuse(conn net.Conn, isTLS bool) {
	if isTLS {
		conn.Close()
		return
	}
	select {
	case s.refusers <- struct{}{}:
	default:
		conn.Close()
		return
	}
	go func() {
		defer func() { <-s.refusers }()
		refuseBusy(conn)
	}()
}

// refuseBusy reads an A-ASSOCIATE-RQ (its body discarded) and answers it
// with a rejection, within refuseTimeout; anything else is closed.
// Reading the request first lets the peer see the rejection rather than
// a reset.
func refuseBusy(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(refuseTimeout))
	h, err := pdu.ReadHeader(conn, assoc.DefaultAssociateLimit)
	if err != nil || h.Type != pdu.TypeAssociateRQ {
		return
	}
	if _, err := io.CopyN(io.Discard, conn, int64(h.Length)); err != nil {
		return
	}
	rj := &pdu.AssociateRJ{Result: pdu.RejectTransient, Source: pdu.RejectSourcePresentation, Reason: pdu.RejectLocalLimitExceeded}
	_, _ = conn.Write(rj.AppendTo(nil))
}

// acceptBackoff is the wait after consecutive accept errors.
type acceptBackoff struct {
	delay   time.Duration
	errors  int
	lastLog time.Time
}

// failed records an accept error and returns how long to wait; the first
// error of a run is logged, then one line every 10 s at most.
func (b *acceptBackoff) failed(log *slog.Logger, ln net.Listener, err error) time.Duration {
	b.errors++
	if b.delay == 0 {
		b.delay = acceptDelayMin
	} else {
		b.delay = min(2*b.delay, acceptDelayMax)
	}
	if now := time.Now(); now.Sub(b.lastLog) >= refusalLogEvery {
		b.lastLog = now
		log.Error("accepting connections failed: waiting, then trying again", "listener", ln.Addr().String(), "err", err.Error(), "errors", b.errors, "wait", b.delay)
	}
	return b.delay
}

// succeeded ends a run of errors.
func (b *acceptBackoff) succeeded(log *slog.Logger, ln net.Listener) {
	if b.errors > 0 {
		log.Info("accepting connections again", "listener", ln.Addr().String(), "errors", b.errors)
	}
	*b = acceptBackoff{}
}

// acceptWithBackoff accepts the next connection from ln, waiting and
// trying again on any error; nil when ctx is cancelled or ln is closed.
func (s *Server) acceptWithBackoff(ctx context.Context, ln net.Listener, b *acceptBackoff) net.Conn {
	for {
		conn, err := ln.Accept()
		if err == nil {
			b.succeeded(s.Logger, ln)
			return conn
		}
		if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
			return nil
		}
		t := time.NewTimer(b.failed(s.Logger, ln, err))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
}

// admitConn judges a connection just accepted on a DIMSE listener: a
// locked-out source or one over the budget is refused at once; the
// others get a pending place and the first-PDU deadline. It returns the
// pass, or nil when the connection was refused.
func (s *Server) admitConn(conn net.Conn, isTLS bool) *pass {
	src := remoteAddr(conn)
	if s.dicomBalancers.listed(src) {
		// Judged once its PROXY header names the client (fromBalancer).
		p, why := s.gate.enterBalancer()
		if why != admitted {
			s.refusals.note(s.Logger, why, src)
			s.mx.refusedAtAccept(why)
			conn.Close() // no refuser: the balancer's next bytes are a header
			return nil
		}
		_ = conn.SetDeadline(time.Now().Add(s.firstPDU))
		return p
	}
	if _, locked := s.limits.Locked(src); locked {
		// Answered without negotiation, and without an audit record each
		// time: the lockout itself was recorded.
		s.refusals.note(s.Logger, lockedOut, src)
		s.mx.refusedAtAccept(lockedOut)
		s.refuse(conn, isTLS)
		return nil
	}
	p, why := s.gate.enter(src, s.policy.Load().BindsSource(src))
	if why != admitted {
		s.refusals.note(s.Logger, why, src)
		s.mx.refusedAtAccept(why)
		s.refuse(conn, isTLS)
		return nil
	}
	// The PROXY header (from a balancer), the TLS handshake and the
	// A-ASSOCIATE-RQ must all arrive within first_pdu_timeout (ARTIM takes over as the request is read; the
	// upper layer sets its own write deadlines).
	_ = conn.SetDeadline(time.Now().Add(s.firstPDU))
	return p
}

// fitToFileLimit lowers the association and pending limits when the
// process's file descriptor limit (nofile, 0 when unknown) cannot hold
// them with Ward's own files, as Redis does for maxclients; it returns
// the limits to use and whether it lowered them.
func fitToFileLimit(nofile uint64, maxAssoc, maxPending int) (int, int, bool) {
	need := uint64(fdReserve + refuserSlots + maxPending + fdPerAssociation*maxAssoc)
	if nofile == 0 || need <= nofile {
		return maxAssoc, maxPending, false
	}
	avail := int64(nofile) - fdReserve - refuserSlots
	if avail < fdPerAssociation+1 {
		return 1, 1, true
	}
	conns := uint64(maxPending + fdPerAssociation*maxAssoc)
	a := max(1, int(uint64(maxAssoc)*uint64(avail)/conns))
	p := max(1, int(uint64(maxPending)*uint64(avail)/conns))
	return a, p, true
}

// tlsServer wraps an accepted connection of the TLS listener, once it has
// a place in the budget.
func tlsServer(conn net.Conn, conf *tls.Config) net.Conn {
	if conf == nil {
		return conn
	}
	return tls.Server(conn, conf)
}

// openGate sets up the connection budget from the configuration, fitted
// to the file descriptor limit.
func (s *Server) openGate() {
	d := &s.Config.DICOM
	maxPending, perSource, reserve, firstPDU := d.PendingBudget()
	maxAssoc := d.MaxAssociations
	if a, p, lowered := fitToFileLimit(openFileLimit(), maxAssoc, maxPending); lowered {
		s.Logger.Warn("the open file limit is too low for the configured connection limits: lowered to fit (raise the limit, e.g. LimitNOFILE= in the systemd unit)",
			"nofile", openFileLimit(), "max_associations", a, "max_pending", p, "configured_max_associations", maxAssoc, "configured_max_pending", maxPending)
		maxAssoc, reserve = a, reserve*p/maxPending
		maxPending, perSource = p, min(perSource, p)
		reserve = min(reserve, maxPending-1)
	}
	s.gate = newConnGate(maxPending, perSource, reserve, maxAssoc)
	s.refusers = make(chan struct{}, refuserSlots)
	s.firstPDU = firstPDU
}

// closingConn tells when the connection has been closed, by whichever
// owner closed it.
type closingConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func newClosingConn(c net.Conn) *closingConn {
	return &closingConn{Conn: c, closed: make(chan struct{})}
}

func (c *closingConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// waitClosed waits until the connection is closed, for at most limit;
// then it closes it.
func (c *closingConn) waitClosed(limit time.Duration) {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-c.closed:
	case <-t.C:
		c.Close()
	}
}
