package dimse_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

// wirePDV is one PDV as a scripted peer saw it, with the PDU it came in.
type wirePDV struct {
	pduIndex int
	command  bool
	last     bool
	length   int
}

// scriptedAcceptor accepts one association advertising maxLen, then
// records the P-DATA-TF PDUs it receives until the connection closes.
func scriptedAcceptor(t *testing.T, maxLen uint32) (addr string, seen <-chan []wirePDV) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	out := make(chan []wirePDV, 1)
	go func() {
		var got []wirePDV
		defer func() { out <- got }()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(conn)
		h, err := pdu.ReadHeader(br, 1<<20)
		if err != nil || h.Type != pdu.TypeAssociateRQ {
			return
		}
		body := make([]byte, h.Length)
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		p, err := pdu.Decode(h.Type, body)
		if err != nil {
			return
		}
		rq := p.(*pdu.AssociateRQ)
		ac := &pdu.AssociateAC{ProtocolVersion: 1, CalledAETitle: rq.CalledAETitle, CallingAETitle: rq.CallingAETitle,
			ApplicationContext: pdu.ApplicationContextName, UserInfo: pdu.UserInfo{MaxLength: maxLen, ImplementationClassUID: "1.2.3.4"}}
		for _, pc := range rq.Contexts {
			ac.Contexts = append(ac.Contexts, pdu.PresentationContext{ID: pc.ID, Result: pdu.ResultAcceptance, TransferSyntaxes: pc.TransferSyntaxes[:1]})
		}
		if _, err := conn.Write(ac.AppendTo(nil)); err != nil {
			return
		}
		for i := 0; ; i++ {
			h, err := pdu.ReadHeader(br, 1<<20)
			if err != nil {
				return
			}
			body := make([]byte, h.Length)
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
			if h.Type == pdu.TypeAbort {
				return
			}
			if h.Type != pdu.TypePDataTF {
				if h.Type == pdu.TypeReleaseRQ {
					_, _ = conn.Write((&pdu.ReleaseRP{}).AppendTo(nil))
				}
				continue
			}
			for len(body) >= 6 {
				l := int(binary.BigEndian.Uint32(body))
				got = append(got, wirePDV{pduIndex: i, command: body[5]&1 != 0, last: body[5]&2 != 0, length: l - 2})
				body = body[4+l:]
			}
		}
	}()
	return ln.Addr().String(), out
}

// TestWireLayoutOfMessages: how Ward lays a DIMSE message out in PDUs.
//   - A data set never shares a P-DATA-TF with its command, even a small
//     one (GDCM's gdcmscu waits forever otherwise, issue 14 item 19).
//   - Every fragment has an even length, even when the peer's maximum PDU
//     length is odd, and an odd data set (a deflated stream not padded)
//     gets one zero byte (DCMTK aborts on an odd fragment, item 16).
func TestWireLayoutOfMessages(t *testing.T) {
	const maxLen = 4097 // odd: maxFragment must still be even
	addr, seen := scriptedAcceptor(t, maxLen)
	ctx := context.Background()
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "PEER", CallingAETitle: "WARD", ApplicationContext: pdu.ApplicationContextName,
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.7", TransferSyntaxes: []string{"1.2.840.10008.1.2.1.99"}}}}
	a, err := assoc.Dial(ctx, "tcp", addr, assoc.Config{AETitle: "WARD"}, rq)
	if err != nil {
		t.Fatal(err)
	}
	c := dimse.NewConn(a)
	cmd := func() *dimse.Command {
		return &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.1.7", AffectedSOPInstanceUID: "1.2.3"}
	}
	// A small data set held in memory, of odd length.
	if err := c.WriteMessage(1, cmd(), bytes.NewReader(make([]byte, 11))); err != nil {
		t.Fatal(err)
	}
	// A streamed data set of odd length, several fragments long.
	const big = 3*4090 + 7
	if err := c.WriteMessage(1, cmd(), io.LimitReader(zeros{}, big)); err != nil {
		t.Fatal(err)
	}
	a.Abort()
	got := <-seen
	perPDU := map[int]int{}
	data := 0
	for _, v := range got {
		perPDU[v.pduIndex]++
		if v.length%2 != 0 {
			t.Errorf("fragment of odd length %d: %+v", v.length, v)
		}
		if v.length+6 > maxLen {
			t.Errorf("fragment of %d bytes exceeds the peer's maximum %d", v.length, maxLen)
		}
		if !v.command {
			data += v.length
		}
	}
	for i, n := range perPDU {
		if n != 1 {
			t.Errorf("PDU %d carries %d PDVs, want 1", i, n)
		}
	}
	if want := 12 + big + 1; data != want {
		t.Errorf("%d data bytes sent, want %d (each odd data set padded by one)", data, want)
	}
	if len(got) < 2 || !got[0].command || got[1].command || !got[1].last || got[1].length != 12 {
		t.Errorf("small message sent as %+v, want a command PDU then a data PDU of 12 bytes", got)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
