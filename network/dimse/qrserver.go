package dimse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/pdu"
)

// FailedSOPInstanceUIDList is (0008,0058), the identifier element of final
// C-MOVE/C-GET responses that lists the failed sub-operations.
const FailedSOPInstanceUIDList dicom.Tag = 0x00080058

// qrClasses maps each Query/Retrieve SOP class to its request.
var qrClasses = map[string]uint16{
	PatientRootFind: CFindRQ, StudyRootFind: CFindRQ,
	PatientRootMove: CMoveRQ, StudyRootMove: CMoveRQ,
	PatientRootGet: CGetRQ, StudyRootGet: CGetRQ,
}

// QRCommand returns the request (CFindRQ, CMoveRQ or CGetRQ) a
// Query/Retrieve SOP class serves, or 0.
func QRCommand(sopClass string) uint16 { return qrClasses[sopClass] }

// startOperation validates a C-FIND/C-MOVE/C-GET request, decodes its
// identifier and starts the operation in its own goroutine. It returns the
// failure response when the request cannot start, nil once started.
func (s *session) startOperation(ctx context.Context, req *Request, data io.Reader, received time.Time) *Command {
	cmd := req.Command
	field := cmd.CommandField
	var h any = s.d.Handlers.Retrieve // nil: told nothing
	if field == CFindRQ {
		h = s.d.Handlers.Find
	}
	var id *dicom.DataSet
	// fail answers a request refused before it reached its handler,
	// which is told (the audit trail records the refusal).
	fail := func(se *StatusError) *Command {
		s.d.logFailure(req, se)
		refused(ctx, h, req, id, se)
		return response(cmd, se)
	}
	switch {
	case field == CFindRQ && s.d.Handlers.Find == nil, field != CFindRQ && s.d.Handlers.Retrieve == nil:
		return fail(&StatusError{Status: StatusSOPClassNotSupported, Comment: CommandName(field) + " is not provided"})
	case cmd.AffectedSOPClassUID != req.Context.AbstractSyntax:
		return fail(&StatusError{Status: StatusSOPClassNotSupported, Comment: "Affected SOP Class UID differs from the presentation context", Offending: []uint32{tagAffectedSOPClassUID}})
	case qrClasses[cmd.AffectedSOPClassUID] != field:
		return fail(&StatusError{Status: StatusSOPClassNotSupported, Comment: fmt.Sprintf("%s on SOP class %s", CommandName(field), cmd.AffectedSOPClassUID), Offending: []uint32{tagAffectedSOPClassUID}})
	case data == nil:
		return fail(&StatusError{Status: StatusCannotUnderstand, Comment: CommandName(field) + " without an identifier"})
	case field == CMoveRQ && cmd.MoveDestination == "":
		return fail(&StatusError{Status: StatusMoveDestinationUnknown, Comment: "C-MOVE-RQ without Move Destination", Offending: []uint32{tagMoveDestination}})
	}
	ts := dicom.LookupTransferSyntax(req.Context.TransferSyntax)
	if ts == nil {
		return fail(&StatusError{Status: StatusCannotUnderstand, Comment: "unknown transfer syntax " + req.Context.TransferSyntax})
	}
	decoded, err := dicom.ReadDataSet(data, ts, MaxIdentifierLength)
	if err != nil {
		if _, derr := io.Copy(io.Discard, data); derr != nil {
			return fail(&StatusError{Status: StatusCannotUnderstand, Comment: "identifier: " + derr.Error()})
		}
		return fail(&StatusError{Status: StatusDataSetMismatch, Comment: "identifier cannot be decoded: " + err.Error(), Err: err})
	}
	id = decoded
	if strings.TrimSpace(id.String(dicom.QueryRetrieveLevel)) == "" {
		return fail(&StatusError{Status: StatusDataSetMismatch, Comment: "identifier without Query/Retrieve Level (0008,0052)", Offending: []uint32{uint32(dicom.QueryRetrieveLevel)}})
	}
	octx, cancel := context.WithCancel(ctx)
	op := &operation{msgID: cmd.MessageID, field: field, cancel: cancel, received: received}
	if field == CGetRQ {
		op.storeRsp = make(chan *Command, 1)
	}
	s.mu.Lock()
	s.op = op
	s.mu.Unlock()
	s.wg.Add(1)
	// The operation is work for the peer until its final response is
	// sent: the idle timer does not run meanwhile (except while a C-GET
	// waits for the peer's C-STORE-RSP).
	op.idle = s.c.A.Busy()
	go func() {
		defer s.wg.Done()
		defer func() { op.idle() }()
		defer s.finish(op)
		switch field {
		case CFindRQ:
			s.find(octx, op, &FindRequest{Request: *req, SOPClassUID: cmd.AffectedSOPClassUID, Identifier: id, TransferSyntax: ts})
		default:
			r := &RetrieveRequest{Request: *req, SOPClassUID: cmd.AffectedSOPClassUID, Identifier: id, TransferSyntax: ts}
			if field == CMoveRQ {
				r.MoveDestination = cmd.MoveDestination
			}
			s.retrieve(octx, op, r)
		}
	}()
	return nil
}

