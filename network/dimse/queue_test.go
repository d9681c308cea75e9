package dimse_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
	"github.com/ward-pacs/ward/network/pdu"
)

// countingConn counts the writes on a connection.
type countingConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestQueuedMessagesShareWrites: C-FIND pending responses queued with
// QueueMessageData leave many to a write, each still two P-DATA-TF PDUs
// of one PDV (command, then data set; odd data sets padded), in order,
// before the next message written. It sent one write per response
// before the queue.
func TestQueuedMessagesShareWrites(t *testing.T) {
	addr, seen := scriptedAcceptor(t, 16384)
	ctx := context.Background()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := &countingConn{Conn: raw}
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "PEER", CallingAETitle: "WARD", ApplicationContext: pdu.ApplicationContextName,
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.StudyRootFind, TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian.UID}}}}
	a, err := assoc.Request(ctx, conn, assoc.Config{AETitle: "WARD"}, rq)
	if err != nil {
		t.Fatal(err)
	}
	c := dimse.NewConn(a)
	before := conn.writes.Load()
	const n = 300
	for i := range n {
		rsp := &dimse.Command{CommandField: dimse.CFindRSP, MessageIDBeingRespondedTo: 1, AffectedSOPClassUID: dimse.StudyRootFind, Status: dimse.StatusPending}
		data := make([]byte, 200+i%2) // every other one odd
		data[0] = byte(i)
		if _, err := c.QueueMessageData(1, rsp, data); err != nil {
			t.Fatal(err)
		}
	}
	final := &dimse.Command{CommandField: dimse.CFindRSP, MessageIDBeingRespondedTo: 1, AffectedSOPClassUID: dimse.StudyRootFind, Status: dimse.StatusSuccess}
	if err := c.WriteMessage(1, final, nil); err != nil {
		t.Fatal(err)
	}
	writes := int(conn.writes.Load() - before)
	a.Abort()
	got := <-seen
	wire := 0 // bytes of the PDUs: a 6-byte PDU header and a 6-byte PDV header each
	for _, v := range got {
		wire += 12 + v.length
	}
	// One write each time the queue is full, one for what is left in it
	// and one for the final response.
	if max := wire/dimse.MaxQueued + 2; writes > max {
		t.Errorf("%d responses (%d bytes) sent in %d writes, want at most %d", n+1, wire, writes, max)
	}
	if len(got) != 2*n+1 {
		t.Fatalf("%d PDVs, want %d", len(got), 2*n+1)
	}
	pdus := map[int]bool{}
	for i, v := range got {
		if pdus[v.pduIndex] {
			t.Fatalf("PDV %d shares PDU %d with another", i, v.pduIndex)
		}
		pdus[v.pduIndex] = true
		wantCommand := i%2 == 0 || i == 2*n
		if v.command != wantCommand || !v.last {
			t.Fatalf("PDV %d: %+v, want command %v and last", i, v, wantCommand)
		}
		if !v.command && v.length != 200+(i/2)%2+(i/2)%2 {
			t.Fatalf("data set %d of %d bytes", i/2, v.length)
		}
	}
}

// slowFinder emits one match, then waits for the requestor to have it
// before the next: a match must not wait in the queue for others.
type slowFinder struct {
	received chan struct{}
}

func (f *slowFinder) Find(ctx context.Context, r *dimse.FindRequest, emit func(*dicom.DataSet) error) error {
	for i := range 2 {
		m := &dicom.DataSet{}
		m.Set(dicom.QueryRetrieveLevel, "STUDY")
		m.Set(dicom.StudyInstanceUID, fmt.Sprintf("1.2.3.%d", i))
		if err := emit(m); err != nil {
			return err
		}
		if i == 0 {
			select {
			case <-f.received:
			case <-time.After(20 * time.Second):
				return errors.New("the first match never reached the requestor")
			}
		}
	}
	return nil
}

// TestQueuedMatchReachesPeerWhileFindRuns: a match queued while the index
// is slow to give the next one still reaches the requestor (within
// dimse.QueueDelay), before the query ends.
func TestQueuedMatchReachesPeerWhileFindRuns(t *testing.T) {
	f := &slowFinder{received: make(chan struct{})}
	addr := startArchive(t, &dimsetest.Archive{}, dimsetest.Options{Dispatcher: func(d *dimse.Dispatcher) { d.Handlers.Find = f }})
	cl := qrAssoc(t, addr)
	var got []string
	rsp, err := cl.Find(context.Background(), 1, ident("STUDY", "StudyInstanceUID", ""), func(m *dicom.DataSet) error {
		got = append(got, m.String(dicom.StudyInstanceUID))
		if len(got) == 1 {
			close(f.received)
		}
		return nil
	})
	if err != nil || rsp.Status != dimse.StatusSuccess {
		t.Fatalf("C-FIND: %v, status %#04x %s", err, rsp.Status, rsp.ErrorComment)
	}
	if len(got) != 2 || got[0] != "1.2.3.0" || got[1] != "1.2.3.1" {
		t.Errorf("matches %v", got)
	}
}
