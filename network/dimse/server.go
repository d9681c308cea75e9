package dimse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
)

// VerificationSOPClass is the C-ECHO SOP class.
const VerificationSOPClass = "1.2.840.10008.1.1"

// Request is what every handler receives about the request it serves.
type Request struct {
	Assoc     *assoc.Association
	ContextID byte
	Context   *assoc.Context
	Command   *Command
}

// StoreRequest is a C-STORE request. Data streams the data set in the
// presentation context's transfer syntax; the handler reads it (to EOF on
// success) and returns nil only once the object is durable.
type StoreRequest struct {
	Request
	SOPClassUID       string
	SOPInstanceUID    string
	TransferSyntaxUID string
	Data              io.Reader
}

// Refusal is a request the dispatcher refused before calling its
// handler (malformed, or not for the context it came on).
type Refusal struct {
	Request
	// Identifier is a C-FIND/C-MOVE/C-GET identifier once decoded, else
	// nil.
	Identifier *dicom.DataSet
	// Status is the failure the peer was answered with.
	Status *StatusError
}

// Refuser is implemented by a handler (Storer, Finder, Retriever) that is
// told of the requests for its service the dispatcher refused before
// calling it: the audit trail records every refusal. Refused runs on the
// association's goroutine and must not block.
type Refuser interface {
	Refused(ctx context.Context, r *Refusal)
}

// refused tells h, if it is a Refuser, of a refused request.
func refused(ctx context.Context, h any, req *Request, ident *dicom.DataSet, se *StatusError) {
	if rf, ok := h.(Refuser); ok {
		rf.Refused(ctx, &Refusal{Request: *req, Identifier: ident, Status: se})
	}
}

// Echoer serves C-ECHO.
type Echoer interface {
	Echo(ctx context.Context, r *Request) error
}

// Storer serves C-STORE.
type Storer interface {
	Store(ctx context.Context, r *StoreRequest) error
}

// Handlers routes each DIMSE service to its handler. A nil handler means the
// service is not provided (and its contexts are not accepted).
type Handlers struct {
	Echo     Echoer
	Store    Storer
	Find     Finder
	Retrieve Retriever
}

// Dispatcher serves the DIMSE messages of one association: it routes each
// request by command and SOP class to a handler and turns the handler's
// error into a status, never a crash.
//
// C-FIND, C-MOVE and C-GET run in a goroutine of their own while the
// association keeps being read: a C-CANCEL-RQ for the operation cancels its
// context, the C-STORE-RSPs of C-GET sub-operations are routed to it, and
// any other request gets a failure (asynchronous operations are not
// negotiated, so one operation runs at a time).
type Dispatcher struct {
	Handlers Handlers
	Logger   *slog.Logger
	// Requestor configures the associations Ward opens to C-MOVE
	// destinations. An empty AETitle means the title the peer called Ward
	// by.
	Requestor assoc.Config
	// DialDestination, when set, opens the connection to a C-MOVE
	// destination (e.g. over TLS for destinations reached that way);
	// nil dials plain TCP.
	DialDestination func(ctx context.Context, aeTitle, addr string) (net.Conn, error)
	// Observe, when set, is told of every request answered: its command
	// field, the status of its (final) response and when its command
	// arrived. It runs on the association's goroutine (the operation's
	// for C-FIND, C-MOVE and C-GET), once the response is sent, and must
	// not block (metrics count with it).
	Observe func(command, status uint16, received time.Time)
}

// Summary counts what one association did, for its log line.
type Summary struct {
	Echo, Store, StoreFailed, Other int
	Find, Move, Get                 int
	Bytes                           int64
}

// Serve reads requests until the association ends, answers the peer's
// release and logs one summary line. It returns nil after an orderly
// release.
func (d *Dispatcher) Serve(ctx context.Context, a *assoc.Association) error {
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	c := NewConn(a)
	defer c.Close()
	var sum Summary
	s := &session{d: d, c: c, log: log, ended: make(chan struct{})}
	err := s.loop(ctx, &sum)
	_, _, bytesIn, bytesOut := a.StatsSnapshot()
	attrs := []any{"assoc", a.Name(), "remote", a.RemoteAddr().String(),
		"duration", time.Since(start).Round(time.Millisecond),
		"echo", sum.Echo, "store", sum.Store, "store_failed", sum.StoreFailed,
		"find", sum.Find, "move", sum.Move, "get", sum.Get,
		"bytes_in", bytesIn, "bytes_out", bytesOut}
	if err != nil {
		log.Warn("association ended", append(attrs, "end", err.Error())...)
		return err
	}
	log.Info("association released", attrs...)
	return nil
}

