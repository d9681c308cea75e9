package server

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
)

// audited is the archive's service with the audit trail's records of what
// requestors do (PS3.15 A.5), made once for every front end from what the
// service sees: the principal and the origin in the context
// (archive.PrincipalFrom, archive.OriginFrom), the operation, its outcome
// (the domain error's kind) and the objects it touched.
//
//   - Query (110112) for each query, with its identifier (Explicit VR
//     Little Endian) and the FIND SOP class of its model; a refused one is
//     a minor failure whose description is the refusal.
//   - DICOM Instances Transferred (110104, action C) for stored instances,
//     counted per study and SOP class: one record per session (a DIMSE
//     association) when it ends, or per request without a session; a
//     minor failure when some stores failed. Instances that replaced
//     stored ones are also DICOM Instances Accessed (110103, action U),
//     one record per patient.
//   - Begin Transferring (110102) once a retrieve has found its
//     instances, and DICOM Instances Transferred (110104, action R) once
//     the front end has reported the delivery of each (Instance.Delivered),
//     counting those delivered; a minor failure when some failed. A
//     retrieve of metadata (RetrieveRequest.Metadata) is DICOM Instances
//     Accessed (110103, action R, described "metadata") instead, counted
//     the same way.
//   - Security Alert (110113) for a query or retrieve refused for want of
//     a permission, and for an unknown or forbidden move destination.
//   - Requests a front end refused before they reached the service
//     (Refused): a store counts as a failed one, a query is a failed
//     Query, a retrieve a Security Alert.
//
// Association-level events (start, refusals at negotiation, lockouts) are
// the DIMSE front end's (audit.go). Records go to rec, which must not wait
// on the disk (audit.Log queues them).
type audited struct {
	svc archive.Service
	// rec records a message.
	rec func(*audit.Message)
	// ward is Ward as a participant.
	ward func() audit.Node
}

var _ archive.Service = audited{}

// requestor is who a request acts for, as an audit participant: the
// peer's AE title (with its verified user, if any, as alternative ID) or
// the signed-in user's account name, and the origin's host.
func requestor(ctx context.Context, o archive.Origin) audit.Node {
	if c := archive.OriginFrom(ctx); c != (archive.Origin{}) {
		o = c
	}
	n := audit.Node{AETitle: strings.TrimSpace(o.AETitle), Addr: addrHost(o.Addr)}
	p := archive.PrincipalFrom(ctx)
	switch {
	case p == nil:
	case p.Kind == archive.User:
		n.AETitle, n.ID = p.Name, ""
	default:
		if n.AETitle == "" {
			n.AETitle = p.Name
		}
		n.ID = p.User
	}
	return n
}

func addrHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// refusal says why err refused an operation: the domain error's comment
// and its cause, or err itself.
func refusal(err error) string {
	var e *archive.Error
	if !errors.As(err, &e) {
		return err.Error()
	}
	why := e.Comment
	if why == "" {
		why = e.Kind.Error()
	}
	if e.Err != nil {
		why += ": " + e.Err.Error()
	}
	return why
}

// failed reports whether err is a failure the trail records as one (a
// requestor's cancellation is not).
func failed(err error) bool {
	return err != nil && !errors.Is(err, context.Canceled)
}

func (a audited) Echo(ctx context.Context) error { return a.svc.Echo(ctx) }

func (a audited) Destination(ctx context.Context, aeTitle string) (string, error) {
	addr, err := a.svc.Destination(ctx, aeTitle)
	if err != nil && archive.KindOf(err) == archive.ErrUnknownDestination {
		a.rec(audit.SecurityAlert(a.ward(), requestor(ctx, archive.Origin{}), "retrieve to "+aeTitle+" refused: "+refusal(err), time.Now()))
	}
	return addr, err
}

// storesKey keys a session's stores.
type storesKey struct{}

// stores gathers what one session (or one request) stored.
type stores struct {
	who audit.Node

	mu       sync.Mutex
	stored   map[string]*audit.Study // by study and patient
	replaced map[string]*audit.Study // stored in place of objects with the same SOP Instance UID
	failed   int
}

func (x *stores) add(r *archive.StoreRequest, st *archive.Stored, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err != nil || st == nil {
		x.failed++
		return
	}
	if x.stored == nil {
		x.stored = map[string]*audit.Study{}
	}
	addStudy(x.stored, st.StudyInstanceUID, st.PatientID, r.SOPClassUID)
	if st.Replaced {
		if x.replaced == nil {
			x.replaced = map[string]*audit.Study{}
		}
		addStudy(x.replaced, st.StudyInstanceUID, st.PatientID, r.SOPClassUID)
	}
}

