package archive

import (
	"context"
	"io"

	"github.com/ward-pacs/ward/dicom"
)

// The archive's transport-neutral API. Every front end (DIMSE now,
// DICOMweb later) turns its protocol into these calls, with the principal
// in the context (WithPrincipal), and maps the domain errors (errors.go) to
// its own statuses:
//
//	Echo(ctx) error
//	Store(ctx, *StoreRequest) (*Stored, error)
//	Query(ctx, *Query, emit func(Match) error) error
//	Retrieve(ctx, *RetrieveRequest, each func(*Instance) error) error
//	Destination(ctx, aeTitle) (addr, error)
//	DeleteStudy, ExportStudy (admin.go), Verify (verify.go)
//
// Service is the part a front end serves requestors with; *Archive
// implements it, and wrappers (authorization, audit) implement it around
// an *Archive.
type Service interface {
	Echo(ctx context.Context) error
	Store(ctx context.Context, r *StoreRequest) (*Stored, error)
	Query(ctx context.Context, q *Query, emit func(Match) error) error
	Retrieve(ctx context.Context, r *RetrieveRequest, each func(*Instance) error) error
	Destination(ctx context.Context, aeTitle string) (string, error)
}

var _ Service = (*Archive)(nil)

// Echo answers a verification request (C-ECHO): the archive is up.
func (ar *Archive) Echo(ctx context.Context) error { return nil }

// Origin is where a request came from on the network.
type Origin struct {
	// AETitle is the requestor's (calling) AE title; "" off DIMSE.
	AETitle string
	// CalledAETitle is the AE title the requestor called Ward by; "" off
	// DIMSE.
	CalledAETitle string
	// Addr is the requestor's address (host:port).
	Addr string
	// Conn names the connection in logs (an association's
	// CALLING->CALLED(n)).
	Conn string
}

// StoreRequest is one object to store. Data streams the data set (without
// a Part 10 header) in TransferSyntaxUID; Store reads it to EOF on success.
type StoreRequest struct {
	Origin                                         Origin
	SOPClassUID, SOPInstanceUID, TransferSyntaxUID string
	Data                                           io.Reader
	// ExpectStudy, when set, is the Study Instance UID the request named
	// (STOW-RS to /studies/{study}): an object of another study is
	// refused with ErrAttributeMismatch on StudyInstanceUID before it is
	// committed.
	ExpectStudy string
}

// Stored is what Store learned of the object it stored, for the audit
// trail.
type Stored struct {
	StudyInstanceUID, PatientID string
	// SeriesInstanceUID of the stored object (for the front end's
	// answer, e.g. STOW-RS's Retrieve URL).
	SeriesInstanceUID string
	// Replaced: the object replaced a stored one with the same SOP
	// Instance UID.
	Replaced bool
}

// Model is a query/retrieve information model (PS3.4 C.6).
type Model int

// The models.
const (
	StudyRoot Model = iota + 1
	PatientRoot
)

// Query is one hierarchical query, the model C-FIND and QIDO-RS share.
// Identifier holds, as in PS3.4 C.2.2, the Query/Retrieve Level
// (0008,0052), the matching keys (attributes with a value) and the return
// keys (every attribute, matching or not, comes back in each match);
// QIDO-RS builds it from its query parameters and includefield. The
// matching rules are PS3.4 C.2.2.2 for both front ends.
type Query struct {
	Model      Model
	Identifier *dicom.DataSet
	// Limit caps the matches below the principal's and the archive's cap
	// (0: theirs).
	Limit int
	// Offset skips that many matches first (QIDO-RS offset), in the
	// index's stable order; the cap counts the matches after them.
	Offset int
	// KeysAboveLevel lets keys of the levels above the query level match
	// with every kind (QIDO-RS: a search for all series may name the
	// patient); C-FIND's hierarchical model allows only their unique keys,
	// single-valued.
	KeysAboveLevel bool
	// RetrieveAETitle is returned as Retrieve AE Title (0008,0054) when
	// Archive.AETitle is "" (DIMSE: the title the requestor called).
	RetrieveAETitle string
}