// session is the state of one association being served. Lock order:
// mu, then wmu.
type session struct {
	d   *Dispatcher
	c   *Conn
	log *slog.Logger

	// wmu serialises writes: the loop and the running operation both
	// send messages. It guards the flush timer of queued C-FIND responses
	// (queueData) too.
	wmu        sync.Mutex
	flush      *time.Timer
	flushArmed bool
	flushErr   error
	// mu guards op.
	mu sync.Mutex
	op *operation
	wg sync.WaitGroup
	// ended is closed when the loop stops reading.
	ended chan struct{}
	msgID atomic.Uint32
}

// operation is the C-FIND, C-MOVE or C-GET in progress.
type operation struct {
	msgID     uint16
	field     uint16
	cancel    context.CancelFunc
	cancelled atomic.Bool
	// idle ends the operation's hold on the idle timer (assoc.Busy);
	// used by the operation's goroutine only.
	idle func()
	// storeRsp receives the C-STORE-RSPs of C-GET sub-operations.
	storeRsp chan *Command
	// received is when its request arrived (set for Dispatcher.Observe).
	received time.Time
}

func (s *session) write(ctxID byte, cmd *Command, data io.Reader) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.c.WriteMessage(ctxID, cmd, data)
}

// QueueDelay bounds how long a C-FIND pending response may wait in the
// queue (Conn.QueueMessageData) for others to be sent with: matches that
// come slowly from the index still reach the peer within it.
const QueueDelay = 5 * time.Millisecond

// queueData queues a message (Conn.QueueMessageData), to be sent within
// QueueDelay. An error of an earlier send from the queue is returned.
func (s *session) queueData(ctxID byte, cmd *Command, data []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.flushErr != nil {
		return s.flushErr
	}
	queued, err := s.c.QueueMessageData(ctxID, cmd, data)
	if queued && !s.flushArmed {
		s.flushArmed = true
		if s.flush == nil {
			s.flush = time.AfterFunc(QueueDelay, s.flushQueued)
		} else {
			s.flush.Reset(QueueDelay)
		}
	}
	return err
}

// flushQueued sends the queued messages: the flush timer's function.
func (s *session) flushQueued() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.flushArmed = false
	if err := s.c.Flush(); err != nil && s.flushErr == nil {
		s.flushErr = err
	}
}

// stopFlush stops the flush timer once nothing more is queued.
func (s *session) stopFlush() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.flush != nil {
		s.flush.Stop()
		s.flushArmed = false
	}
	s.flushErr = nil
}

func (s *session) current() *operation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.op
}

// finish clears op before its final response is sent, so that the peer's
// next request is served normally.
func (s *session) finish(op *operation) {
	s.mu.Lock()
	if s.op == op {
		s.op = nil
	}
	s.mu.Unlock()
	op.cancel()
}

// stop cancels the running operation (if any) and waits for it.
func (s *session) stop() {
	if op := s.current(); op != nil {
		op.cancel()
	}
	s.wg.Wait()
}

