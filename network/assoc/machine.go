package assoc

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/network/ul"
)

// slogTrace is the level of per-event state machine logs.
const slogTrace = slog.LevelDebug - 4

// run is the owner goroutine: it takes events one at a time, looks the
// action up in PS3.8 Table 9-10 and performs it. first is the event that
// starts the machine (Evt2 for a requestor, Evt5 for an acceptor).
func (a *Association) run(first ul.Event) {
	a.artim = time.NewTimer(time.Hour)
	a.artim.Stop()
	a.idle = time.NewTimer(time.Hour)
	a.idle.Stop()
	defer a.artim.Stop()
	defer a.idle.Stop()
	defer close(a.stopped)
	a.step(event{evt: first})
	for a.state != ul.Sta1 {
		select {
		case e := <-a.pdus:
			a.resetIdle()
			a.step(e)
		case e := <-a.prims:
			a.step(e)
		case <-a.artim.C:
			a.artimExpired()
		case <-a.idle.C:
			a.idleExpired()
		case <-a.idleKick:
			a.resetIdle()
		}
	}
}

func (a *Association) artimExpired() {
	err := fmt.Errorf("%w: ARTIM expired after %s in %s", ErrTimeout, a.cfg.ARTIMTimeout, a.state)
	if a.state == ul.Sta5 || a.state == ul.Sta7 {
		// Waiting for the peer's A-ASSOCIATE-AC/RJ or A-RELEASE-RP: Table
		// 9-10 has no timer there; Ward, as the local user, gives up with
		// an A-ABORT request (Evt15), so the caller sees a timeout.
		a.step(event{evt: ul.Evt15, err: err})
		return
	}
	a.step(event{evt: ul.Evt18, err: err})
}

// idleExpired: no PDU arrived or left for IdleTimeout. Not an event of
// Table 9-10: Ward, as service user, gives up on a silent peer with an
// A-ABORT request. While Ward works for the peer (Busy) the association is
// not idle: the timer is set again, and once more when the work ends.
func (a *Association) idleExpired() {
	if a.busy.Load() > 0 {
		a.resetIdle()
		return
	}
	if ended := a.workEnded.Load(); ended != 0 {
		// Work that ended less than IdleTimeout ago (its idleKick not yet
		// taken when the timer fired): the idle period runs from its end.
		if rest := a.cfg.IdleTimeout - time.Since(time.Unix(0, ended)); rest > 0 {
			if a.state >= ul.Sta6 && a.state <= ul.Sta12 {
				a.idle.Reset(rest)
			}
			return
		}
	}
	if a.state >= ul.Sta6 && a.state <= ul.Sta12 {
		a.step(event{evt: ul.Evt15, abort: &pdu.Abort{Source: pdu.AbortSourceProvider}, err: fmt.Errorf("%w: idle for %s (no pdu received or sent, no work in progress)", ErrTimeout, a.cfg.IdleTimeout)})
	}
}

func (a *Association) resetIdle() {
	if a.cfg.IdleTimeout > 0 && a.state >= ul.Sta6 && a.state <= ul.Sta12 {
		a.idle.Reset(a.cfg.IdleTimeout)
	}
}

func (a *Association) startARTIM() { a.artim.Reset(a.cfg.ARTIMTimeout) }
func (a *Association) stopARTIM()  { a.artim.Stop() }

// transition is one step of the machine, as the trace hook sees it. Action
// is None for a pair that Table 9-10 leaves empty.
type transition struct {
	From   ul.State
	Event  ul.Event
	Action ul.Action
	To     ul.State
}

// step performs one event, then the events its action implies (pending).
func (a *Association) step(e event) {
	a.stepOne(e)
	for a.pending != nil {
		next := *a.pending
		a.pending = nil
		a.stepOne(next)
	}
}

