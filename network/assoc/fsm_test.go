package assoc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/network/ul"
)

// The tests of this file cover PS3.8 Table 9-10 cell by cell, generated
// from ul.Table: TestMachineCells steps a machine put directly in every
// state with every event (both roles, 2 x 13 x 19 cells), TestScriptedPeer
// drives real associations over loopback TCP into every state a peer or
// the service user can reach and plays each event there as exact bytes or
// API calls.

const verification = "1.2.840.10008.1.1"
const implicitLE = "1.2.840.10008.1.2"

func testRQ() *pdu.AssociateRQ {
	return &pdu.AssociateRQ{
		ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "PEER",
		ApplicationContext: pdu.ApplicationContextName,
		Contexts:           []pdu.PresentationContext{{ID: 1, AbstractSyntax: verification, TransferSyntaxes: []string{implicitLE}}},
		UserInfo:           pdu.UserInfo{MaxLength: 16384, ImplementationClassUID: "1.2.3"},
	}
}

func testAC() *pdu.AssociateAC {
	return &pdu.AssociateAC{
		ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "PEER",
		ApplicationContext: pdu.ApplicationContextName,
		Contexts:           []pdu.PresentationContext{{ID: 1, Result: pdu.ResultAcceptance, TransferSyntaxes: []string{implicitLE}}},
		UserInfo:           pdu.UserInfo{MaxLength: 16384, ImplementationClassUID: "1.2.3"},
	}
}

func testAcceptor() *Acceptor {
	return &Acceptor{AETitle: "WARD", TransferSyntaxes: func(_ *pdu.AssociateRQ, _ net.Addr, abstract string) ([]string, func(string) bool, bool) {
		return []string{implicitLE}, nil, abstract == verification
	}}
}

// pdataBytes is a P-DATA-TF with one command PDV on context 1.
func pdataBytes() []byte {
	return (&pdu.PDataTF{Items: []pdu.PDV{{ContextID: 1, Command: true, Last: true, Data: []byte{1, 2, 3, 4}}}}).AppendTo(nil)
}

// Exact bytes a scripted peer sends for each PDU event.
var peerBytes = map[ul.Event]func() []byte{
	ul.Evt3:  func() []byte { return testAC().AppendTo(nil) },
	ul.Evt4:  func() []byte { return []byte{0x03, 0, 0, 0, 0, 4, 0, 1, 1, 7} },
	ul.Evt6:  func() []byte { return testRQ().AppendTo(nil) },
	ul.Evt10: pdataBytes,
	ul.Evt12: func() []byte { return []byte{0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0} },
	ul.Evt13: func() []byte { return []byte{0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0} },
	ul.Evt16: func() []byte { return []byte{0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0} },
	ul.Evt19: func() []byte { return []byte{0x08, 0, 0, 0, 0, 4, 0, 0, 0, 0} }, // unknown PDU type
}

func isPrimitive(e ul.Event) bool {
	switch e {
	case ul.Evt1, ul.Evt7, ul.Evt8, ul.Evt9, ul.Evt11, ul.Evt14, ul.Evt15:
		return true
	}
	return false
}

// sent is a PDU Ward is expected to send: its type and, for an A-ABORT,
// its source.
type sent struct {
	typ    byte
	source byte
}

func (s sent) String() string { return fmt.Sprintf("pdu 0x%02x (source %d)", s.typ, s.source) }

// expectation is what a cell of Table 9-10 makes Ward do.
type expectation struct {
	steps  []transition // the cell's transition and those it implies
	sends  []sent
	closes bool // Ward closes the transport
}

