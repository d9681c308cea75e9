package dimse

import (
	"context"
	"errors"
	"io"

	"github.com/ward-pacs/ward/dicom"
)

// Query/Retrieve SOP classes (PS3.4 Annex C).
const (
	PatientRootFind = "1.2.840.10008.5.1.4.1.2.1.1"
	PatientRootMove = "1.2.840.10008.5.1.4.1.2.1.2"
	PatientRootGet  = "1.2.840.10008.5.1.4.1.2.1.3"
	StudyRootFind   = "1.2.840.10008.5.1.4.1.2.2.1"
	StudyRootMove   = "1.2.840.10008.5.1.4.1.2.2.2"
	StudyRootGet    = "1.2.840.10008.5.1.4.1.2.2.3"
)

// MaxIdentifierLength bounds a C-FIND/C-MOVE/C-GET identifier.
const MaxIdentifierLength = 1 << 20

// FindRequest is a C-FIND request with its decoded identifier.
type FindRequest struct {
	Request
	SOPClassUID    string
	Identifier     *dicom.DataSet
	TransferSyntax *dicom.TransferSyntax
	// PendingWarning, set by the Finder before it emits, makes the pending
	// responses carry FF01 (optional keys not supported) instead of FF00.
	PendingWarning bool
}

// Finder serves C-FIND. Find calls emit once per match; the dispatcher
// sends each as a pending response (FF00, or FF01 when the handler asks)
// and the final response when Find returns: success for nil, Cancel (FE00)
// when ctx was cancelled by a C-CANCEL, the StatusError's status otherwise.
// ctx is cancelled on C-CANCEL and when the association ends.
type Finder interface {
	Find(ctx context.Context, r *FindRequest, emit func(match *dicom.DataSet) error) error
}

// RetrieveRequest is a C-MOVE or C-GET request with its decoded identifier.
type RetrieveRequest struct {
	Request
	SOPClassUID     string
	Identifier      *dicom.DataSet
	TransferSyntax  *dicom.TransferSyntax
	MoveDestination string // C-MOVE only
	// MoveDestinationAddr is the address the dispatcher resolved
	// MoveDestination to (Retriever.Destination), before Retrieve.
	MoveDestinationAddr string
}

// Instance is one object a retrieve sends as a C-STORE sub-operation.
type Instance struct {
	SOPClassUID, SOPInstanceUID string
	// TransferSyntaxUID is the syntax the object is stored in.
	TransferSyntaxUID string
	// Size is the stored object's size in bytes, 0 if unknown. An object
	// to be converted for the peer is converted once without sending first
	// when its size is known and at most ConvertCheckLimit.
	Size int64
	// Open returns the data set bytes (after the Part 10 header) in
	// TransferSyntaxUID.
	Open func(ctx context.Context) (io.ReadCloser, error)
	// Delivered, when not nil, is told the outcome of this instance's
	// sub-operation once it is known: nil when the peer took it (success
	// or warning), else why not (ErrNotAttempted when the C-MOVE or C-GET
	// ended before trying it). The dispatcher calls it once for every
	// instance the Retriever returned.
	Delivered func(err error)
}

// ErrUnknownDestination: a C-MOVE destination that is not a known peer
// (the dispatcher answers A801).
var ErrUnknownDestination = errors.New("dimse: move destination unknown")

// ErrNotAttempted is what Instance.Delivered is told of an instance whose
// sub-operation was never tried (the C-MOVE or C-GET was cancelled or its
// association ended first).
var ErrNotAttempted = errors.New("dimse: sub-operation not attempted")

// Retriever serves C-MOVE and C-GET: it resolves the identifier to the
// instances to send; the dispatcher performs the sub-operations (over a new
// association to the destination for C-MOVE, over the same association for
// C-GET), sends the pending responses with remaining/completed/failed/
// warning counts and the final one with the failed SOP Instance UIDs, and
// honours C-CANCEL.
type Retriever interface {
	Retrieve(ctx context.Context, r *RetrieveRequest) ([]Instance, error)
	// Destination returns the address (HOST:PORT) of r's C-MOVE
	// destination (r.MoveDestination), or ErrUnknownDestination.
	Destination(ctx context.Context, r *RetrieveRequest) (string, error)
}
