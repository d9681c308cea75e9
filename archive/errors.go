package archive

import (
	"errors"
	"fmt"

	"github.com/ward-pacs/ward/dicom"
)

// The archive's domain errors. Every error an operation returns for a
// reason the requestor can act on is an *Error whose Kind is one of these
// sentinels (errors.Is(err, ErrDuplicate) holds); anything else is a bug or
// a cancelled context. Front ends map the kinds to their own statuses in
// one table each (network/dimsearchive for DIMSE); the archive names no
// protocol status.
var (
	// ErrCannotUnderstand: the request or its data cannot be read (an
	// unknown transfer syntax, a data set that does not parse).
	ErrCannotUnderstand = errors.New("cannot understand")
	// ErrDuplicate: the SOP instance is stored already and the archive's
	// policy refuses it again (DuplicateReject).
	ErrDuplicate = errors.New("duplicate SOP instance")
	// ErrAttributeMismatch: an attribute of the data set is missing or
	// disagrees with the request that carried it; Tag names it.
	ErrAttributeMismatch = errors.New("attribute mismatch")
	// ErrInvalidAttribute: an attribute of the data set has a value the
	// archive will not store (a UID that breaks PS3.5 9.1, pixel data not
	// in the transfer syntax it is labelled with); Tag names it.
	ErrInvalidAttribute = errors.New("invalid attribute value")
	// ErrInvalidIdentifier: the keys of a query or retrieve break the
	// query model's rules (PS3.4 C.2.2, C.4); Tag names the key when one
	// is at fault.
	ErrInvalidIdentifier = errors.New("invalid identifier")
	// ErrNoSpace: the archive's disk is full or at its reserve.
	ErrNoSpace = errors.New("no space")
	// ErrStorage: the index or the blob store failed (I/O, permission).
	ErrStorage = errors.New("storage failure")
	// ErrUnavailable: the shared index or object store cannot be reached
	// for now (store.ErrUnavailable: a PostgreSQL or S3 outage); the
	// same request may succeed when tried again.
	ErrUnavailable = errors.New("store unavailable")
	// ErrNotSupported: the backend cannot serve the operation.
	ErrNotSupported = errors.New("not supported")
	// ErrNotAuthorized: the principal may not do this (a missing
	// permission, a universal query without bulk-query).
	ErrNotAuthorized = errors.New("not authorized")
	// ErrTooManyResults: a query matched more than the cap; the matches up
	// to the cap were delivered.
	ErrTooManyResults = errors.New("too many results")
	// ErrUnknownDestination: a retrieve's destination is not a known peer.
	ErrUnknownDestination = errors.New("move destination unknown")
	// ErrAuditUnavailable: the audit trail cannot record the operation,
	// so it is refused.
	ErrAuditUnavailable = errors.New("audit trail unavailable")
	// ErrProcessing: the operation failed for a reason of the archive's
	// own that fits no other kind.
	ErrProcessing = errors.New("processing failure")
)

// Kinds lists every domain error, for the front ends' tables and their
// tests.
var Kinds = []error{
	ErrCannotUnderstand, ErrDuplicate, ErrAttributeMismatch, ErrInvalidAttribute,
	ErrInvalidIdentifier, ErrNoSpace, ErrStorage, ErrUnavailable, ErrNotSupported, ErrNotAuthorized,
	ErrTooManyResults, ErrUnknownDestination, ErrAuditUnavailable, ErrProcessing,
}

// Error is a domain error: its Kind (one of the sentinels above), a
// comment a person can act on (short: DIMSE keeps 64 characters; no
// patient data), the attribute at fault if any, and the cause.
type Error struct {
	Kind    error
	Comment string
	// Tag is the attribute at fault (0: none).
	Tag dicom.Tag
	// Err is the cause, for logs and errors.Is; not shown to requestors.
	Err error
}

func (e *Error) Error() string {
	msg := e.Kind.Error()
	if e.Comment != "" {
		msg += ": " + e.Comment
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is makes errors.Is(err, e.Kind) hold.
func (e *Error) Is(target error) bool { return target == e.Kind }

func (e *Error) Unwrap() error { return e.Err }

// Fail returns a domain error of kind with a comment.
func Fail(kind error, comment string) *Error { return &Error{Kind: kind, Comment: comment} }

// Failf returns a domain error of kind with a formatted comment; a %w
// operand becomes its cause.
func Failf(kind error, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Kind: kind, Comment: err.Error(), Err: errors.Unwrap(err)}
}

// attrError is a domain error of kind about the attribute t.
func attrError(kind error, t dicom.Tag, comment string) *Error {
	return &Error{Kind: kind, Comment: comment, Tag: t}
}

// KindOf returns the domain error kind of err, nil when err is none.
func KindOf(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	for _, k := range Kinds {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