// flush records what x gathered.
func (a audited) flush(x *stores) {
	x.mu.Lock()
	stored, replaced, failed := x.stored, x.replaced, x.failed
	x.stored, x.replaced, x.failed = nil, nil, 0
	x.mu.Unlock()
	if len(stored) == 0 && failed == 0 {
		return
	}
	outcome := audit.OutcomeSuccess
	if failed > 0 {
		outcome = audit.OutcomeMinorFailure
	}
	now := time.Now()
	a.rec(audit.InstancesTransferred(a.ward(), x.who, a.ward(), x.who, audit.ActionCreate, outcome, studies(stored), now))
	// Objects re-sent under a stored SOP Instance UID replaced the stored
	// ones (on_duplicate = "replace"): an update of those instances, one
	// message per patient (A.5.3.6).
	for _, group := range audit.ByPatient(studies(replaced)) {
		a.rec(audit.InstancesAccessed(a.ward(), x.who, audit.ActionUpdate, audit.OutcomeSuccess, group,
			"re-sent instances replaced the stored ones with the same SOP Instance UID", now))
	}
}

func (a audited) Store(ctx context.Context, r *archive.StoreRequest) (*archive.Stored, error) {
	st, err := a.svc.Store(ctx, r)
	a.addStore(ctx, r.Origin, func(x *stores) { x.add(r, st, err) })
	return st, err
}

// addStore adds a store's outcome to the session's stores, or records it
// alone without a session.
func (a audited) addStore(ctx context.Context, o archive.Origin, add func(*stores)) {
	v := archive.SessionFrom(ctx).Value(storesKey{}, func() (any, func()) {
		x := &stores{who: requestor(ctx, o)}
		return x, func() { a.flush(x) }
	})
	if x, ok := v.(*stores); ok {
		add(x)
		return
	}
	x := &stores{who: requestor(ctx, o)}
	add(x)
	a.flush(x)
}

var _ archive.Refuser = audited{}

// Refused records a request the front end refused before it reached the
// service, as the service's own refusal of it is recorded: a store as a
// failed one in the session's (or its own) Instances Transferred, a
// query as a failed Query (with its identifier when it was decoded), a
// retrieve as a Security Alert.
func (a audited) Refused(ctx context.Context, r *archive.Refusal) {
	why := r.Comment
	if why == "" {
		why = "refused"
	}
	switch r.Op {
	case archive.RefusedStore:
		a.addStore(ctx, archive.Origin{}, func(x *stores) {
			x.mu.Lock()
			x.failed++
			x.mu.Unlock()
		})
	case archive.RefusedQuery:
		var ident []byte
		if r.Identifier != nil {
			ident, _ = r.Identifier.Bytes(dicom.ExplicitVRLittleEndian)
		}
		m := audit.Query(a.ward(), requestor(ctx, archive.Origin{}), r.SOPClassUID, ident, dicom.ExplicitVRLittleEndian.UID, audit.OutcomeMinorFailure, time.Now())
		m.Event.Description = why
		a.rec(m)
	case archive.RefusedRetrieve:
		op := "retrieve"
		if r.Destination != "" {
			op += " to " + r.Destination
		}
		a.rec(audit.SecurityAlert(a.ward(), requestor(ctx, archive.Origin{}), op+" refused: "+why, time.Now()))
	}
}

// findClass is the FIND SOP class of a query model, the Query record's
// object.
func findClass(m archive.Model) string {
	if m == archive.PatientRoot {
		return dimse.PatientRootFind
	}
	return dimse.StudyRootFind
}

func (a audited) Query(ctx context.Context, q *archive.Query, emit func(archive.Match) error) error {
	err := a.svc.Query(ctx, q, emit)
	var ident []byte
	if q.Identifier != nil {
		ident, _ = q.Identifier.Bytes(dicom.ExplicitVRLittleEndian)
	}
	now := time.Now()
	who := requestor(ctx, archive.Origin{})
	outcome := audit.OutcomeSuccess
	if failed(err) {
		outcome = audit.OutcomeMinorFailure
	}
	m := audit.Query(a.ward(), who, findClass(q.Model), ident, dicom.ExplicitVRLittleEndian.UID, outcome, now)
	if outcome != audit.OutcomeSuccess {
		m.Event.Description = refusal(err)
	}
	a.rec(m)
	if archive.KindOf(err) == archive.ErrNotAuthorized {
		a.rec(audit.SecurityAlert(a.ward(), who, "query refused: "+refusal(err), now))
	}
	return err
}

