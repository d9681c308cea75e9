// Package assoc runs DICOM associations over a transport connection: the
// upper layer state machine of network/ul executed by one goroutine per
// association, negotiation of presentation contexts, roles and user
// identity, and the ARTIM and idle timers.
//
// Each association has three goroutines: a reader that decodes PDUs (bounded
// by the negotiated maximum before anything is allocated), the owner that
// holds the state and performs every action of PS3.8 Table 9-10, and the
// service user (the DIMSE layer) that calls Recv, Send, Release and Abort.
package assoc

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/network/ul"
	"github.com/ward-pacs/ward/policy"
)

// Defaults applied to a zero Config.
const (
	DefaultMaxPDULength    = 256 * 1024
	DefaultARTIMTimeout    = 30 * time.Second
	DefaultIdleTimeout     = 5 * time.Minute
	DefaultConnectTimeout  = 30 * time.Second
	DefaultAssociateLimit  = 1 << 20 // bound for A-ASSOCIATE PDUs (user identity tokens can be large)
	MinPDULength           = 4096
	MaxPDULengthCap        = 16 << 20
	peerUnlimitedSendBound = 1 << 20 // what we send to a peer that declares "unlimited" (0)
)

// Config holds what both association roles need.
type Config struct {
	// AETitle is the local AE title: the called title for an acceptor, the
	// calling title for a requestor.
	AETitle string
	// MaxPDULength is the largest P-DATA-TF PDU Ward receives (advertised
	// in the maximum length sub-item).
	MaxPDULength uint32
	// ARTIMTimeout bounds association establishment and the wait for the
	// peer to close after a release, rejection or abort.
	ARTIMTimeout time.Duration
	// IdleTimeout aborts an established association that has been idle
	// for this long: no PDU received or sent, and no work in progress for
	// the peer (see Association.Busy). Negative disables it.
	IdleTimeout time.Duration
	// ImplementationClassUID and ImplementationVersionName identify Ward.
	ImplementationClassUID    string
	ImplementationVersionName string
	Logger                    *slog.Logger
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.MaxPDULength == 0 {
		d.MaxPDULength = DefaultMaxPDULength
	}
	if d.MaxPDULength < MinPDULength {
		d.MaxPDULength = MinPDULength
	}
	if d.MaxPDULength > MaxPDULengthCap {
		d.MaxPDULength = MaxPDULengthCap
	}
	if d.ARTIMTimeout == 0 {
		d.ARTIMTimeout = DefaultARTIMTimeout
	}
	if d.IdleTimeout == 0 {
		d.IdleTimeout = DefaultIdleTimeout
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return d
}

// Errors reported to the service user.
var (
	// ErrReleased: the peer asked to release the association. The acceptor
	// answers with AcceptRelease once its pending responses are sent.
	ErrReleased = errors.New("assoc: release requested by peer")
	// ErrAborted: the association was aborted (by the peer, by Ward or by
	// the transport); the error chain says which.
	ErrAborted = errors.New("assoc: association aborted")
	// ErrClosed: the association has ended.
	ErrClosed = errors.New("assoc: association closed")
	// ErrRejected: the acceptor rejected the association (see *RejectError).
	ErrRejected = errors.New("assoc: association rejected")
	// ErrTimeout: ARTIM or the idle timer expired.
	ErrTimeout = errors.New("assoc: timeout")
	// ErrProtocol: the peer broke the upper layer protocol.
	ErrProtocol = errors.New("assoc: protocol error")
)

// RejectError carries the A-ASSOCIATE-RJ received or sent.
type RejectError struct{ RJ pdu.AssociateRJ }

func (e *RejectError) Error() string { return "association rejected: " + e.RJ.String() }
func (e *RejectError) Unwrap() error { return ErrRejected }

// AbortError carries an A-ABORT received from the peer.
type AbortError struct{ Abort pdu.Abort }

func (e *AbortError) Error() string { return "association aborted by peer: " + e.Abort.String() }
func (e *AbortError) Unwrap() error { return ErrAborted }

// Context is an accepted presentation context.
type Context struct {
	ID             byte
	AbstractSyntax string
	TransferSyntax string
	// SCU and SCP tell the roles the requestor may take for this SOP class
	// (PS3.7 D.3.3.4); without role selection the requestor is SCU only.
	RequestorSCU, RequestorSCP bool
}

// Association is one DICOM association.
type Association struct {
	cfg       Config
	conn      net.Conn
	requestor bool
	id        uint64
	log       *slog.Logger

	// Set during establishment, read-only afterwards.
	rq       *pdu.AssociateRQ
	ac       *pdu.AssociateAC
	contexts map[byte]*Context
	peerMax  uint32 // largest P-DATA-TF PDU we may send
	remote   net.Addr
	grant    *policy.Grant // set by the acceptor's owner before use (SetGrant)

	negotiator Negotiator

	// Owner goroutine. PDUs from the reader and the service user's
	// primitives come on separate channels so that the owner can keep
	// answering primitives while the reader is held back (flow control).
	pdus        chan event
	prims       chan event
	state       ul.State
	releaseDone bool
	estabSent   bool
	artim       *time.Timer
	idle        *time.Timer
	// busy counts the work in progress for the peer (Busy); idleKick
	// tells the owner that it dropped to zero, so that the idle period
	// starts anew.
	busy     atomic.Int32
	idleKick chan struct{}
	// workEnded is when the last work for the peer ended (UnixNano): the
	// idle timer may fire just as it ends, before idleKick is taken.
	workEnded atomic.Int64

	// To the service user.
	indications chan indication
	done        chan struct{}
	endErr      error // set before done is closed
	estab       chan error
	// stopped is closed when the owner goroutine returns (Sta1). done
	// closes earlier when the association ends in Sta13 (after an abort,
	// a rejection or a release response), while the owner still waits for
	// the peer to close: the reader must keep posting until stopped.
	stopped chan struct{}
	// pending is an event the current action implies, performed right
	// after it (AE-6 leads to Evt7 or Evt8; a release collision to the
	// implied A-RELEASE response, see AR-8 and AR-10).
	pending *event

	// trace, when set (tests only, before the goroutines start), sees
	// every step: the state, event, action taken and resulting state.
	trace func(transition)

	bufPool sync.Pool

	closeOnce sync.Once
	stats     Stats
}

// Stats counts what crossed an association.
type Stats struct {
	PDUsIn, PDUsOut   atomic.Int64
	BytesIn, BytesOut atomic.Int64
}

var assocSeq atomic.Uint64

type event struct {
	evt   ul.Event
	pdu   pdu.PDU
	buf   *[]byte // pooled body buffer backing a P-DATA-TF
	err   error   // Evt17/Evt19 detail
	data  []byte  // Evt9: encoded P-DATA-TF PDU
	abort *pdu.Abort
	reply chan error
}

type indication struct {
	pdata   *pdu.PDataTF
	buf     *[]byte
	release bool
}

func newAssociation(cfg Config, conn net.Conn, requestor bool) *Association {
	c := cfg.withDefaults()
	a := &Association{
		cfg:         c,
		conn:        conn,
		requestor:   requestor,
		id:          assocSeq.Add(1),
		pdus:        make(chan event, 2),
		prims:       make(chan event),
		indications: make(chan indication, 4),
		done:        make(chan struct{}),
		estab:       make(chan error, 1),
		stopped:     make(chan struct{}),
		idleKick:    make(chan struct{}, 1),
		state:       ul.Sta1,
		remote:      conn.RemoteAddr(),
	}
	max := int(c.MaxPDULength)
	a.bufPool.New = func() any { b := make([]byte, 0, max); return &b }
	a.log = c.Logger
	return a
}

// ID is a process-unique number naming the association in logs.
func (a *Association) ID() uint64 { return a.id }

// Request is the A-ASSOCIATE-RQ of the association.
func (a *Association) Request() *pdu.AssociateRQ { return a.rq }

// Accept is the A-ASSOCIATE-AC of the association.
func (a *Association) Accept() *pdu.AssociateAC { return a.ac }

// CallingAETitle and CalledAETitle as requested.
func (a *Association) CallingAETitle() string { return a.rq.CallingAETitle }
func (a *Association) CalledAETitle() string  { return a.rq.CalledAETitle }

// RemoteAddr is the peer's transport address.
func (a *Association) RemoteAddr() net.Addr { return a.remote }

// SetGrant attaches what the acceptor's admission decided about the peer
// (its policy grant) to an established association, before the
// association is served; Grant returns it. Not safe to call concurrently
// with Grant.
func (a *Association) SetGrant(g *policy.Grant) { a.grant = g }

// Grant returns the grant given to SetGrant, nil without one (a requestor's
// association, or an acceptor's not yet served).
func (a *Association) Grant() *policy.Grant { return a.grant }

// Name is CALLING->CALLED(n), the association's name in logs.
func (a *Association) Name() string {
	if a.rq == nil {
		return fmt.Sprintf("?->?(%d)", a.id)
	}
	return fmt.Sprintf("%s->%s(%d)", a.rq.CallingAETitle, a.rq.CalledAETitle, a.id)
}

// Contexts returns the accepted presentation contexts by ID.
func (a *Association) Contexts() map[byte]*Context { return a.contexts }

// Context returns an accepted presentation context.
func (a *Association) Context(id byte) (*Context, bool) {
	c, ok := a.contexts[id]
	return c, ok
}

// PeerMaxPDULength is the largest P-DATA-TF PDU the peer accepts, already
// bounded to a finite value.
func (a *Association) PeerMaxPDULength() uint32 { return a.peerMax }

// StatsSnapshot returns PDU and byte counts so far.
func (a *Association) StatsSnapshot() (pdusIn, pdusOut, bytesIn, bytesOut int64) {
	return a.stats.PDUsIn.Load(), a.stats.PDUsOut.Load(), a.stats.BytesIn.Load(), a.stats.BytesOut.Load()
}

// Done is closed when the association has ended; Err then tells how.
func (a *Association) Done() <-chan struct{} { return a.done }

// Err returns nil after an orderly release, the reason otherwise. It is
// meaningful once Done is closed.
func (a *Association) Err() error {
	select {
	case <-a.done:
		return a.endErr
	default:
		return nil
	}
}

// Recv returns the next P-DATA-TF PDU. The PDU's data aliases a pooled
// buffer: call free once the PDVs are consumed. It returns ErrReleased when
// the peer requested release, and the association's end error after an
// abort.
func (a *Association) Recv() (p *pdu.PDataTF, free func(), err error) {
	select {
	case ind := <-a.indications:
		if ind.release {
			return nil, nil, ErrReleased
		}
		return ind.pdata, func() { a.putBuf(ind.buf) }, nil
	case <-a.done:
		// Drain what arrived before the end, in order.
		select {
		case ind := <-a.indications:
			if ind.release {
				return nil, nil, ErrReleased
			}
			return ind.pdata, func() { a.putBuf(ind.buf) }, nil
		default:
		}
		if a.endErr == nil {
			return nil, nil, ErrClosed
		}
		return nil, nil, a.endErr
	}
}

func (a *Association) putBuf(b *[]byte) {
	if b != nil {
		*b = (*b)[:0]
		a.bufPool.Put(b)
	}
}

// Send sends encoded P-DATA-TF PDUs (see pdu.AppendPDataHeader): one, or
// several back to back, written at once. The caller may reuse p when Send
// returns.
func (a *Association) Send(p []byte) error {
	return a.primitive(event{evt: ul.Evt9, data: p})
}

// Busy marks the association as working for the peer until done is
// called: a C-FIND being searched, C-MOVE or C-GET sub-operations, a
// received object being written. The idle timer does not expire meanwhile,
// and its period starts anew when the last piece of work is done. Waiting
// for the peer is not work: a C-GET waiting for a sub-operation's
// C-STORE-RSP, or a data set still arriving, leaves the timer running.
// done may be called more than once; Busy is safe for concurrent use.
func (a *Association) Busy() (done func()) {
	a.busy.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			a.workEnded.Store(time.Now().UnixNano())
			if a.busy.Add(-1) == 0 {
				select {
				case a.idleKick <- struct{}{}:
				default:
				}
			}
		})
	}
}