func (s *session) loop(ctx context.Context, sum *Summary) error {
	defer func() {
		close(s.ended)
		s.stop()
	}()
	for {
		m, err := s.c.ReadMessage()
		var received time.Time
		if s.d.Observe != nil {
			received = time.Now()
		}
		if errors.Is(err, assoc.ErrReleased) {
			// A peer that releases in the middle of an operation gets its
			// end (cancelled) before the release is answered.
			s.stop()
			return s.c.A.AcceptRelease()
		}
		if err != nil {
			return err
		}
		pc, _ := s.c.A.Context(m.ContextID)
		req := Request{Assoc: s.c.A, ContextID: m.ContextID, Context: pc, Command: m.Command}
		var work workHold // the work for this request (assoc.Busy)
		if op := s.current(); op != nil {
			handled, err := s.duringOperation(op, m, sum)
			if err != nil {
				return err
			}
			if handled {
				continue
			}
		}
		var rsp *Command
		switch m.Command.CommandField {
		case CEchoRQ:
			sum.Echo++
			rsp = s.d.echo(ctx, &req)
		case CStoreRQ:
			sum.Store++
			// Once the object has arrived, writing it is work for the
			// peer: the idle timer waits until the response is sent.
			OnDataEnd(m, func() { work.begin(s.c.A) })
			rsp = s.d.store(ctx, &req, m.Data)
			if CategoryOf(rsp.Status) == CategoryFailure {
				sum.StoreFailed++
			}
		case CFindRQ, CMoveRQ, CGetRQ:
			switch m.Command.CommandField {
			case CFindRQ:
				sum.Find++
			case CMoveRQ:
				sum.Move++
			default:
				sum.Get++
			}
			rsp = s.startOperation(ctx, &req, m.Data, received)
			if rsp == nil {
				continue // started: the operation answers
			}
		case CCancelRQ:
			// No operation is in progress on this association to cancel.
			continue
		default:
			sum.Other++
			if m.Command.CommandField&0x8000 != 0 {
				return s.c.protocolError(fmt.Sprintf("unexpected %s", CommandName(m.Command.CommandField)))
			}
			rsp = response(m.Command, &StatusError{Status: StatusUnrecognizedOperation, Comment: CommandName(m.Command.CommandField) + " is not supported"})
		}
		if m.Data != nil {
			// Whatever the handler left unread is drained before the
			// response so the peer is never answered mid-message.
			if _, err := io.Copy(io.Discard, m.Data); err != nil {
				work.end()
				return err
			}
		}
		err = s.write(m.ContextID, rsp, nil)
		work.end()
		if err != nil {
			return err
		}
		if s.d.Observe != nil {
			s.d.Observe(m.Command.CommandField, rsp.Status, received)
		}
	}
}

// duringOperation handles a message received while op runs. It reports
// whether the message was dealt with.
func (s *session) duringOperation(op *operation, m *Message, sum *Summary) (bool, error) {
	cmd := m.Command
	switch {
	case cmd.CommandField == CCancelRQ:
		if cmd.MessageIDBeingRespondedTo == op.msgID {
			op.cancelled.Store(true)
			op.cancel()
		}
		return true, nil
	case cmd.CommandField == CStoreRSP && op.field == CGetRQ:
		select {
		case op.storeRsp <- cmd:
			return true, nil
		default:
			return true, s.c.protocolError("C-STORE-RSP that answers no C-GET sub-operation")
		}
	case cmd.CommandField&0x8000 != 0:
		return false, nil // the loop treats unexpected responses
	}
	sum.Other++
	if m.Data != nil {
		if _, err := io.Copy(io.Discard, m.Data); err != nil {
			return true, err
		}
	}
	se := &StatusError{Status: StatusProcessingFailure, Comment: fmt.Sprintf("%s during another operation (asynchronous ops not negotiated)", CommandName(cmd.CommandField))}
	s.d.logFailure(&Request{Assoc: s.c.A, ContextID: m.ContextID, Command: cmd}, se)
	return true, s.write(m.ContextID, response(cmd, se), nil)
}

// workHold holds an association's idle timer (assoc.Busy) from begin,
// when a received data set has ended and the work on it starts, to end,
// once the response is sent. begin may come from the goroutine of a
// handler that reads the data set; after end it does nothing.
type workHold struct {
	mu    sync.Mutex
	done  func()
	ended bool
}

func (h *workHold) begin(a *assoc.Association) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.ended && h.done == nil {
		h.done = a.Busy()
	}
}

func (h *workHold) end() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ended = true
	if h.done != nil {
		h.done()
	}
}

// response builds the response to rq with the status of err.
func response(rq *Command, se *StatusError) *Command {
	return &Command{
		CommandField:              rq.CommandField | 0x8000,
		MessageIDBeingRespondedTo: rq.MessageID,
		AffectedSOPClassUID:       rq.AffectedSOPClassUID,
		AffectedSOPInstanceUID:    rq.AffectedSOPInstanceUID,
		Status:                    se.Status,
		ErrorComment:              se.Comment,
		OffendingElement:          se.Offending,
	}
}

