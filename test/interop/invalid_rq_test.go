package interop

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/network/pdu"
)

// rawAssociateRQ lays out an A-ASSOCIATE-RQ from PEER to WARD by hand
// (PS3.8 9.3.2) with the given presentation context item bodies.
func rawAssociateRQ(contexts ...[]byte) []byte {
	item := func(typ byte, body []byte) []byte {
		b := []byte{typ, 0, 0, 0}
		binary.BigEndian.PutUint16(b[2:], uint16(len(body)))
		return append(b, body...)
	}
	body := append([]byte{0, 1, 0, 0}, []byte("WARD            PEER            ")...)
	body = append(body, make([]byte, 32)...)
	body = append(body, item(0x10, []byte(pdu.ApplicationContextName))...)
	for _, c := range contexts {
		body = append(body, item(0x20, c)...)
	}
	body = append(body, item(0x50, item(0x51, []byte{0, 0, 0x40, 0}))...)
	b := []byte{pdu.TypeAssociateRQ, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[2:], uint32(len(body)))
	return append(b, body...)
}

// rawContextBody is a presentation context item body: ID, then abstract
// syntax sub-items, then one transfer syntax (Implicit VR LE).
func rawContextBody(id byte, abstracts ...string) []byte {
	sub := func(typ byte, v string) []byte {
		b := []byte{typ, 0, 0, 0}
		binary.BigEndian.PutUint16(b[2:], uint16(len(v)))
		return append(b, v...)
	}
	b := []byte{id, 0, 0xFF, 0}
	for _, a := range abstracts {
		b = append(b, sub(0x30, a)...)
	}
	return append(b, sub(0x40, "1.2.840.10008.1.2")...)
}

// exchange sends rq to Ward and returns its first PDU's bytes.
func exchange(t *testing.T, addr string, rq []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(rq); err != nil {
		t.Fatal(err)
	}
	h := make([]byte, pdu.HeaderLen)
	if _, err := io.ReadFull(c, h); err != nil {
		t.Fatalf("no answer: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(h[2:]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatal(err)
	}
	return append(h, body...)
}

// TestRegressionInvalidAssociateRQAudited: `ward serve` receives an
// A-ASSOCIATE-RQ with two presentation contexts of ID 1; the second was
// silently dropped and nothing was audited (issue 14, item 15). It is now
// rejected (permanent, ACSE, no reason given), logged and audited as a
// failed authentication and a security alert, like other refusals. A
// request the decoder refuses (a context with two abstract syntaxes) is
// answered with A-ABORT and audited the same way.
func TestRegressionInvalidAssociateRQAudited(t *testing.T) {
	w := startWard(t)
	const ct = "1.2.840.10008.5.1.4.1.1.2"
	got := exchange(t, w.addr, rawAssociateRQ(rawContextBody(1, "1.2.840.10008.1.1"), rawContextBody(1, ct)))
	if want := []byte{0x03, 0, 0, 0, 0, 4, 0, 1, 2, 1}; !bytes.Equal(got, want) {
		t.Fatalf("answer % x, want A-ASSOCIATE-RJ % x", got, want)
	}
	got = exchange(t, w.addr, rawAssociateRQ(rawContextBody(1, "1.2.840.10008.1.1", ct)))
	if got[0] != pdu.TypeAbort {
		t.Fatalf("answer % x, want A-ABORT", got)
	}
	const dup = "two presentation contexts with ID 1"
	const twoAbstract = "presentation context 1 has two abstract syntaxes"
	readAudit(t, w.dir, func(r []audit.Record) bool {
		return hasEvent(r, "authentication", 4, dup) && hasEvent(r, "security-alert", -1, dup) &&
			hasEvent(r, "authentication", 4, twoAbstract) && hasEvent(r, "security-alert", -1, twoAbstract)
	})
	for _, s := range []string{dup, twoAbstract} {
		if !strings.Contains(w.log.String(), s) {
			t.Errorf("Ward's log does not say %q:\n%s", s, w.log.String())
		}
	}
}