// Release asks the peer to release the association (requestor side) and
// waits for the answer.
func (a *Association) Release() error {
	if err := a.primitive(event{evt: ul.Evt11}); err != nil {
		return err
	}
	<-a.done
	return a.endErr
}

// AcceptRelease answers a release request received through Recv.
func (a *Association) AcceptRelease() error {
	if err := a.primitive(event{evt: ul.Evt14}); err != nil {
		return err
	}
	<-a.done
	return nil
}

// Abort aborts the association (service-user source).
func (a *Association) Abort() {
	_ = a.primitive(event{evt: ul.Evt15})
	<-a.done
}

// AbortWith aborts with a service-provider source and reason, as Ward does
// when the peer breaks the DIMSE protocol.
func (a *Association) AbortWith(reason byte, cause error) {
	_ = a.primitive(event{evt: ul.Evt15, abort: &pdu.Abort{Source: pdu.AbortSourceProvider, Reason: reason}, err: cause})
	<-a.done
}

// primitive hands a local service primitive to the owner goroutine.
func (a *Association) primitive(e event) error {
	e.reply = make(chan error, 1)
	select {
	case a.prims <- e:
	case <-a.done:
		if a.endErr != nil {
			return a.endErr
		}
		return ErrClosed
	}
	select {
	case err := <-e.reply:
		return err
	case <-a.done:
		// The owner may have answered and then ended the association (a
		// fast A-RELEASE-RP after our A-RELEASE-RQ): the answer wins, or
		// Release would report ErrClosed for an orderly release
		// (TestRegressionReleaseRacesDone).
		select {
		case err := <-e.reply:
			return err
		default:
		}
		if a.endErr != nil {
			return a.endErr
		}
		return ErrClosed
	}
}

