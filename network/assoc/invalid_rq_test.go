package assoc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/network/pdu"
)

// Exact bytes of A-ASSOCIATE-RQ PDUs, laid out from PS3.8 9.3.2 (not
// with the pdu package's encoder).

func rawItem(typ byte, body []byte) []byte {
	b := []byte{typ, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:], uint16(len(body)))
	return append(b, body...)
}

// rawContext is a presentation context item (0x20) with one abstract and
// one transfer syntax.
func rawContext(id byte, abstract, ts string) []byte {
	body := []byte{id, 0, 0xFF, 0}
	body = append(body, rawItem(0x30, []byte(abstract))...)
	body = append(body, rawItem(0x40, []byte(ts))...)
	return rawItem(0x20, body)
}

// rawRole is an SCP/SCU role selection sub-item (0x54).
func rawRole(uid string, scu, scp byte) []byte {
	body := binary.BigEndian.AppendUint16(nil, uint16(len(uid)))
	body = append(body, uid...)
	return rawItem(0x54, append(body, scu, scp))
}

// rawRQ is an A-ASSOCIATE-RQ from PEER to WARD with the given presentation
// context items and user information sub-items.
func rawRQ(contexts [][]byte, userInfo ...[]byte) []byte {
	body := []byte{0, 1, 0, 0}
	body = append(body, []byte("WARD            PEER            ")...)
	body = append(body, make([]byte, 32)...)
	body = append(body, rawItem(0x10, []byte(pdu.ApplicationContextName))...)
	for _, c := range contexts {
		body = append(body, c...)
	}
	ui := rawItem(0x51, []byte{0, 0, 0x40, 0})
	for _, s := range userInfo {
		ui = append(ui, s...)
	}
	body = append(body, rawItem(0x50, ui)...)
	b := []byte{pdu.TypeAssociateRQ, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[2:], uint32(len(body)))
	return append(b, body...)
}

const ctStorage = "1.2.840.10008.5.1.4.1.1.2"

// rejectInvalid is the A-ASSOCIATE-RJ for an inconsistent request:
// rejected-permanent, source service-provider (ACSE), no reason given.
var rejectInvalid = []byte{0x03, 0, 0, 0, 0, 4, 0, 1, 2, 1}

// serveRaw runs Serve against a scripted peer that sends rq, and returns
// the bytes Ward answered with (the first PDU), the error of Serve, and
// what the Invalid hook was told.
func serveRaw(t *testing.T, rq []byte) (answer []byte, err error, invalid error) {
	t.Helper()
	ours, theirs := tcpPair(t)
	acc := testAcceptor()
	acc.SCPRole = func(string) bool { return true }
	acc.TransferSyntaxes = func(_ *pdu.AssociateRQ, _ net.Addr, abstract string) ([]string, func(string) bool, bool) {
		return []string{implicitLE}, nil, abstract == verification || abstract == ctStorage
	}
	acc.Invalid = func(_ *pdu.AssociateRQ, e error) { invalid = e }
	res := make(chan error, 1)
	go func() {
		a, err := Serve(ours, Config{ARTIMTimeout: wait, IdleTimeout: -1}, acc)
		if a != nil {
			a.Abort()
		}
		res <- err
	}()
	p := &peer{t: t, c: theirs}
	p.send(rq)
	pd, rerr := p.read()
	if rerr != nil {
		t.Fatalf("no answer: %v", rerr)
	}
	answer = pd.AppendTo(nil)
	theirs.Close()
	return answer, <-res, invalid
}

// TestRegressionDuplicateContextID: two presentation contexts with one ID
// were answered once, the second silently dropped and not audited (issue
// 14, item 15). The request is now rejected as a whole, permanently, and
// the Invalid hook (the audit trail's source) is told why.
func TestRegressionDuplicateContextID(t *testing.T) {
	for _, tc := range []struct {
		name string
		rq   []byte
		why  string
	}{
		{"same ID, two abstract syntaxes", rawRQ([][]byte{rawContext(1, verification, implicitLE), rawContext(1, ctStorage, implicitLE)}), "two presentation contexts with ID 1"},
		{"same ID, same context twice", rawRQ([][]byte{rawContext(3, verification, implicitLE), rawContext(5, ctStorage, implicitLE), rawContext(3, verification, implicitLE)}), "two presentation contexts with ID 3"},
		{"two role selections for one SOP class", rawRQ([][]byte{rawContext(1, ctStorage, implicitLE)}, rawRole(ctStorage, 1, 0), rawRole(ctStorage, 0, 1)), "two SCP/SCU role selections for SOP class " + ctStorage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer, err, invalid := serveRaw(t, tc.rq)
			if !bytes.Equal(answer, rejectInvalid) {
				t.Fatalf("answer % x, want % x", answer, rejectInvalid)
			}
			var rj *RejectError
			if !errors.As(err, &rj) {
				t.Fatalf("Serve: %v, want a rejection", err)
			}
			if !errors.Is(invalid, ErrInvalidRequest) || !strings.Contains(invalid.Error(), tc.why) {
				t.Fatalf("Invalid told %v, want %q", invalid, tc.why)
			}
		})
	}
}

