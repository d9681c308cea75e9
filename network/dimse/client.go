package dimse

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/ward-pacs/ward/network/assoc"
)

// Client sends requests over an association it requested.
type Client struct {
	*Conn
	msgID uint16
	wmu   sync.Mutex
}

// NewClient wraps an established association (requestor side).
func NewClient(a *assoc.Association) *Client { return &Client{Conn: NewConn(a)} }

// FindContext returns an accepted context for the abstract syntax, with the
// given transfer syntax when ts is not empty.
func (cl *Client) FindContext(abstract, ts string) (*assoc.Context, bool) {
	var found *assoc.Context
	for _, c := range cl.A.Contexts() {
		if c.AbstractSyntax != abstract || (ts != "" && c.TransferSyntax != ts) {
			continue
		}
		if found == nil || c.ID < found.ID {
			found = c
		}
	}
	return found, found != nil
}

func (cl *Client) nextID() uint16 {
	cl.msgID++
	if cl.msgID == 0 {
		cl.msgID = 1
	}
	return cl.msgID
}

// readResponse reads the response to message id, discarding any data set.
func (cl *Client) readResponse(id uint16, want uint16) (*Command, error) {
	m, err := cl.ReadMessage()
	if err != nil {
		return nil, err
	}
	if m.Data != nil {
		if _, err := io.Copy(io.Discard, m.Data); err != nil {
			return nil, err
		}
	}
	if m.Command.CommandField != want {
		return nil, cl.protocolError(fmt.Sprintf("expected %s, got %s", CommandName(want), CommandName(m.Command.CommandField)))
	}
	if m.Command.MessageIDBeingRespondedTo != id {
		return nil, cl.protocolError(fmt.Sprintf("response to message %d while waiting for %d", m.Command.MessageIDBeingRespondedTo, id))
	}
	return m.Command, nil
}

// Echo sends a C-ECHO and returns the response status as an error when it
// is not success.
func (cl *Client) Echo(ctx context.Context) error {
	pc, ok := cl.FindContext(VerificationSOPClass, "")
	if !ok {
		return fmt.Errorf("dimse: the peer did not accept the Verification SOP class")
	}
	id := cl.nextID()
	if err := cl.WriteMessage(pc.ID, &Command{CommandField: CEchoRQ, MessageID: id, AffectedSOPClassUID: VerificationSOPClass}, nil); err != nil {
		return err
	}
	rsp, err := cl.readResponse(id, CEchoRSP)
	if err != nil {
		return err
	}
	if rsp.Status != StatusSuccess {
		return &StatusError{Status: rsp.Status, Comment: rsp.ErrorComment}
	}
	return nil
}

// Store sends one C-STORE on context ctxID with the data set read from data
// (already in the context's transfer syntax) and returns the response.
// A failure status is returned as the response, not as an error; err is
// for transport and protocol errors.
func (cl *Client) Store(ctx context.Context, ctxID byte, sopClass, sopInstance string, data io.Reader) (*Command, error) {
	id := cl.nextID()
	rq := &Command{CommandField: CStoreRQ, MessageID: id, AffectedSOPClassUID: sopClass, AffectedSOPInstanceUID: sopInstance, Priority: PriorityMedium}
	if err := cl.WriteMessage(ctxID, rq, data); err != nil {
		return nil, err
	}
	return cl.readResponse(id, CStoreRSP)
}