// reader decodes PDUs from the connection and hands them to the owner.
func (a *Association) reader() {
	br := bufio.NewReaderSize(a.conn, 64*1024)
	for {
		h, err := pdu.ReadHeader(br, math.MaxUint32)
		if err != nil {
			if errors.Is(err, pdu.ErrUnknownType) || errors.Is(err, pdu.ErrMalformed) {
				a.invalid(br, err)
				return
			}
			a.post(event{evt: ul.Evt17, err: err})
			return
		}
		limit := uint32(DefaultAssociateLimit)
		if h.Type == pdu.TypePDataTF {
			limit = a.cfg.MaxPDULength
		}
		if h.Length > limit {
			a.invalid(br, fmt.Errorf("%w: pdu type 0x%02x declares %d bytes, limit %d", pdu.ErrTooLong, h.Type, h.Length, limit))
			return
		}
		var bufp *[]byte
		var body []byte
		if h.Type == pdu.TypePDataTF {
			bufp = a.bufPool.Get().(*[]byte)
			if uint32(cap(*bufp)) < h.Length {
				*bufp = make([]byte, 0, h.Length)
			}
			body = (*bufp)[:h.Length]
		} else {
			body = make([]byte, h.Length)
		}
		if _, err := io.ReadFull(br, body); err != nil {
			a.putBuf(bufp)
			a.post(event{evt: ul.Evt17, err: fmt.Errorf("reading pdu body: %w", err)})
			return
		}
		a.stats.PDUsIn.Add(1)
		a.stats.BytesIn.Add(int64(h.Length) + pdu.HeaderLen)
		p, err := pdu.Decode(h.Type, body)
		if err != nil {
			a.putBuf(bufp)
			a.invalid(br, err)
			return
		}
		if !a.post(event{evt: pduEvent(p), pdu: p, buf: bufp}) {
			a.putBuf(bufp)
			return
		}
	}
}