// final sends the final response of op (after clearing it as the
// current operation).
func (s *session) final(op *operation, req *Request, rsp *Command, ident *dicom.DataSet, ts *dicom.TransferSyntax) {
	s.finish(op)
	var data io.Reader
	if ident != nil {
		b, err := ident.Bytes(ts)
		if err == nil {
			data = bytes.NewReader(b)
		}
	}
	if err := s.write(req.ContextID, rsp, data); err != nil {
		s.log.Debug("final response not sent", "assoc", req.Assoc.Name(), "err", err.Error())
		return
	}
	if s.d.Observe != nil {
		s.d.Observe(op.field, rsp.Status, op.received)
	}
}

func (s *session) find(ctx context.Context, op *operation, r *FindRequest) {
	cmd := r.Command
	// One response command and one buffer serve every match: each match
	// is encoded into buf, then copied into the queue of the connection,
	// which sends many in one write (session.queueData).
	pending := &Command{CommandField: CFindRSP, MessageIDBeingRespondedTo: cmd.MessageID, AffectedSOPClassUID: r.SOPClassUID}
	var buf appendBuffer
	emit := func(match *dicom.DataSet) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if match == nil {
			return errors.New("dimse: nil match")
		}
		buf = buf[:0]
		if err := dicom.WriteDataSet(&buf, match, r.TransferSyntax); err != nil {
			return fmt.Errorf("encoding a match: %w", err)
		}
		pending.Status = StatusPending
		if r.PendingWarning {
			pending.Status = StatusPendingWarning
		}
		return s.queueData(r.ContextID, pending, buf)
	}
	se := call(StatusUnableToProcess, func() error { return s.d.Handlers.Find.Find(ctx, r, emit) })
	if op.cancelled.Load() {
		se = &StatusError{Status: StatusCancel}
	}
	if CategoryOf(se.Status) == CategoryFailure {
		s.d.logFailure(&r.Request, se)
	}
	rsp := response(cmd, se)
	rsp.AffectedSOPInstanceUID = ""
	// The final response follows the pending ones still queued
	// (Conn.WriteMessage sends the queue first).
	s.final(op, &r.Request, rsp, nil, nil)
	s.stopFlush()
}

// tally counts sub-operations.
type tally struct {
	remaining, completed, failed, warning int
	failedUIDs                            []string
	firstFailure                          string
	// tried counts the instances recorded: they are tried in order.
	tried int
}

func clamp(n int) uint16 {
	if n > 0xFFFF {
		return 0xFFFF
	}
	return uint16(n)
}

func (t *tally) fail(uid, reason string) {
	t.failed++
	t.failedUIDs = append(t.failedUIDs, uid)
	if t.firstFailure == "" {
		t.firstFailure = reason
	}
}

// record counts the outcome of one sub-operation.
func (t *tally) record(inst *Instance, rsp *Command, err error) {
	t.remaining--
	t.tried++
	switch {
	case err != nil:
		t.fail(inst.SOPInstanceUID, err.Error())
	case CategoryOf(rsp.Status) == CategorySuccess:
		t.completed++
	case CategoryOf(rsp.Status) == CategoryWarning:
		t.warning++
	default:
		err = fmt.Errorf("status 0x%04X %s", rsp.Status, rsp.ErrorComment)
		t.fail(inst.SOPInstanceUID, err.Error())
	}
	if inst.Delivered != nil {
		inst.Delivered(err)
	}
}