// stepOne performs one event: the action of Table 9-10 and the transition.
func (a *Association) stepOne(e event) {
	from := a.state
	if a.trace != nil {
		defer func() { a.trace(transition{from, e.evt, ul.Table[e.evt][from], a.state}) }()
	}
	act, ok := ul.Lookup(from, e.evt)
	if !ok {
		a.unexpected(e)
		return
	}
	a.state = ul.Next[act]
	var reply error
	switch act {
	case ul.AE2: // send A-ASSOCIATE-RQ, wait (bounded by ARTIM) for AC/RJ
		if err := a.writePDU(a.rq); err != nil {
			a.finish(fmt.Errorf("sending A-ASSOCIATE-RQ: %w", err))
			break
		}
		a.startARTIM()
	case ul.AE3: // A-ASSOCIATE-AC received: confirmation (accept)
		a.stopARTIM()
		if err := a.acceptedBy(e.pdu.(*pdu.AssociateAC)); err != nil {
			a.providerAbort(pdu.AbortInvalidParamValue, err)
			break
		}
		a.resetIdle()
		a.established(nil)
	case ul.AE4: // A-ASSOCIATE-RJ received: confirmation (reject), close
		a.stopARTIM()
		a.finish(&RejectError{RJ: *e.pdu.(*pdu.AssociateRJ)})
	case ul.AE5: // transport connection indication: start ARTIM
		a.startARTIM()
	case ul.AE6: // A-ASSOCIATE-RQ received: stop ARTIM, A-ASSOCIATE indication
		a.stopARTIM()
		a.rq = e.pdu.(*pdu.AssociateRQ)
		ac, rj := a.negotiate()
		if rj != nil {
			a.pending = &event{evt: ul.Evt8, pdu: rj}
		} else {
			a.pending = &event{evt: ul.Evt7, pdu: ac}
		}
	case ul.AE7: // send A-ASSOCIATE-AC
		a.ac = e.pdu.(*pdu.AssociateAC)
		if err := a.writePDU(a.ac); err != nil {
			a.finish(fmt.Errorf("sending A-ASSOCIATE-AC: %w", err))
			break
		}
		a.resetIdle()
		a.established(nil)
	case ul.AE8: // send A-ASSOCIATE-RJ, start ARTIM
		rj := e.pdu.(*pdu.AssociateRJ)
		_ = a.writePDU(rj)
		a.startARTIM()
		a.fail(&RejectError{RJ: *rj})
	case ul.DT1, ul.AR7: // send P-DATA-TF
		if err := a.writeN(e.data, countPDUs(e.data)); err != nil {
			reply = fmt.Errorf("%w: sending P-DATA-TF: %w", ErrAborted, err)
			a.finish(reply)
			break
		}
		// Sending is activity too: a long object being sent, pending
		// responses of a long C-MOVE; the peer's next PDU is awaited from
		// here.
		a.resetIdle()
	case ul.DT2, ul.AR6: // P-DATA indication
		a.indicate(indication{pdata: e.pdu.(*pdu.PDataTF), buf: e.buf})
	case ul.AR1: // send A-RELEASE-RQ
		if err := a.writePDU(&pdu.ReleaseRQ{}); err != nil {
			reply = fmt.Errorf("%w: sending A-RELEASE-RQ: %w", ErrAborted, err)
			a.finish(reply)
			break
		}
		a.startARTIM()
	case ul.AR2: // A-RELEASE-RQ received: A-RELEASE indication
		a.indicate(indication{release: true})
	case ul.AR3: // A-RELEASE-RP received: confirmation, close transport
		a.stopARTIM()
		a.releaseDone = true
		a.finish(nil)
	case ul.AR4: // send A-RELEASE-RP, start ARTIM, wait for the peer to close
		_ = a.writePDU(&pdu.ReleaseRP{})
		a.releaseDone = true
		a.startARTIM()
	case ul.AR5: // transport closed in Sta13
		a.stopARTIM()
		a.finish(nil)
	case ul.AR8: // A-RELEASE-RQ received during our own release: collision
		// The service user is blocked in Release, which already says that
		// it wants the association released: its A-RELEASE response to the
		// collision indication is implied (Evt14), at once on the requestor
		// side (AR-9), after the peer's A-RELEASE-RP on the acceptor side
		// (AR-10, then AR-4). Delivering the indication through Recv
		// instead left nobody to answer it, and ARTIM aborted the
		// association (TestRegressionReleaseCollision).
		if a.requestor {
			a.pending = &event{evt: ul.Evt14}
		} else {
			a.state = ul.Sta10
		}
	case ul.AR9: // send A-RELEASE-RP (collision, requestor side)
		_ = a.writePDU(&pdu.ReleaseRP{})
	case ul.AR10: // A-RELEASE-RP received (collision, acceptor side)
		// The release response is implied, as for AR-8.
		a.pending = &event{evt: ul.Evt14}
	case ul.AA1: // send A-ABORT, start ARTIM
		ab := e.abort
		if ab == nil {
			ab = &pdu.Abort{Source: pdu.AbortSourceUser}
		}
		_ = a.writePDU(ab)
		a.startARTIM()
		cause := e.err
		if cause == nil {
			if e.evt == ul.Evt15 {
				cause = errors.New("aborted locally")
			} else {
				cause = fmt.Errorf("%w: %s in %s", ErrProtocol, e.evt, from)
			}
		}
		a.fail(fmt.Errorf("%w: %w", ErrAborted, cause))
	case ul.AA2: // stop ARTIM, close transport
		a.stopARTIM()
		a.finish(e.err)
	case ul.AA3: // A-ABORT received: indication, close transport
		a.finish(&AbortError{Abort: *e.pdu.(*pdu.Abort)})
	case ul.AA4: // transport closed: A-P-ABORT indication
		a.finish(fmt.Errorf("%w: connection closed by peer (%v)", ErrAborted, e.err))
	case ul.AA5: // transport closed in Sta2
		a.stopARTIM()
		a.finish(fmt.Errorf("%w: connection closed before A-ASSOCIATE-RQ (%v)", ErrAborted, e.err))
	case ul.AA6: // ignore PDU in Sta13
		a.putBuf(e.buf)
	case ul.AA7: // send A-ABORT in Sta13
		_ = a.writePDU(&pdu.Abort{Source: pdu.AbortSourceProvider, Reason: abortReasonFor(e)})
	case ul.AA8: // send A-ABORT (provider), A-P-ABORT indication, ARTIM
		a.putBuf(e.buf)
		a.providerAbort(abortReasonFor(e), protocolCause(e, from))
	}
	if e.reply != nil {
		e.reply <- reply
	}
	if a.log.Enabled(nil, slogTrace) {
		a.log.Log(nil, slogTrace, "ul", "assoc", a.Name(), "event", e.evt.String(), "from", from.String(), "action", act.String(), "to", a.state.String())
	}
}