func pduEvent(p pdu.PDU) ul.Event {
	switch p.Type() {
	case pdu.TypeAssociateAC:
		return ul.Evt3
	case pdu.TypeAssociateRJ:
		return ul.Evt4
	case pdu.TypeAssociateRQ:
		return ul.Evt6
	case pdu.TypePDataTF:
		return ul.Evt10
	case pdu.TypeReleaseRQ:
		return ul.Evt12
	case pdu.TypeReleaseRP:
		return ul.Evt13
	case pdu.TypeAbort:
		return ul.Evt16
	}
	return ul.Evt19
}

// invalid posts Evt19 for an unrecognized or invalid PDU. The byte stream
// cannot be parsed past it, but the owner (now in Sta13 or Sta1) still has
// to learn when the peer closes the connection (Evt17, AR-5), so the rest
// is read and discarded until then. Reading stops when the owner closes
// the connection (ARTIM), so this is bounded in time and memory.
func (a *Association) invalid(r io.Reader, err error) {
	if !a.post(event{evt: ul.Evt19, err: err}) {
		return
	}
	_, cerr := io.Copy(io.Discard, r)
	if cerr == nil {
		cerr = io.EOF
	}
	a.post(event{evt: ul.Evt17, err: cerr})
}

// post hands an event to the owner. It gives up only once the owner has
// stopped: done alone is not enough, as the owner keeps running in Sta13
// after done is closed and needs the PDUs and the transport close (Evt17)
// that follow.
func (a *Association) post(e event) bool {
	select {
	case a.pdus <- e:
		return true
	case <-a.stopped:
		return false
	}
}