// expect derives the expected behaviour of cell (e, s) from ul.Table.
func expect(s ul.State, e ul.Event, requestor bool) expectation {
	act, ok := ul.Lookup(s, e)
	var x expectation
	if !ok {
		// Empty cell: a primitive is refused and nothing changes; anything
		// else is AA-8 behaviour (A-ABORT, service-provider source, then
		// Sta13), or a close where no association is open.
		switch {
		case isPrimitive(e):
			x.steps = []transition{{s, e, ul.None, s}}
		case s == ul.Sta1 || s == ul.Sta4 || s == ul.Sta13:
			x.steps = []transition{{s, e, ul.None, ul.Sta1}}
			x.closes = true
		default:
			x.steps = []transition{{s, e, ul.None, ul.Sta13}}
			x.sends = []sent{{pdu.TypeAbort, pdu.AbortSourceProvider}}
		}
		return x
	}
	to := ul.Next[act]
	switch act {
	case ul.AE2:
		x.sends = []sent{{typ: pdu.TypeAssociateRQ}}
	case ul.AE6: // the test negotiator accepts: AE-7 follows
		x.steps = append(x.steps, transition{s, e, act, ul.Sta3}, transition{ul.Sta3, ul.Evt7, ul.AE7, ul.Sta6})
		x.sends = []sent{{typ: pdu.TypeAssociateAC}}
	case ul.AE7:
		x.sends = []sent{{typ: pdu.TypeAssociateAC}}
	case ul.AE8:
		x.sends = []sent{{typ: pdu.TypeAssociateRJ}}
	case ul.DT1, ul.AR7:
		x.sends = []sent{{typ: pdu.TypePDataTF}}
	case ul.AR1:
		x.sends = []sent{{typ: pdu.TypeReleaseRQ}}
	case ul.AR4, ul.AR9:
		x.sends = []sent{{typ: pdu.TypeReleaseRP}}
	case ul.AR8: // collision: the release response is implied (see machine.go)
		if requestor {
			x.steps = append(x.steps, transition{s, e, act, ul.Sta9}, transition{ul.Sta9, ul.Evt14, ul.AR9, ul.Sta11})
			x.sends = []sent{{typ: pdu.TypeReleaseRP}}
		} else {
			x.steps = append(x.steps, transition{s, e, act, ul.Sta10})
		}
	case ul.AR10:
		x.steps = append(x.steps, transition{s, e, act, ul.Sta12}, transition{ul.Sta12, ul.Evt14, ul.AR4, ul.Sta13})
		x.sends = []sent{{typ: pdu.TypeReleaseRP}}
	case ul.AA1: // PS3.8 Table 9-9: service-user source
		x.sends = []sent{{pdu.TypeAbort, pdu.AbortSourceUser}}
	case ul.AA7, ul.AA8:
		x.sends = []sent{{pdu.TypeAbort, pdu.AbortSourceProvider}}
	case ul.AE4, ul.AR3, ul.AR5, ul.AA2, ul.AA3, ul.AA4, ul.AA5:
		x.closes = true
	}
	if x.steps == nil {
		x.steps = []transition{{s, e, act, to}}
	}
	return x
}

// decodeAll decodes the PDUs in b.
func decodeAll(t *testing.T, b []byte) []sent {
	t.Helper()
	var out []sent
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		p, _, err := pdu.Read(r, 1<<20, nil)
		if err != nil {
			t.Fatalf("ward sent undecodable bytes % x: %v", b, err)
		}
		s := sent{typ: p.Type()}
		if ab, ok := p.(*pdu.Abort); ok {
			s.source = ab.Source
		}
		out = append(out, s)
	}
	return out
}

// fakeConn records what the machine writes, for the direct cell tests.
type fakeConn struct {
	mu     sync.Mutex
	out    bytes.Buffer
	closed bool
}

func (c *fakeConn) Read([]byte) (int, error) { return 0, io.EOF }
func (c *fakeConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.out.Write(b)
}
func (c *fakeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}
func (c *fakeConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 104} }
func (c *fakeConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
}
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

// machineIn returns an association whose machine is in state s, with no
// goroutine running: the test calls step itself.
func machineIn(t *testing.T, s ul.State, requestor bool) (*Association, *fakeConn, *[]transition) {
	fc := &fakeConn{}
	a := newAssociation(Config{ARTIMTimeout: time.Hour, IdleTimeout: -1}, fc, requestor)
	a.artim = time.NewTimer(time.Hour)
	a.artim.Stop()
	a.idle = time.NewTimer(time.Hour)
	a.idle.Stop()
	t.Cleanup(func() { a.artim.Stop(); a.idle.Stop() })
	a.rq = testRQ()
	a.negotiator = testAcceptor()
	a.state = s
	var trace []transition
	a.trace = func(tr transition) { trace = append(trace, tr) }
	return a, fc, &trace
}

