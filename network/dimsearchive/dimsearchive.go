// Package dimsearchive is the archive's DIMSE front end: it serves
// C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET (network/dimse's handlers) by
// calling the transport-neutral archive.Service, with the association's
// principal in the context, and maps the archive's domain errors to DIMSE
// statuses in one table (status.go). It translates and does nothing more:
// what a PACS does, and the checks around it, are the service's.
package dimsearchive

import (
	"context"
	"errors"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
)

// Service serves the DIMSE requests of associations with an
// archive.Service.
type Service struct {
	Archive archive.Service
	// Principal returns who an association acts for (what its admission
	// decided), put in the context of every request. nil, or a nil
	// principal: the context's own is kept (none, unless the caller put
	// one there).
	Principal func(a *assoc.Association) *archive.Principal
}

var (
	_ dimse.Echoer    = (*Service)(nil)
	_ dimse.Storer    = (*Service)(nil)
	_ dimse.Finder    = (*Service)(nil)
	_ dimse.Retriever = (*Service)(nil)
)

// Handlers returns s as the handlers of every service.
func (s *Service) Handlers() dimse.Handlers {
	return dimse.Handlers{Echo: s, Store: s, Find: s, Retrieve: s}
}

// context is ctx with the association's origin and principal, for the
// service and its wrappers (the audit trail names both).
func (s *Service) context(ctx context.Context, a *assoc.Association) context.Context {
	if a == nil {
		return ctx
	}
	ctx = archive.WithOrigin(ctx, Origin(a))
	if s.Principal == nil {
		return ctx
	}
	if p := s.Principal(a); p != nil {
		return archive.WithPrincipal(ctx, p)
	}
	return ctx
}

// Origin is where an association comes from, for the archive.
func Origin(a *assoc.Association) archive.Origin {
	if a == nil {
		return archive.Origin{}
	}
	o := archive.Origin{AETitle: a.CallingAETitle(), CalledAETitle: a.CalledAETitle(), Conn: a.Name()}
	if ra := a.RemoteAddr(); ra != nil {
		o.Addr = ra.String()
	}
	return o
}

// Echo answers C-ECHO (the dispatcher checked the context).
func (s *Service) Echo(ctx context.Context, r *dimse.Request) error {
	return Status(OpEcho, s.Archive.Echo(s.context(ctx, r.Assoc)))
}

// Store serves C-STORE.
func (s *Service) Store(ctx context.Context, r *dimse.StoreRequest) error {
	_, err := s.Archive.Store(s.context(ctx, r.Assoc), &archive.StoreRequest{
		Origin:            Origin(r.Assoc),
		SOPClassUID:       r.SOPClassUID,
		SOPInstanceUID:    r.SOPInstanceUID,
		TransferSyntaxUID: r.TransferSyntaxUID,
		Data:              r.Data,
	})
	return Status(OpStore, err)
}

// model returns the query/retrieve model of a Q/R SOP class.
func model(sopClass string) (archive.Model, error) {
	switch sopClass {
	case dimse.PatientRootFind, dimse.PatientRootMove, dimse.PatientRootGet:
		return archive.PatientRoot, nil
	case dimse.StudyRootFind, dimse.StudyRootMove, dimse.StudyRootGet:
		return archive.StudyRoot, nil
	}
	return 0, &dimse.StatusError{Status: dimse.StatusSOPClassNotSupported,
		Comment: "not a Patient Root or Study Root query/retrieve SOP class"}
}

// Find serves C-FIND: each match is a pending response (FF01 when the
// archive ignored matching keys it cannot apply).
func (s *Service) Find(ctx context.Context, r *dimse.FindRequest, emit func(*dicom.DataSet) error) error {
	m, err := model(r.SOPClassUID)
	if err != nil {
		return err
	}
	q := &archive.Query{Model: m, Identifier: r.Identifier}
	if r.Assoc != nil {
		q.RetrieveAETitle = r.Assoc.CalledAETitle()
	}
	err = s.Archive.Query(s.context(ctx, r.Assoc), q, func(m archive.Match) error {
		if m.KeysIgnored {
			r.PendingWarning = true
		}
		return emit(m.DataSet)
	})
	return Status(OpFind, err)
}

