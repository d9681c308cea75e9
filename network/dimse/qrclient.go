package dimse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/ward-pacs/ward/dicom"
)

// RetrieveResult is the outcome of a C-MOVE or C-GET as SCU.
type RetrieveResult struct {
	// Final is the final response (counts, status, error comment).
	Final *Command
	// FailedSOPInstanceUIDs is the Failed SOP Instance UID List of the
	// final response's identifier, if any.
	FailedSOPInstanceUIDs []string
}

// Failed reports whether the operation or any sub-operation failed: a
// status other than success, or failed/warning sub-operations.
func (r *RetrieveResult) Failed() bool {
	f := r.Final
	return f.Status != StatusSuccess || f.NumberOfFailed > 0 || f.NumberOfWarning > 0 || len(r.FailedSOPInstanceUIDs) > 0
}

// ErrStop may be returned by a Find callback to stop the query: a
// C-CANCEL-RQ is sent and Find returns ErrStop with the final response.
var ErrStop = errors.New("dimse: stop")

// qrOp holds what the SCU side of one operation shares with the goroutine
// that may send its C-CANCEL.
type qrOp struct {
	cl     *Client
	ctxID  byte
	id     uint16
	mu     sync.Mutex
	sent   bool
	closed bool
}

// cancel sends C-CANCEL-RQ once.
func (o *qrOp) cancel() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.sent || o.closed {
		return
	}
	o.sent = true
	_ = o.cl.send(o.ctxID, &Command{CommandField: CCancelRQ, MessageIDBeingRespondedTo: o.id}, nil)
}

func (o *qrOp) done() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
}

// send writes a message; the client's writes may come from the goroutine
// that cancels an operation.
func (cl *Client) send(ctxID byte, cmd *Command, data io.Reader) error {
	cl.wmu.Lock()
	defer cl.wmu.Unlock()
	return cl.WriteMessage(ctxID, cmd, data)
}

// startQR sends a C-FIND/C-MOVE/C-GET request with its identifier and
// arranges for a C-CANCEL when ctx is cancelled.
func (cl *Client) startQR(ctx context.Context, ctxID byte, rq *Command, identifier *dicom.DataSet) (*qrOp, *dicom.TransferSyntax, func() bool, error) {
	pc, ok := cl.A.Context(ctxID)
	if !ok {
		return nil, nil, nil, fmt.Errorf("dimse: presentation context %d was not accepted", ctxID)
	}
	ts := dicom.LookupTransferSyntax(pc.TransferSyntax)
	if ts == nil {
		return nil, nil, nil, fmt.Errorf("dimse: unknown transfer syntax %s", pc.TransferSyntax)
	}
	b, err := identifier.Bytes(ts)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("encoding the identifier: %w", err)
	}
	rq.MessageID = cl.nextID()
	rq.AffectedSOPClassUID = pc.AbstractSyntax
	if err := cl.send(ctxID, rq, bytes.NewReader(b)); err != nil {
		return nil, nil, nil, err
	}
	op := &qrOp{cl: cl, ctxID: ctxID, id: rq.MessageID}
	stop := context.AfterFunc(ctx, op.cancel)
	return op, ts, stop, nil
}

// nextResponse reads the next message for operation op: a response to it
// (want), or, when allowStore, a C-STORE-RQ.
func (cl *Client) nextResponse(op *qrOp, want uint16, allowStore bool) (*Message, error) {
	m, err := cl.ReadMessage()
	if err != nil {
		return nil, err
	}
	if allowStore && m.Command.CommandField == CStoreRQ {
		return m, nil
	}
	if m.Command.CommandField != want {
		return nil, cl.protocolError(fmt.Sprintf("expected %s, got %s", CommandName(want), CommandName(m.Command.CommandField)))
	}
	if m.Command.MessageIDBeingRespondedTo != op.id {
		return nil, cl.protocolError(fmt.Sprintf("response to message %d while waiting for %d", m.Command.MessageIDBeingRespondedTo, op.id))
	}
	return m, nil
}

// Find sends a C-FIND-RQ with identifier on context ctxID and calls fn for
// each match of the pending responses. When fn returns an error or ctx is
// cancelled, a C-CANCEL-RQ is sent and the remaining responses are read
// up to the final one. It returns the final response and fn's first error;
// a failure status is in the response, not an error.
func (cl *Client) Find(ctx context.Context, ctxID byte, identifier *dicom.DataSet, fn func(match *dicom.DataSet) error) (*Command, error) {
	op, ts, stop, err := cl.startQR(ctx, ctxID, &Command{CommandField: CFindRQ, Priority: PriorityMedium}, identifier)
	if err != nil {
		return nil, err
	}
	defer stop()
	defer op.done()
	var fnErr error
	for {
		m, err := cl.nextResponse(op, CFindRSP, false)
		if err != nil {
			return nil, err
		}
		if CategoryOf(m.Command.Status) != CategoryPending {
			if m.Data != nil {
				if _, err := io.Copy(io.Discard, m.Data); err != nil {
					return nil, err
				}
			}
			return m.Command, fnErr
		}
		if m.Data == nil {
			continue
		}
		match, err := dicom.ReadDataSet(m.Data, ts, MaxIdentifierLength)
		if err != nil {
			if _, derr := io.Copy(io.Discard, m.Data); derr != nil {
				return nil, derr
			}
			if fnErr == nil {
				fnErr = fmt.Errorf("decoding a match: %w", err)
				op.cancel()
			}
			continue
		}
		if fnErr != nil || ctx.Err() != nil {
			continue // cancelled: the rest is discarded
		}
		if err := fn(match); err != nil {
			fnErr = err
			op.cancel()
		}
	}
}