// Match is one query result.
type Match struct {
	// DataSet holds the request's attributes with this match's values.
	DataSet *dicom.DataSet
	// KeysIgnored: matching keys the archive cannot apply were ignored
	// (PS3.4 C.4.1.2.3), so matches may be broader than asked (DIMSE
	// answers Pending FF01).
	KeysIgnored bool
}

// RetrieveRequest names objects to retrieve by the unique keys of its
// level (PS3.4 C.4.2.2.1).
type RetrieveRequest struct {
	Model      Model
	Identifier *dicom.DataSet
	// Destination is the AE title a C-MOVE sends to; "" when the objects
	// go back to the requestor (C-GET, WADO).
	Destination string
	// DestinationAddr is the address Destination was resolved to by the
	// front end (for the audit trail: the one it will call), "" if none.
	DestinationAddr string
	// Metadata: the front end wants each instance's metadata
	// (Instance.Metadata) rather than its bytes (WADO-RS metadata). The
	// audit trail records it as Instances Accessed, not Transferred.
	Metadata bool
}

// Instance is one stored object a retrieve delivers.
type Instance struct {
	SOPClassUID, SOPInstanceUID string
	// TransferSyntaxUID is the syntax the object is stored in.
	TransferSyntaxUID string
	// StudyInstanceUID and PatientID, for the audit trail.
	StudyInstanceUID, PatientID string
	// SeriesInstanceUID is the instance's series (for the URLs a web
	// front end builds).
	SeriesInstanceUID string
	// Size is the stored object's size in bytes, 0 if unknown.
	Size int64
	// Open returns the data set (after the Part 10 header) in
	// TransferSyntaxUID.
	Open func(ctx context.Context) (io.ReadCloser, error)
	// Metadata, set when the request asked for it, returns the instance's
	// attributes in the DICOM JSON Model (PS3.18 F.2): one JSON object.
	// Values of binary VRs longer than dicom.DefaultBulkThreshold, pixel
	// data and encapsulated fragments are given as BulkDataURIs made of
	// MetadataBulkPrefix, '/' and the element's path (dicom.FormatBulkPath),
	// for the front end to replace the prefix with its own URL. It comes
	// from the index when kept there (store.MetadataKeeper), else from the
	// object, and is then kept for the next time.
	Metadata func(ctx context.Context) ([]byte, error)
	// Delivered, when not nil, is told how delivering this instance went:
	// nil when the requestor (or the C-MOVE destination) took it,
	// ErrNotAttempted when the retrieve ended before trying, else why it
	// failed. Wrappers set it (the audit trail counts what was sent); a
	// front end calls it once for every instance it was given, when it
	// knows (inside each while it streams, or after Retrieve returned).
	// The transfer's record waits for every report of a retrieve that
	// returned nil; after a failed one, it counts those made by then.
	Delivered func(err error)
	// Deidentified, when set, is the De-identification Method the object
	// is given under (the principal's profile): its UIDs are the remapped
	// ones, StudyInstanceUID and PatientID still the originals.
	Deidentified string
}

// RefusalOp is the operation a refused request asked for.
type RefusalOp int

// The operations a front end may refuse before they reach the Service.
const (
	RefusedStore RefusalOp = iota + 1
	RefusedQuery
	RefusedRetrieve
)

// Refusal is a request a front end refused before it reached the Service
// (malformed, or not for the service its connection was set up for), as
// far as it could be read. The audit trail records every refusal: a
// front end tells a Service that is a Refuser of these (the principal,
// origin and session in the context, as for the Service's calls).
type Refusal struct {
	Op RefusalOp
	// SOPClassUID is the class the request named (the stored object's,
	// or the query/retrieve model's); may be empty or invalid.
	SOPClassUID string
	// Identifier is a query's or retrieve's identifier, nil when it was
	// not decoded.
	Identifier *dicom.DataSet
	// Destination is a C-MOVE's destination ("" otherwise).
	Destination string
	// Comment says why it was refused.
	Comment string
}

// Refuser is told of the requests a front end refused before calling the
// Service. Refused must not block (it runs on the connection's
// goroutine).
type Refuser interface {
	Refused(ctx context.Context, r *Refusal)
}