// write sends one encoded PDU on the transport.
func (a *Association) write(b []byte) error {
	return a.writeN(b, 1)
}

// writeN sends n encoded PDUs, back to back in b, on the transport.
func (a *Association) writeN(b []byte, n int64) error {
	d := a.cfg.IdleTimeout
	if d < 0 {
		d = DefaultIdleTimeout
	}
	_ = a.conn.SetWriteDeadline(time.Now().Add(d))
	_, err := a.conn.Write(b)
	if err == nil {
		a.stats.PDUsOut.Add(n)
		a.stats.BytesOut.Add(int64(len(b)))
	}
	return err
}

// countPDUs counts the PDUs back to back in b (the P-DATA-TF PDUs of one
// Send).
func countPDUs(b []byte) int64 {
	var n int64
	for len(b) >= pdu.HeaderLen {
		l := uint64(binary.BigEndian.Uint32(b[2:])) + pdu.HeaderLen
		n++
		if l > uint64(len(b)) {
			break
		}
		b = b[l:]
	}
	return n
}

func (a *Association) writePDU(p pdu.PDU) error {
	return a.write(p.AppendTo(nil))
}

// Dial opens an association as requestor. rq's AE titles, contexts and user
// information are sent as given; the maximum length, implementation class
// UID and version name are filled in from cfg when empty.
func Dial(ctx context.Context, network, address string, cfg Config, rq *pdu.AssociateRQ) (*Association, error) {
	c := cfg.withDefaults()
	d := net.Dialer{Timeout: DefaultConnectTimeout}
	dctx, cancel := context.WithTimeout(ctx, c.ARTIMTimeout)
	defer cancel()
	conn, err := d.DialContext(dctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", address, err)
	}
	return Request(ctx, conn, c, rq)
}

// Request runs association establishment as requestor over conn.
func Request(ctx context.Context, conn net.Conn, cfg Config, rq *pdu.AssociateRQ) (*Association, error) {
	return newAssociation(cfg, conn, true).request(ctx, rq)
}

func (a *Association) request(ctx context.Context, rq *pdu.AssociateRQ) (*Association, error) {
	if rq.UserInfo.MaxLength == 0 {
		rq.UserInfo.MaxLength = a.cfg.MaxPDULength
	}
	if rq.UserInfo.ImplementationClassUID == "" {
		rq.UserInfo.ImplementationClassUID = a.cfg.ImplementationClassUID
	}
	if rq.UserInfo.ImplementationVersionName == "" {
		rq.UserInfo.ImplementationVersionName = a.cfg.ImplementationVersionName
	}
	a.rq = rq
	// Evt1 then Evt2: the transport is already connected (AE-1 done by the dialer).
	a.state = ul.Sta4
	go a.reader()
	go a.run(ul.Evt2)
	select {
	case err := <-a.estab:
		if err != nil {
			<-a.done
			return nil, err
		}
		return a, nil
	case <-ctx.Done():
		a.Abort()
		return nil, ctx.Err()
	}
}

// Negotiator decides on an association request (acceptor side).
type Negotiator interface {
	// Negotiate returns the acceptance to send, or a rejection.
	Negotiate(rq *pdu.AssociateRQ, remote net.Addr) (*pdu.AssociateAC, *pdu.AssociateRJ)
}

// Serve runs association establishment as acceptor over an accepted
// connection: Evt5, AE-5 (ARTIM), then the request is negotiated. It returns
// the established association, or an error when none was established.
func Serve(conn net.Conn, cfg Config, n Negotiator) (*Association, error) {
	return newAssociation(cfg, conn, false).serve(n)
}

func (a *Association) serve(n Negotiator) (*Association, error) {
	a.negotiator = n
	go a.reader()
	go a.run(ul.Evt5)
	err := <-a.estab
	if err != nil {
		<-a.done
		return nil, err
	}
	return a, nil
}