// Retrieve serves C-MOVE and C-GET: the archive's instances, for the
// dispatcher's sub-operations, whose outcomes go back to each instance's
// Delivered.
func (s *Service) Retrieve(ctx context.Context, r *dimse.RetrieveRequest) ([]dimse.Instance, error) {
	m, err := model(r.SOPClassUID)
	if err != nil {
		return nil, err
	}
	rq := &archive.RetrieveRequest{Model: m, Identifier: r.Identifier, Destination: r.MoveDestination, DestinationAddr: r.MoveDestinationAddr}
	if rq.Destination == "" && r.Command != nil && r.Command.CommandField == dimse.CMoveRQ {
		rq.Destination = r.Command.MoveDestination
	}
	var out []dimse.Instance
	err = s.Archive.Retrieve(s.context(ctx, r.Assoc), rq, func(in *archive.Instance) error {
		out = append(out, dimse.Instance{
			SOPClassUID:       in.SOPClassUID,
			SOPInstanceUID:    in.SOPInstanceUID,
			TransferSyntaxUID: in.TransferSyntaxUID,
			Size:              in.Size,
			Open:              in.Open,
			Delivered:         delivered(in.Delivered),
		})
		return nil
	})
	if err != nil {
		return nil, Status(OpRetrieve, err)
	}
	return out, nil
}

// delivered passes the dispatcher's sub-operation outcomes to the
// archive's Delivered (nil: none).
func delivered(f func(error)) func(error) {
	if f == nil {
		return nil
	}
	return func(err error) {
		if errors.Is(err, dimse.ErrNotAttempted) {
			err = archive.ErrNotAttempted
		}
		f(err)
	}
}

// Destination resolves a C-MOVE destination; an unknown one is
// dimse.ErrUnknownDestination (the dispatcher answers A801).
func (s *Service) Destination(ctx context.Context, r *dimse.RetrieveRequest) (string, error) {
	addr, err := s.Archive.Destination(s.context(ctx, r.Assoc), r.MoveDestination)
	if err != nil {
		if archive.KindOf(err) == archive.ErrUnknownDestination {
			return "", unknownDestination{err}
		}
		return "", Status(OpRetrieve, err)
	}
	return addr, nil
}

// unknownDestination is the archive's ErrUnknownDestination as the
// dispatcher's dimse.ErrUnknownDestination.
type unknownDestination struct{ error }

func (u unknownDestination) Is(target error) bool { return target == dimse.ErrUnknownDestination }

func (u unknownDestination) Unwrap() error { return u.error }

var _ dimse.Refuser = (*Service)(nil)

// Refused tells the archive, if it is an archive.Refuser (the audit
// trail), of a request the dispatcher refused before it reached the
// handlers, with the association's origin, principal and session.
func (s *Service) Refused(ctx context.Context, r *dimse.Refusal) {
	rf, ok := s.Archive.(archive.Refuser)
	if !ok || r.Command == nil {
		return
	}
	x := &archive.Refusal{SOPClassUID: r.Command.AffectedSOPClassUID, Identifier: r.Identifier}
	switch r.Command.CommandField {
	case dimse.CStoreRQ:
		x.Op = archive.RefusedStore
	case dimse.CFindRQ:
		x.Op = archive.RefusedQuery
	case dimse.CMoveRQ:
		x.Op, x.Destination = archive.RefusedRetrieve, r.Command.MoveDestination
	case dimse.CGetRQ:
		x.Op = archive.RefusedRetrieve
	default:
		return
	}
	if r.Status != nil {
		x.Comment = r.Status.Comment
	}
	rf.Refused(s.context(ctx, r.Assoc), x)
}
