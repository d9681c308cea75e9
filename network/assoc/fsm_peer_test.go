package assoc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/network/ul"
)

const wait = 3 * time.Second

// peer is the scripted other end of an association: it writes exact PDU
// bytes and reads what Ward sends.
type peer struct {
	t *testing.T
	c *net.TCPConn
}

func (p *peer) send(b []byte) {
	p.t.Helper()
	if _, err := p.c.Write(b); err != nil {
		p.t.Fatalf("peer write: %v", err)
	}
}

// read reads one PDU from Ward.
func (p *peer) read() (pdu.PDU, error) {
	_ = p.c.SetReadDeadline(time.Now().Add(wait))
	pd, _, err := pdu.Read(p.c, 1<<20, nil)
	return pd, err
}

func (p *peer) expect(want sent) pdu.PDU {
	p.t.Helper()
	pd, err := p.read()
	if err != nil {
		p.t.Fatalf("waiting for %v: %v", want, err)
	}
	got := sent{typ: pd.Type()}
	if ab, ok := pd.(*pdu.Abort); ok {
		got.source = ab.Source
	}
	if got != want {
		p.t.Fatalf("ward sent %v (%v), want %v", got, pd, want)
	}
	return pd
}

// expectEOF reads until Ward closes, failing on any byte.
func (p *peer) expectEOF() {
	p.t.Helper()
	_ = p.c.SetReadDeadline(time.Now().Add(wait))
	b, err := io.ReadAll(p.c)
	if err != nil {
		p.t.Fatalf("waiting for ward to close: %v (after % x)", err, b)
	}
	if len(b) > 0 {
		p.t.Fatalf("ward sent % x before closing", b)
	}
}

// ward is the association under test with its trace of transitions.
type ward struct {
	t     *testing.T
	a     *Association
	trace chan transition
	estab chan error
}

// waitStep waits for the transition out of from on event e.
func (w *ward) waitStep(from ul.State, e ul.Event) transition {
	w.t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case tr := <-w.trace:
			if tr.From == from && tr.Event == e {
				return tr
			}
		case <-timeout:
			w.t.Fatalf("no %s in %s", e, from)
		}
	}
}

// waitState waits for a transition into s.
func (w *ward) waitState(s ul.State) {
	w.t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case tr := <-w.trace:
			if tr.To == s {
				return
			}
		case <-timeout:
			w.t.Fatalf("never reached %s", s)
		}
	}
}

func (w *ward) waitStopped() {
	w.t.Helper()
	select {
	case <-w.a.stopped:
	case <-time.After(wait):
		w.t.Fatal("owner goroutine still running")
	}
}

// async runs a blocking primitive (Release, AcceptRelease, Abort).
func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func tcpPair(t *testing.T) (ours, theirs *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := <-acc
	if c == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { d.Close(); c.Close() })
	return c.(*net.TCPConn), d.(*net.TCPConn)
}

func newWard(t *testing.T, conn net.Conn, cfg Config, requestor bool) *ward {
	w := &ward{t: t, trace: make(chan transition, 1024), estab: make(chan error, 1)}
	w.a = newAssociation(cfg, conn, requestor)
	w.a.trace = func(tr transition) { w.trace <- tr }
	return w
}

// startAcceptor runs Serve's establishment on one end of a loopback pair;
// the test plays the requestor on the other. Ward is in Sta2 on return.
func startAcceptor(t *testing.T, cfg Config) (*ward, *peer) {
	ours, theirs := tcpPair(t)
	w := newWard(t, ours, cfg, false)
	go func() { _, err := w.a.serve(testAcceptor()); w.estab <- err }()
	w.waitStep(ul.Sta1, ul.Evt5)
	return w, &peer{t: t, c: theirs}
}

// startRequestor runs Request's establishment; the test plays the
// acceptor. Ward is in Sta5 (A-ASSOCIATE-RQ read by the peer) on return.
func startRequestor(t *testing.T, cfg Config) (*ward, *peer) {
	ours, theirs := tcpPair(t)
	w := newWard(t, ours, cfg, true)
	go func() { _, err := w.a.request(context.Background(), testRQ()); w.estab <- err }()
	p := &peer{t: t, c: theirs}
	p.expect(sent{typ: pdu.TypeAssociateRQ})
	w.waitStep(ul.Sta4, ul.Evt2)
	return w, p
}

// driver brings a fresh association into a state through the wire and the
// API only. pending collects the blocked primitives it started.
type driver func(t *testing.T, cfg Config) (*ward, *peer, []<-chan error)