// transfer follows one retrieve's deliveries.
type transfer struct {
	a         audited
	from, to  audit.Node
	requestor audit.Node

	mu       sync.Mutex
	found    int  // instances the archive gave the front end
	returned bool // the Retrieve call returned: found is final
	reported int  // deliveries reported
	sent     map[string]*audit.Study
	failed   int
	recorded bool
	// accessed: a metadata retrieve, recorded as Instances Accessed.
	accessed bool
}

// delivered is an instance's Delivered.
func (t *transfer) delivered(in *archive.Instance, err error) {
	t.mu.Lock()
	t.reported++
	switch {
	case err == nil:
		if t.sent == nil {
			t.sent = map[string]*audit.Study{}
		}
		addStudy(t.sent, in.StudyInstanceUID, in.PatientID, in.SOPClassUID)
		if in.Deidentified != "" {
			// Left de-identified: marked Anonymized, with the method.
			t.sent[in.StudyInstanceUID+"\x00"+in.PatientID].Deidentified = in.Deidentified
		}
	case errors.Is(err, archive.ErrNotAttempted):
	default:
		t.failed++
	}
	t.mu.Unlock()
	t.maybeRecord()
}

// maybeRecord records the transfer once every instance found has been
// reported.
func (t *transfer) maybeRecord() {
	t.mu.Lock()
	if t.recorded || !t.returned || t.reported < t.found {
		t.mu.Unlock()
		return
	}
	t.recorded = true
	sent, failed := t.sent, t.failed
	t.mu.Unlock()
	if len(sent) == 0 && failed == 0 {
		return
	}
	outcome := audit.OutcomeSuccess
	if failed > 0 {
		outcome = audit.OutcomeMinorFailure
	}
	if t.accessed {
		t.a.rec(audit.InstancesAccessed(t.a.ward(), t.requestor, audit.ActionRead, outcome, studies(sent), "metadata", time.Now()))
		return
	}
	t.a.rec(audit.InstancesTransferred(t.a.ward(), t.from, t.to, t.requestor, audit.ActionRead, outcome, studies(sent), time.Now()))
}

func (a audited) Retrieve(ctx context.Context, r *archive.RetrieveRequest, each func(*archive.Instance) error) error {
	who := requestor(ctx, archive.Origin{})
	t := &transfer{a: a, from: a.ward(), to: who, requestor: who, accessed: r.Metadata}
	if r.Destination != "" {
		t.to = audit.Node{AETitle: r.Destination}
	}
	found := map[string]*audit.Study{}
	err := a.svc.Retrieve(ctx, r, func(in *archive.Instance) error {
		addStudy(found, in.StudyInstanceUID, in.PatientID, in.SOPClassUID)
		if in.Deidentified != "" {
			// To leave de-identified: Begin Transferring says so too.
			found[in.StudyInstanceUID+"\x00"+in.PatientID].Deidentified = in.Deidentified
		}
		t.mu.Lock()
		t.found++
		t.mu.Unlock()
		inner := in.Delivered
		in.Delivered = func(err error) {
			if inner != nil {
				inner(err)
			}
			t.delivered(in, err)
		}
		return each(in)
	})
	if err != nil {
		if k := archive.KindOf(err); k == archive.ErrNotAuthorized || k == archive.ErrUnknownDestination || errors.Is(err, archive.ErrDeidentifyConflict) {
			op := "retrieve"
			if r.Destination != "" {
				op += " to " + r.Destination
			}
			a.rec(audit.SecurityAlert(a.ward(), who, op+" refused: "+refusal(err), time.Now()))
		}
	} else if !r.Metadata {
		if r.DestinationAddr != "" {
			t.to.Addr = addrHost(r.DestinationAddr)
		}
		a.rec(audit.BeginTransferring(a.ward(), t.from, t.to, who, studies(found), time.Now()))
	}
	// A failed retrieve delivers nothing more: what was delivered (a
	// front end that streams delivers as it goes) is recorded now.
	t.mu.Lock()
	t.returned = true
	if err != nil {
		t.found = t.reported
	}
	t.mu.Unlock()
	t.maybeRecord()
	return err
}
