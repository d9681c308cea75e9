package dimsearchive

import (
	"errors"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/network/dimse"
)

// Op is the DIMSE service an archive error is answered in: the same
// domain error takes the status its service's PS3.4 section gives.
type Op int

// The operations.
const (
	OpStore    Op = iota // C-STORE (PS3.4 B.2.3)
	OpFind               // C-FIND (PS3.4 C.4.1.1.4)
	OpRetrieve           // C-MOVE, C-GET (PS3.4 C.4.2.1.5, C.4.3.1.4)
	OpEcho               // C-ECHO (PS3.7 9.3.5.2)
)

// statuses is the one table from the archive's domain errors to DIMSE
// statuses, a column per operation. Every kind in archive.Kinds has a row
// (status_test.go checks it, and each code against PS3.7 Annex C).
// ErrUnavailable (a PostgreSQL or S3 outage) is transient: A700 is the
// C-FIND status that says so (PS3.4 C.4.1.1.4, "Refused: Out of
// Resources"), and its comment says to try again.
var statuses = map[error][4]uint16{
	//                                 C-STORE, C-FIND, C-MOVE/C-GET, C-ECHO
	archive.ErrCannotUnderstand:   {dimse.StatusCannotUnderstand, dimse.StatusCannotUnderstand, dimse.StatusCannotUnderstand, dimse.StatusProcessingFailure},
	archive.ErrDuplicate:          {dimse.StatusDuplicateSOPInstance, dimse.StatusUnableToProcess, dimse.StatusUnableToProcess, dimse.StatusProcessingFailure},
	archive.ErrAttributeMismatch:  {dimse.StatusDataSetMismatch, dimse.StatusDataSetMismatch, dimse.StatusDataSetMismatch, dimse.StatusProcessingFailure},
	archive.ErrInvalidAttribute:   {dimse.StatusCannotUnderstand, dimse.StatusDataSetMismatch, dimse.StatusDataSetMismatch, dimse.StatusProcessingFailure},
	archive.ErrInvalidIdentifier:  {dimse.StatusDataSetMismatch, dimse.StatusDataSetMismatch, dimse.StatusDataSetMismatch, dimse.StatusProcessingFailure},
	archive.ErrNoSpace:            {dimse.StatusOutOfResources, dimse.StatusOutOfResources, dimse.StatusOutOfResourcesMatches, dimse.StatusProcessingFailure},
	archive.ErrStorage:            {dimse.StatusOutOfResources, dimse.StatusUnableToProcess, dimse.StatusOutOfResourcesMatches, dimse.StatusProcessingFailure},
	archive.ErrUnavailable:        {dimse.StatusOutOfResources, dimse.StatusOutOfResources, dimse.StatusOutOfResourcesMatches, dimse.StatusProcessingFailure},
	archive.ErrNotSupported:       {dimse.StatusSOPClassNotSupported, dimse.StatusUnableToProcess, dimse.StatusUnableToProcess, dimse.StatusSOPClassNotSupported},
	archive.ErrNotAuthorized:      {dimse.StatusNotAuthorized, dimse.StatusNotAuthorized, dimse.StatusNotAuthorized, dimse.StatusNotAuthorized},
	archive.ErrTooManyResults:     {dimse.StatusOutOfResources, dimse.StatusOutOfResources, dimse.StatusOutOfResourcesMatches, dimse.StatusProcessingFailure},
	archive.ErrUnknownDestination: {dimse.StatusProcessingFailure, dimse.StatusUnableToProcess, dimse.StatusMoveDestinationUnknown, dimse.StatusProcessingFailure},
	archive.ErrAuditUnavailable:   {dimse.StatusOutOfResources, dimse.StatusOutOfResources, dimse.StatusOutOfResourcesMatches, dimse.StatusProcessingFailure},
	archive.ErrProcessing:         {dimse.StatusProcessingFailure, dimse.StatusUnableToProcess, dimse.StatusUnableToProcess, dimse.StatusProcessingFailure},
}

// Status maps err, returned by the archive to a request of op, to the
// *dimse.StatusError the dispatcher answers with: the table's status, the
// error's comment as Error Comment, its attribute as Offending Element,
// its cause kept for the log. nil stays nil; an error that is not a domain
// error (a cancelled context, a bug) is returned as it is, for the
// dispatcher's own handling.
func Status(op Op, err error) error {
	if err == nil {
		return nil
	}
	var se *dimse.StatusError
	if errors.As(err, &se) {
		return err // a front end's own (the emit of a C-FIND)
	}
	var e *archive.Error
	if !errors.As(err, &e) {
		return err
	}
	row, ok := statuses[e.Kind]
	if !ok {
		row = statuses[archive.ErrProcessing]
	}
	out := &dimse.StatusError{Status: row[op], Comment: e.Comment, Err: e.Err}
	if out.Comment == "" {
		out.Comment = e.Kind.Error()
	}
	if e.Tag != 0 {
		out.Offending = []uint32{uint32(e.Tag)}
	}
	return out
}