// finalRetrieve builds the result from a final C-MOVE/C-GET response.
func finalRetrieve(m *Message, ts *dicom.TransferSyntax) (*RetrieveResult, error) {
	res := &RetrieveResult{Final: m.Command}
	if m.Data == nil {
		return res, nil
	}
	ds, err := dicom.ReadDataSet(m.Data, ts, MaxIdentifierLength)
	if err != nil {
		_, _ = io.Copy(io.Discard, m.Data)
		return res, nil // the counts still tell
	}
	if v := ds.String(FailedSOPInstanceUIDList); v != "" {
		for _, u := range strings.Split(v, `\`) {
			if u = strings.TrimSpace(u); u != "" {
				res.FailedSOPInstanceUIDs = append(res.FailedSOPInstanceUIDs, u)
			}
		}
	}
	return res, nil
}

// Move sends a C-MOVE-RQ to move the matches of identifier to the AE
// title dest, calls progress with each pending response and returns the
// final one. Cancelling ctx sends a C-CANCEL-RQ.
func (cl *Client) Move(ctx context.Context, ctxID byte, dest string, identifier *dicom.DataSet, progress func(*Command)) (*RetrieveResult, error) {
	op, ts, stop, err := cl.startQR(ctx, ctxID, &Command{CommandField: CMoveRQ, Priority: PriorityMedium, MoveDestination: dest}, identifier)
	if err != nil {
		return nil, err
	}
	defer stop()
	defer op.done()
	for {
		m, err := cl.nextResponse(op, CMoveRSP, false)
		if err != nil {
			return nil, err
		}
		if CategoryOf(m.Command.Status) == CategoryPending {
			if progress != nil {
				progress(m.Command)
			}
			continue
		}
		return finalRetrieve(m, ts)
	}
}

// Get sends a C-GET-RQ and serves the C-STORE sub-operations that arrive on
// the same association with st (Ward is then the storage SCP: propose the
// storage contexts with the SCP role, pdu.RoleSelection). progress sees
// each pending response. Cancelling ctx sends a C-CANCEL-RQ.
func (cl *Client) Get(ctx context.Context, ctxID byte, identifier *dicom.DataSet, st Storer, progress func(*Command)) (*RetrieveResult, error) {
	op, ts, stop, err := cl.startQR(ctx, ctxID, &Command{CommandField: CGetRQ, Priority: PriorityMedium}, identifier)
	if err != nil {
		return nil, err
	}
	defer stop()
	defer op.done()
	for {
		m, err := cl.nextResponse(op, CGetRSP, true)
		if err != nil {
			return nil, err
		}
		if m.Command.CommandField == CStoreRQ {
			if err := cl.serveStore(ctx, m, st); err != nil {
				return nil, err
			}
			continue
		}
		if CategoryOf(m.Command.Status) == CategoryPending {
			if progress != nil {
				progress(m.Command)
			}
			continue
		}
		return finalRetrieve(m, ts)
	}
}

// serveStore answers a C-STORE-RQ received during a C-GET.
func (cl *Client) serveStore(ctx context.Context, m *Message, st Storer) error {
	cmd := m.Command
	pc, _ := cl.A.Context(m.ContextID)
	req := Request{Assoc: cl.A, ContextID: m.ContextID, Context: pc, Command: cmd}
	// Writing the received object is work, not waiting for the peer: the
	// idle timer waits until the response is sent (as for ward serve).
	var work workHold
	OnDataEnd(m, func() { work.begin(cl.A) })
	defer work.end()
	var se *StatusError
	uidProblem := checkStoreUID(cmd.AffectedSOPInstanceUID)
	switch {
	case m.Data == nil:
		se = &StatusError{Status: StatusCannotUnderstand, Comment: "C-STORE-RQ without a data set"}
	case !pc.RequestorSCP:
		se = &StatusError{Status: StatusSOPClassNotSupported, Comment: "C-STORE-RQ on a context without the SCP role"}
	case cmd.AffectedSOPClassUID != pc.AbstractSyntax:
		se = &StatusError{Status: StatusDataSetMismatch, Comment: "affected SOP class differs from the presentation context's"}
	case st == nil:
		se = &StatusError{Status: StatusOutOfResources, Comment: "no storage"}
	case uidProblem != nil:
		se = uidProblem
	default:
		sr := &StoreRequest{Request: req, SOPClassUID: cmd.AffectedSOPClassUID, SOPInstanceUID: cmd.AffectedSOPInstanceUID, TransferSyntaxUID: pc.TransferSyntax, Data: m.Data}
		se = call(StatusOutOfResources, func() error { return st.Store(ctx, sr) })
	}
	if m.Data != nil {
		if _, err := io.Copy(io.Discard, m.Data); err != nil {
			return err
		}
	}
	return cl.send(m.ContextID, response(cmd, se), nil)
}