// call runs a handler, turning a panic into a processing failure.
func call(fallback uint16, f func() error) (se *StatusError) {
	defer func() {
		if r := recover(); r != nil {
			se = &StatusError{Status: fallback, Comment: "internal error", Err: fmt.Errorf("panic: %v\n%s", r, debug.Stack())}
		}
	}()
	return AsStatus(f(), fallback)
}

func (d *Dispatcher) logFailure(req *Request, se *StatusError) {
	if se.Status == StatusSuccess || d.Logger == nil {
		return
	}
	args := []any{"assoc", req.Assoc.Name(), "command", CommandName(req.Command.CommandField), "status", fmt.Sprintf("0x%04X", se.Status), "comment", se.Comment}
	if se.Err != nil {
		args = append(args, "cause", se.Err.Error())
	}
	d.Logger.Warn("request failed", args...)
}

func (d *Dispatcher) echo(ctx context.Context, req *Request) *Command {
	if req.Context.AbstractSyntax != VerificationSOPClass {
		return response(req.Command, &StatusError{Status: StatusSOPClassNotSupported, Comment: "C-ECHO on a context that is not Verification"})
	}
	if d.Handlers.Echo == nil {
		return response(req.Command, &StatusError{Status: StatusSuccess})
	}
	se := call(StatusProcessingFailure, func() error { return d.Handlers.Echo.Echo(ctx, req) })
	d.logFailure(req, se)
	return response(req.Command, se)
}

// checkStoreUID refuses a C-STORE whose Affected SOP Instance UID Ward
// would not key on (dicom.UIDProblem): status 0117, Invalid SOP Instance,
// which PS3.7 9.1.1.1.9 gives to a UID that breaks the construction rules.
// The value is not repeated in the comment (it may hold control
// characters); the offending element says which it is.
func checkStoreUID(uid string) *StatusError {
	if p := dicom.UIDProblem(uid); p != "" {
		return &StatusError{Status: StatusInvalidSOPInstance, Comment: "Affected SOP Instance UID " + p + " (PS3.5 9.1)", Offending: []uint32{tagAffectedSOPInstanceUID}}
	}
	return nil
}

// store serves a C-STORE-RQ; the request it returns tells what the Storer
// learned of the object.
func (d *Dispatcher) store(ctx context.Context, req *Request, data io.Reader) *Command {
	cmd := req.Command
	sr := &StoreRequest{Request: *req, SOPClassUID: cmd.AffectedSOPClassUID, SOPInstanceUID: cmd.AffectedSOPInstanceUID, Data: data}
	fail := func(se *StatusError) *Command {
		d.logFailure(req, se)
		return response(cmd, se)
	}
	// refuse answers a request refused before it reached the Storer,
	// which is told (the audit trail counts it as a failed store).
	refuse := func(se *StatusError) *Command {
		refused(ctx, d.Handlers.Store, req, nil, se)
		return fail(se)
	}
	switch {
	case d.Handlers.Store == nil:
		return fail(&StatusError{Status: StatusSOPClassNotSupported, Comment: "storage is not provided"})
	case data == nil:
		return refuse(&StatusError{Status: StatusCannotUnderstand, Comment: "C-STORE-RQ without a data set"})
	case cmd.AffectedSOPClassUID != req.Context.AbstractSyntax:
		return refuse(&StatusError{Status: StatusDataSetMismatch, Comment: "Affected SOP Class UID differs from the presentation context", Offending: []uint32{tagAffectedSOPClassUID}})
	case cmd.AffectedSOPInstanceUID == "":
		return refuse(&StatusError{Status: StatusCannotUnderstand, Comment: "C-STORE-RQ without Affected SOP Instance UID", Offending: []uint32{tagAffectedSOPInstanceUID}})
	}
	if se := checkStoreUID(cmd.AffectedSOPInstanceUID); se != nil {
		return refuse(se)
	}
	sr.TransferSyntaxUID = req.Context.TransferSyntax
	se := call(StatusOutOfResources, func() error { return d.Handlers.Store.Store(ctx, sr) })
	return fail(se)
}