// eventFor builds the event e as the reader or the API would post it.
func eventFor(e ul.Event) event {
	ev := event{evt: e}
	switch e {
	case ul.Evt3, ul.Evt7:
		ev.pdu = testAC()
	case ul.Evt4, ul.Evt8:
		ev.pdu = &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceUser, Reason: pdu.RejectCalledAENotRecognized}
	case ul.Evt6:
		ev.pdu = testRQ()
	case ul.Evt10:
		p, _ := pdu.Decode(pdu.TypePDataTF, pdataBytes()[pdu.HeaderLen:])
		ev.pdu = p
	case ul.Evt12:
		ev.pdu = &pdu.ReleaseRQ{}
	case ul.Evt13:
		ev.pdu = &pdu.ReleaseRP{}
	case ul.Evt16:
		ev.pdu = &pdu.Abort{Source: pdu.AbortSourceUser}
	case ul.Evt17:
		ev.err = io.EOF
	case ul.Evt18:
		ev.err = ErrTimeout
	case ul.Evt19:
		ev.err = fmt.Errorf("%w 0x08", pdu.ErrUnknownType)
	case ul.Evt9:
		ev.data = pdataBytes()
	}
	if isPrimitive(e) {
		// Evt1, Evt7 and Evt8 are raised by Ward itself, never in a state
		// where the table has no entry; given a reply channel they are
		// treated as the other primitives (refused in an empty cell).
		ev.reply = make(chan error, 1)
	}
	return ev
}

func roleName(requestor bool) string {
	if requestor {
		return "requestor"
	}
	return "acceptor"
}

// TestMachineCells executes every cell of Table 9-10, empty or not, in
// both roles, by calling step on a machine put in the cell's state: the
// action, the resulting state, the bytes sent, whether the connection is
// closed, and the indication to the service user. This is how the cells
// no socket can reach are covered (Evt1/Evt2/Evt4 on the acceptor side,
// local primitives in states the API never leaves the user in, Sta3, Sta4,
// Sta9, Sta12).
func TestMachineCells(t *testing.T) {
	cells := 0
	for _, requestor := range []bool{false, true} {
		for s := ul.Sta1; s <= ul.Sta13; s++ {
			for e := ul.Evt1; e <= ul.Evt19; e++ {
				act, _ := ul.Lookup(s, e)
				cells++
				t.Run(fmt.Sprintf("%s/%s/%s/%s", roleName(requestor), s, e, act), func(t *testing.T) {
					a, fc, trace := machineIn(t, s, requestor)
					ev := eventFor(e)
					a.step(ev)
					x := expect(s, e, requestor)
					if fmt.Sprint(*trace) != fmt.Sprint(x.steps) {
						t.Errorf("steps %v, want %v", *trace, x.steps)
					}
					if got := decodeAll(t, fc.out.Bytes()); fmt.Sprint(got) != fmt.Sprint(x.sends) {
						t.Errorf("sent %v, want %v", got, x.sends)
					}
					if fc.closed != x.closes {
						t.Errorf("connection closed %v, want %v", fc.closed, x.closes)
					}
					if ev.reply != nil {
						err := <-ev.reply
						if (act == ul.None) != errors.Is(err, ErrProtocol) {
							t.Errorf("primitive returned %v", err)
						}
					}
					checkIndication(t, a, act)
				})
			}
		}
	}
	if cells != 2*ul.NumStates*ul.NumEvents {
		t.Fatalf("%d cells", cells)
	}
}

// checkIndication checks what the service user is told after action act.
func checkIndication(t *testing.T, a *Association, act ul.Action) {
	t.Helper()
	ended := func() error {
		select {
		case <-a.done:
			return a.endErr
		default:
			t.Fatalf("%s: association not ended for the service user", act)
			return nil
		}
	}
	switch act {
	case ul.DT2, ul.AR6:
		ind := <-a.indications
		if ind.pdata == nil || len(ind.pdata.Items) != 1 || !bytes.Equal(ind.pdata.Items[0].Data, []byte{1, 2, 3, 4}) {
			t.Errorf("P-DATA indication %+v", ind)
		}
	case ul.AR2:
		if ind := <-a.indications; !ind.release {
			t.Errorf("indication %+v, want A-RELEASE", ind)
		}
	case ul.AE3, ul.AE6:
		if err := <-a.estab; err != nil {
			t.Errorf("establishment: %v", err)
		}
	case ul.AE4:
		var rj *RejectError
		if err := ended(); !errors.As(err, &rj) {
			t.Errorf("end error %v, want a rejection", err)
		}
	case ul.AA3:
		var ab *AbortError
		if err := ended(); !errors.As(err, &ab) {
			t.Errorf("end error %v, want an A-ABORT indication", err)
		}
	case ul.AA1, ul.AA4, ul.AA8:
		if err := ended(); !errors.Is(err, ErrAborted) {
			t.Errorf("end error %v, want ErrAborted", err)
		}
	}
}