// A role selection for a SOP class that no context proposes selects
// nothing: the association is accepted, and that sub-item is answered
// with both roles turned down; the one for a proposed class is granted.
func TestRoleSelectionForUnproposedClass(t *testing.T) {
	const mr = "1.2.840.10008.5.1.4.1.1.4"
	answer, err, invalid := serveRaw(t, rawRQ([][]byte{rawContext(1, ctStorage, implicitLE)}, rawRole(mr, 0, 1), rawRole(ctStorage, 0, 1)))
	if err != nil || invalid != nil {
		t.Fatalf("Serve: %v, Invalid: %v", err, invalid)
	}
	p, derr := pdu.Decode(answer[0], answer[pdu.HeaderLen:])
	if derr != nil {
		t.Fatal(derr)
	}
	ac, ok := p.(*pdu.AssociateAC)
	if !ok {
		t.Fatalf("answer %v, want A-ASSOCIATE-AC", p)
	}
	want := []pdu.RoleSelection{{SOPClassUID: mr}, {SOPClassUID: ctStorage, SCU: false, SCP: true}}
	if fmt.Sprint(ac.UserInfo.Roles) != fmt.Sprint(want) {
		t.Fatalf("roles answered %+v, want %+v", ac.UserInfo.Roles, want)
	}
}

// The requestor side: an A-ASSOCIATE-AC that answers a context twice, or
// accepts one with a transfer syntax that was not proposed, is a protocol
// error: Ward aborts instead of guessing which answer holds.
func TestInconsistentAcceptAborts(t *testing.T) {
	twice := testAC()
	twice.Contexts = append(twice.Contexts, pdu.PresentationContext{ID: 1, Result: pdu.ResultAbstractSyntaxNotSupported, TransferSyntaxes: []string{""}})
	otherTS := testAC()
	otherTS.Contexts[0].TransferSyntaxes = []string{"1.2.840.10008.1.2.4.50"}
	for name, ac := range map[string]*pdu.AssociateAC{"answered twice": twice, "syntax not proposed": otherTS} {
		t.Run(name, func(t *testing.T) {
			w, p := startRequestor(t, Config{ARTIMTimeout: wait, IdleTimeout: -1})
			p.send(ac.AppendTo(nil))
			p.expect(sent{typ: pdu.TypeAbort, source: pdu.AbortSourceProvider})
			if err := <-w.estab; !errors.Is(err, ErrProtocol) {
				t.Fatalf("Request: %v, want a protocol error", err)
			}
		})
	}
}

// FuzzNegotiate: whatever request decodes, the acceptor's answer is a
// rejection or an acceptance that answers each proposed context exactly
// once, accepts only proposed transfer syntaxes and grants roles only
// for proposed SOP classes. Seeds: testdata/fuzz/FuzzNegotiate and these.
func FuzzNegotiate(f *testing.F) {
	f.Add(rawRQ([][]byte{rawContext(1, verification, implicitLE)})[pdu.HeaderLen:])
	f.Add(rawRQ([][]byte{rawContext(1, verification, implicitLE), rawContext(1, ctStorage, implicitLE)})[pdu.HeaderLen:])
	f.Add(rawRQ([][]byte{rawContext(1, ctStorage, implicitLE)}, rawRole(ctStorage, 1, 0), rawRole(ctStorage, 0, 1))[pdu.HeaderLen:])
	f.Add(rawRQ([][]byte{rawContext(1, ctStorage, implicitLE)}, rawRole("1.2.840.10008.5.1.4.1.1.4", 0, 1))[pdu.HeaderLen:])
	acc := testAcceptor()
	acc.SCPRole = func(string) bool { return true }
	acc.TransferSyntaxes = func(_ *pdu.AssociateRQ, _ net.Addr, abstract string) ([]string, func(string) bool, bool) {
		return []string{implicitLE}, func(string) bool { return true }, abstract == verification || abstract == ctStorage
	}
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := pdu.Decode(pdu.TypeAssociateRQ, body)
		if err != nil {
			return
		}
		rq := p.(*pdu.AssociateRQ)
		ac, rj := acc.Negotiate(rq, remote)
		if rj != nil {
			if ac != nil {
				t.Fatal("both an acceptance and a rejection")
			}
			return
		}
		proposed := map[byte]pdu.PresentationContext{}
		classes := map[string]bool{}
		for _, pc := range rq.Contexts {
			proposed[pc.ID] = pc
			classes[pc.AbstractSyntax] = true
		}
		answered := map[byte]bool{}
		for _, pc := range ac.Contexts {
			if answered[pc.ID] {
				t.Fatalf("context %d answered twice", pc.ID)
			}
			answered[pc.ID] = true
			prop, ok := proposed[pc.ID]
			if !ok {
				t.Fatalf("context %d answered but not proposed", pc.ID)
			}
			if pc.Result == pdu.ResultAcceptance && !slicesContains(prop.TransferSyntaxes, pc.TransferSyntaxes[0]) {
				t.Fatalf("context %d accepted with %q, not proposed", pc.ID, pc.TransferSyntaxes[0])
			}
		}
		if len(answered) != len(proposed) {
			t.Fatalf("%d contexts answered of %d proposed", len(answered), len(proposed))
		}
		for _, r := range ac.UserInfo.Roles {
			if !classes[r.SOPClassUID] && (r.SCU || r.SCP) {
				t.Fatalf("role granted for %s, not proposed", r.SOPClassUID)
			}
		}
		// What Ward answers, a requestor's check accepts.
		a := &Association{rq: rq}
		if err := a.acceptedBy(ac); err != nil {
			t.Fatalf("own answer refused: %v", err)
		}
	})
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