func establish(requestor bool) driver {
	return func(t *testing.T, cfg Config) (*ward, *peer, []<-chan error) {
		if requestor {
			w, p := startRequestor(t, cfg)
			p.send(peerBytes[ul.Evt3]())
			if err := <-w.estab; err != nil {
				t.Fatal(err)
			}
			return w, p, nil
		}
		w, p := startAcceptor(t, cfg)
		p.send(peerBytes[ul.Evt6]())
		p.expect(sent{typ: pdu.TypeAssociateAC})
		if err := <-w.estab; err != nil {
			t.Fatal(err)
		}
		return w, p, nil
	}
}

// then extends a driver.
func then(d driver, f func(t *testing.T, w *ward, p *peer) []<-chan error) driver {
	return func(t *testing.T, cfg Config) (*ward, *peer, []<-chan error) {
		w, p, pend := d(t, cfg)
		return w, p, append(pend, f(t, w, p)...)
	}
}

// localRelease: the service user calls Release (Sta6 -> Sta7).
func localRelease(t *testing.T, w *ward, p *peer) []<-chan error {
	ch := async(w.a.Release)
	p.expect(sent{typ: pdu.TypeReleaseRQ})
	w.waitState(ul.Sta7)
	return []<-chan error{ch}
}

// peerRelease: the peer sends A-RELEASE-RQ (Sta6 -> Sta8), the user sees it.
func peerRelease(t *testing.T, w *ward, p *peer) []<-chan error {
	p.send(peerBytes[ul.Evt12]())
	if _, _, err := w.a.Recv(); !errors.Is(err, ErrReleased) {
		t.Fatalf("Recv: %v, want ErrReleased", err)
	}
	w.waitState(ul.Sta8)
	return nil
}

// acceptRelease: the user answers (Sta8 -> Sta13), the peer reads A-RELEASE-RP.
func acceptRelease(t *testing.T, w *ward, p *peer) []<-chan error {
	ch := async(w.a.AcceptRelease)
	p.expect(sent{typ: pdu.TypeReleaseRP})
	w.waitState(ul.Sta13)
	return []<-chan error{ch}
}

// collision: the peer's A-RELEASE-RQ crosses Ward's (Sta7 -> Sta10 on the
// acceptor, Sta7 -> Sta9 -> Sta11 on the requestor, which answers at once).
func collision(t *testing.T, w *ward, p *peer) []<-chan error {
	p.send(peerBytes[ul.Evt12]())
	if w.a.requestor {
		p.expect(sent{typ: pdu.TypeReleaseRP})
		w.waitState(ul.Sta11)
	} else {
		w.waitState(ul.Sta10)
	}
	return nil
}

type reach struct {
	state ul.State
	drive driver
	artim bool // ARTIM runs in this state: Evt18 can be played
}

func reachable(requestor bool) []reach {
	est := establish(requestor)
	rs := []reach{
		{ul.Sta6, est, false},
		{ul.Sta7, then(est, localRelease), true},
		{ul.Sta8, then(est, peerRelease), false},
		{ul.Sta13, then(then(est, peerRelease), acceptRelease), true},
	}
	if requestor {
		rs = append(rs,
			reach{ul.Sta5, func(t *testing.T, cfg Config) (*ward, *peer, []<-chan error) {
				w, p := startRequestor(t, cfg)
				return w, p, nil
			}, true},
			reach{ul.Sta11, then(then(est, localRelease), collision), true})
	} else {
		rs = append(rs,
			reach{ul.Sta2, func(t *testing.T, cfg Config) (*ward, *peer, []<-chan error) {
				w, p := startAcceptor(t, cfg)
				return w, p, nil
			}, true},
			reach{ul.Sta10, then(then(est, localRelease), collision), true})
	}
	return rs
}

// play makes event e happen: bytes from the peer, a transport close, ARTIM
// expiry, or a service primitive through the API.
func play(t *testing.T, w *ward, p *peer, e ul.Event) <-chan error {
	switch e {
	case ul.Evt9:
		return async(func() error { return w.a.Send(pdataBytes()) })
	case ul.Evt11:
		return async(w.a.Release)
	case ul.Evt14:
		return async(w.a.AcceptRelease)
	case ul.Evt15:
		return async(func() error { w.a.Abort(); return nil })
	case ul.Evt17:
		p.c.Close()
	case ul.Evt18:
		// ARTIM is short in these cases: just wait.
	default:
		p.send(peerBytes[e]())
	}
	return nil
}