// untried reports the instances never tried as not attempted.
func (t *tally) untried(insts []Instance) {
	for i := t.tried; i < len(insts); i++ {
		if insts[i].Delivered != nil {
			insts[i].Delivered(ErrNotAttempted)
		}
	}
}

func (s *session) retrieve(ctx context.Context, op *operation, r *RetrieveRequest) {
	cmd := r.Command
	h := s.d.Handlers.Retrieve
	finalErr := func(se *StatusError) {
		s.d.logFailure(&r.Request, se)
		s.final(op, &r.Request, response(cmd, se), nil, nil)
	}
	var addr string
	if cmd.CommandField == CMoveRQ {
		se := call(StatusUnableToProcess, func() error {
			var err error
			addr, err = h.Destination(ctx, r)
			return err
		})
		r.MoveDestinationAddr = addr
		if se.Status != StatusSuccess {
			if errors.Is(se, ErrUnknownDestination) || errors.Is(se.Err, ErrUnknownDestination) {
				se = &StatusError{Status: StatusMoveDestinationUnknown, Comment: fmt.Sprintf("unknown move destination %q", r.MoveDestination), Offending: []uint32{tagMoveDestination}, Err: se.Err}
			}
			finalErr(se)
			return
		}
	}
	var insts []Instance
	se := call(StatusUnableToProcess, func() error {
		var err error
		insts, err = h.Retrieve(ctx, r)
		return err
	})
	if se.Status != StatusSuccess {
		if op.cancelled.Load() {
			se = &StatusError{Status: StatusCancel}
		}
		finalErr(se)
		return
	}
	t := &tally{remaining: len(insts)}
	pending := func() {
		if t.remaining == 0 {
			return
		}
		rsp := &Command{CommandField: cmd.CommandField | 0x8000, MessageIDBeingRespondedTo: cmd.MessageID, AffectedSOPClassUID: r.SOPClassUID, Status: StatusPending}
		rsp.SetCounts(clamp(t.remaining), clamp(t.completed), clamp(t.failed), clamp(t.warning), true)
		_ = s.write(r.ContextID, rsp, nil)
	}
	if cmd.CommandField == CMoveRQ {
		s.moveSubOps(ctx, r, addr, insts, t, pending)
	} else {
		s.getSubOps(ctx, op, r, insts, t, pending)
	}
	rsp := &Command{CommandField: cmd.CommandField | 0x8000, MessageIDBeingRespondedTo: cmd.MessageID, AffectedSOPClassUID: r.SOPClassUID}
	cancelled := op.cancelled.Load() && t.remaining > 0
	switch {
	case cancelled:
		rsp.Status = StatusCancel
	case t.failed == 0 && t.warning == 0:
		rsp.Status = StatusSuccess
	case t.failed > 0 && t.completed == 0 && t.warning == 0:
		rsp.Status = StatusOutOfResourcesSubOps
		rsp.ErrorComment = "every sub-operation failed"
	default:
		rsp.Status = StatusSubOpsWarning
	}
	rsp.SetCounts(clamp(t.remaining), clamp(t.completed), clamp(t.failed), clamp(t.warning), cancelled)
	t.untried(insts)
	var ident *dicom.DataSet
	if len(t.failedUIDs) > 0 {
		ident = &dicom.DataSet{}
		ident.Set(FailedSOPInstanceUIDList, strings.Join(t.failedUIDs, `\`))
		s.log.Warn("sub-operations failed", "assoc", r.Assoc.Name(), "command", CommandName(cmd.CommandField),
			"completed", t.completed, "failed", t.failed, "warning", t.warning, "first_failure", t.firstFailure)
	}
	s.final(op, &r.Request, rsp, ident, r.TransferSyntax)
}

// moveSubOps sends the instances over associations to the destination,
// as many instances per association as fit in its presentation contexts.
func (s *session) moveSubOps(ctx context.Context, r *RetrieveRequest, addr string, insts []Instance, t *tally, pending func()) {
	cfg := s.d.Requestor
	if cfg.AETitle == "" {
		cfg.AETitle = strings.TrimSpace(r.Assoc.CalledAETitle())
	}
	if cfg.Logger == nil {
		cfg.Logger = s.d.Logger
	}
	origin := &MoveOrigin{AETitle: strings.TrimSpace(r.Assoc.CallingAETitle()), MessageID: r.Command.MessageID}
	for len(insts) > 0 && ctx.Err() == nil {
		pcs, n := ProposeStorage(insts)
		batch := insts[:n]
		insts = insts[n:]
		rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: r.MoveDestination, CallingAETitle: cfg.AETitle, ApplicationContext: pdu.ApplicationContextName, Contexts: pcs}
		sub, err := s.d.dialDestination(ctx, r.MoveDestination, addr, cfg, rq)
		if err != nil {
			for i := range batch {
				t.record(&batch[i], nil, fmt.Errorf("association to %s: %w", r.MoveDestination, err))
			}
			pending()
			continue
		}
		// The originator's association ending aborts the sub-association;
		// a C-CANCEL only stops before the next sub-operation.
		stop := context.AfterFunc(s.endedCtx(), sub.Abort)
		cl := NewClient(sub)
		for i := range batch {
			if ctx.Err() != nil {
				break
			}
			select {
			case <-sub.Done():
				t.record(&batch[i], nil, fmt.Errorf("association to %s ended: %w", r.MoveDestination, sub.Err()))
				pending()
				continue
			default:
			}
			rsp, err := cl.StoreInstance(ctx, &batch[i], origin)
			t.record(&batch[i], rsp, err)
			pending()
		}
		stop()
		select {
		case <-sub.Done():
		default:
			_ = sub.Release()
		}
		cl.Close()
	}
}

// endedCtx is a context cancelled when the association stops being read.
func (s *session) endedCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-s.ended
		cancel()
	}()
	return ctx
}

// getSubOps sends the instances over the C-GET's own association, on the
// storage contexts where the requestor took the SCP role.
func (s *session) getSubOps(ctx context.Context, op *operation, r *RetrieveRequest, insts []Instance, t *tally, pending func()) {
	usable := func(c *assoc.Context) bool { return c.RequestorSCP }
	send := func(ctx context.Context, pcID byte, rq *Command, data io.Reader) (*Command, error) {
		id := uint16(s.msgID.Add(1))
		if id == 0 {
			id = uint16(s.msgID.Add(1))
		}
		rq.MessageID = id
		if err := s.write(pcID, rq, data); err != nil {
			return nil, err
		}
		// Waiting for the peer: the idle timer runs.
		op.idle()
		defer func() { op.idle = s.c.A.Busy() }()
		select {
		case rsp := <-op.storeRsp:
			if rsp.MessageIDBeingRespondedTo != id {
				return nil, s.c.protocolError(fmt.Sprintf("C-STORE-RSP to message %d while waiting for %d", rsp.MessageIDBeingRespondedTo, id))
			}
			return rsp, nil
		case <-s.ended:
			if err := s.c.A.Err(); err != nil {
				return nil, err
			}
			return nil, assoc.ErrClosed
		}
	}
	for i := range insts {
		if ctx.Err() != nil {
			return
		}
		select {
		case <-s.ended:
			return
		default:
		}
		rsp, err := sendInstance(ctx, r.Assoc.Contexts(), usable, &insts[i], &Command{Priority: PriorityMedium}, send)
		t.record(&insts[i], rsp, err)
		var sub *SubOpError
		if err != nil && !errors.As(err, &sub) {
			return // the association is gone
		}
		pending()
	}
}

// dialDestination opens an association to a C-MOVE destination.
func (d *Dispatcher) dialDestination(ctx context.Context, aet, addr string, cfg assoc.Config, rq *pdu.AssociateRQ) (*assoc.Association, error) {
	if d.DialDestination == nil {
		return assoc.Dial(ctx, "tcp", addr, cfg, rq)
	}
	conn, err := d.DialDestination(ctx, aet, addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	return assoc.Request(ctx, conn, cfg, rq)
}