// unexpected handles a state/event pair that Table 9-10 leaves empty.
// A local primitive the state forbids is refused; a PDU or transport event
// aborts the association (AA-8), or closes it where nothing is open.
func (a *Association) unexpected(e event) {
	a.putBuf(e.buf)
	cause := fmt.Errorf("%w: %s not allowed in %s", ErrProtocol, e.evt, a.state)
	if e.reply != nil {
		// Once the association has ended for the service user (done is
		// closed, the owner waiting in Sta13), a primitive gets the end
		// error, as it does when it finds done closed before the owner
		// takes it; which of the two happened is chance
		// (TestRegressionPrimitiveAfterAbort).
		select {
		case <-a.done:
			cause = errOr(a.endErr, ErrClosed)
		default:
		}
		e.reply <- cause
		return
	}
	switch a.state {
	case ul.Sta1, ul.Sta4, ul.Sta13:
		a.finish(cause)
	default:
		a.providerAbort(pdu.AbortUnexpectedPDU, cause)
	}
}

func abortReasonFor(e event) byte {
	if e.evt == ul.Evt19 {
		if errors.Is(e.err, pdu.ErrUnknownType) {
			return pdu.AbortUnrecognizedPDU
		}
		return pdu.AbortInvalidParamValue
	}
	return pdu.AbortUnexpectedPDU
}

func protocolCause(e event, from ul.State) error {
	if e.err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, e.err)
	}
	return fmt.Errorf("%w: unexpected %s in %s", ErrProtocol, e.evt, from)
}

// providerAbort is AA-8: send A-ABORT (service-provider source), issue the
// A-P-ABORT indication, start ARTIM and wait in Sta13 for the close.
func (a *Association) providerAbort(reason byte, cause error) {
	_ = a.writePDU(&pdu.Abort{Source: pdu.AbortSourceProvider, Reason: reason})
	a.state = ul.Sta13
	a.startARTIM()
	a.fail(fmt.Errorf("%w: %w", ErrAborted, cause))
}

// indicate passes an indication to the service user. While the user is busy
// it keeps answering the user's primitives (a response being sent before the
// next request is read) but reads no PDU: the reader, and so the socket, is
// held back. That is the flow control.
func (a *Association) indicate(ind indication) {
	for {
		select {
		case a.indications <- ind:
			return
		case e := <-a.prims:
			a.step(e)
			if a.state == ul.Sta1 || a.state == ul.Sta13 {
				a.putBuf(ind.buf)
				return
			}
		case <-a.artim.C:
			a.artimExpired()
			if a.state == ul.Sta1 {
				a.putBuf(ind.buf)
				return
			}
		}
	}
}

// established signals the end of establishment to Dial or Serve, once.
func (a *Association) established(err error) {
	if !a.estabSent {
		a.estabSent = true
		a.estab <- err
	}
}

// fail records why the association ends (the first reason wins), wakes the
// service user and ends establishment if it was under way.
func (a *Association) fail(err error) {
	if a.endErr == nil && !a.releaseDone {
		a.endErr = err
	}
	a.established(errOr(a.endErr, ErrClosed))
	a.closeOnce.Do(func() { close(a.done) })
}

// finish closes the transport connection and ends the machine (Sta1). err
// is nil after an orderly release.
func (a *Association) finish(err error) {
	a.state = ul.Sta1
	_ = a.conn.Close()
	if err == nil && !a.releaseDone {
		err = ErrClosed
	}
	a.fail(err)
}

func errOr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}