// TestScriptedPeer plays, over loopback TCP, every event a peer, the
// transport, ARTIM or the service user can cause, in every state the
// public API reaches, in both roles, and checks the cell's action, state,
// bytes, close and indication against ul.Table.
func TestScriptedPeer(t *testing.T) {
	events := []ul.Event{ul.Evt3, ul.Evt4, ul.Evt6, ul.Evt9, ul.Evt10, ul.Evt11, ul.Evt12, ul.Evt13, ul.Evt14, ul.Evt15, ul.Evt16, ul.Evt17, ul.Evt18, ul.Evt19}
	for _, requestor := range []bool{false, true} {
		for _, r := range reachable(requestor) {
			for _, e := range events {
				if e == ul.Evt18 && !r.artim {
					continue
				}
				act, _ := ul.Lookup(r.state, e)
				t.Run(fmt.Sprintf("%s/%s/%s/%s", roleName(requestor), r.state, e, act), func(t *testing.T) {
					t.Parallel()
					cfg := Config{AETitle: "WARD", ARTIMTimeout: wait, IdleTimeout: -1}
					if e == ul.Evt18 {
						cfg.ARTIMTimeout = 300 * time.Millisecond
					}
					w, p, pend := r.drive(t, cfg)
					got := play(t, w, p, e)
					// ARTIM while waiting for an A-ASSOCIATE-AC/RJ (Sta5) or an
					// A-RELEASE-RP (Sta7), where Table 9-10 runs no timer: Ward
					// gives up as the local user, an A-ABORT request (Evt15).
					ev := e
					if e == ul.Evt18 && (r.state == ul.Sta5 || r.state == ul.Sta7) {
						ev = ul.Evt15
					}
					tr := w.waitStep(r.state, ev)
					x := expect(r.state, ev, requestor)
					if tr != x.steps[0] {
						t.Fatalf("step %v, want %v", tr, x.steps[0])
					}
					for _, want := range x.steps[1:] {
						if tr := w.waitStep(want.From, want.Event); tr != want {
							t.Fatalf("implied step %v, want %v", tr, want)
						}
					}
					for _, s := range x.sends {
						p.expect(s)
					}
					if got != nil && act == ul.None && e != ul.Evt15 {
						if err := <-got; !errors.Is(err, ErrProtocol) {
							t.Errorf("primitive in empty cell returned %v", err)
						}
						got = nil
					}
					checkPeerIndication(t, w, act)
					if e == ul.Evt17 {
						// The peer closed: nothing to read.
					} else if x.closes {
						p.expectEOF()
					} else if e != ul.Evt17 {
						// Ward must send nothing else, and leave the state
						// on the peer's close (Evt17: AA-4, AA-5 or AR-5).
						_ = p.c.CloseWrite()
						p.expectEOF()
					}
					w.waitStopped()
					select {
					case <-w.a.done:
					default:
						t.Error("done not closed after the owner stopped")
					}
					for _, ch := range append(pend, got) {
						if ch == nil {
							continue
						}
						select {
						case <-ch:
						case <-time.After(wait):
							t.Error("a primitive is still blocked after the association ended")
						}
					}
				})
			}
		}
	}
}

// checkPeerIndication checks what the service user sees after act.
func checkPeerIndication(t *testing.T, w *ward, act ul.Action) {
	t.Helper()
	switch act {
	case ul.DT2, ul.AR6:
		p, free, err := w.a.Recv()
		if err != nil || len(p.Items) != 1 || p.Items[0].ContextID != 1 || string(p.Items[0].Data) != "\x01\x02\x03\x04" {
			t.Errorf("Recv: %v, %v", p, err)
		} else {
			free()
		}
	case ul.AR2:
		if _, _, err := w.a.Recv(); !errors.Is(err, ErrReleased) {
			t.Errorf("Recv: %v, want ErrReleased", err)
		}
	case ul.AE3:
		if err := <-w.estab; err != nil {
			t.Errorf("Request: %v", err)
		}
	case ul.AE4:
		var rj *RejectError
		if err := <-w.estab; !errors.As(err, &rj) {
			t.Errorf("Request: %v, want a rejection", err)
		}
	case ul.AA3:
		<-w.a.done
		var ab *AbortError
		if _, _, err := w.a.Recv(); !errors.As(err, &ab) {
			t.Errorf("Recv: %v, want an A-ABORT indication", err)
		}
	case ul.AA1, ul.AA4, ul.AA8:
		<-w.a.done
		if _, _, err := w.a.Recv(); !errors.Is(err, ErrAborted) {
			t.Errorf("Recv: %v, want ErrAborted", err)
		}
	}
}
