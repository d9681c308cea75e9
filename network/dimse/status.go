package dimse

import (
	"errors"
	"fmt"
)

// Status codes used by Ward (PS3.7 Annex C, PS3.4).
const (
	StatusSuccess                  uint16 = 0x0000
	StatusCancel                   uint16 = 0xFE00
	StatusPending                  uint16 = 0xFF00
	StatusPendingWarning           uint16 = 0xFF01
	StatusWarningCoercion          uint16 = 0xB000
	StatusWarningElementsDiscarded uint16 = 0xB006 // C-STORE (PS3.4 B.2.3)
	StatusWarningDataSetMismatch   uint16 = 0xB007 // C-STORE (PS3.4 B.2.3)
	StatusSubOpsWarning            uint16 = 0xB000

	StatusOutOfResources         uint16 = 0xA700 // C-STORE: refused, out of resources
	StatusOutOfResourcesMatches  uint16 = 0xA701 // C-MOVE/C-GET: unable to calculate number of matches
	StatusOutOfResourcesSubOps   uint16 = 0xA702 // C-MOVE/C-GET: unable to perform sub-operations
	StatusMoveDestinationUnknown uint16 = 0xA801
	StatusDataSetMismatch        uint16 = 0xA900 // identifier does not match SOP class / data set does not match
	StatusCannotUnderstand       uint16 = 0xC000
	StatusUnableToProcess        uint16 = 0xC001
	StatusDuplicateInvocation    uint16 = 0x0210
	StatusInvalidArgument        uint16 = 0x0115
	StatusInvalidAttributeValue  uint16 = 0x0106
	StatusMistypedArgument       uint16 = 0x0212
	StatusNoSuchSOPClass         uint16 = 0x0118
	StatusProcessingFailure      uint16 = 0x0110
	StatusResourceLimitation     uint16 = 0x0213
	StatusUnrecognizedOperation  uint16 = 0x0211
	StatusNotAuthorized          uint16 = 0x0124
	StatusSOPClassNotSupported   uint16 = 0x0122
	StatusClassInstanceConflict  uint16 = 0x0119
	StatusDuplicateSOPInstance   uint16 = 0x0111
	StatusInvalidSOPInstance     uint16 = 0x0117 // the SOP Instance UID breaks the UID construction rules
	StatusUnexpectedFailure      uint16 = 0x0110
)

// Category is the kind of a status (PS3.7 C.1).
type Category int

// The categories.
const (
	CategorySuccess Category = iota
	CategoryWarning
	CategoryFailure
	CategoryCancel
	CategoryPending
)

func (c Category) String() string {
	return [...]string{"Success", "Warning", "Failure", "Cancel", "Pending"}[c]
}

// CategoryOf classifies a status code.
func CategoryOf(s uint16) Category {
	switch {
	case s == 0x0000:
		return CategorySuccess
	case s == 0xFE00:
		return CategoryCancel
	case s == 0xFF00 || s == 0xFF01:
		return CategoryPending
	case s == 0x0001 || s&0xF000 == 0xB000 || s == 0x0107 || s == 0x0116:
		return CategoryWarning
	}
	return CategoryFailure
}

// StatusName gives a short name for well-known statuses.
func StatusName(s uint16) string {
	switch s {
	case StatusSuccess:
		return "Success"
	case StatusCancel:
		return "Cancel"
	case StatusPending:
		return "Pending"
	case StatusPendingWarning:
		return "Pending (optional keys not supported)"
	case StatusWarningCoercion:
		return "Warning"
	case StatusWarningElementsDiscarded:
		return "Warning: elements discarded"
	case StatusWarningDataSetMismatch:
		return "Warning: data set does not match SOP class"
	case StatusOutOfResources:
		return "Refused: out of resources"
	case StatusOutOfResourcesMatches:
		return "Refused: out of resources (matches)"
	case StatusOutOfResourcesSubOps:
		return "Refused: out of resources (sub-operations)"
	case StatusMoveDestinationUnknown:
		return "Refused: move destination unknown"
	case StatusDataSetMismatch:
		return "Error: data set does not match SOP class"
	case StatusCannotUnderstand:
		return "Error: cannot understand"
	case StatusUnableToProcess:
		return "Error: unable to process"
	case StatusProcessingFailure:
		return "Processing failure"
	case StatusDuplicateSOPInstance:
		return "Duplicate SOP instance"
	case StatusInvalidSOPInstance:
		return "Invalid SOP instance"
	case StatusInvalidAttributeValue:
		return "Invalid attribute value"
	case StatusInvalidArgument:
		return "Invalid argument value"
	case StatusNoSuchSOPClass:
		return "No such SOP class"
	case StatusClassInstanceConflict:
		return "Class-instance conflict"
	case StatusSOPClassNotSupported:
		return "SOP class not supported"
	case StatusNotAuthorized:
		return "Not authorized"
	case StatusDuplicateInvocation:
		return "Duplicate invocation"
	case StatusUnrecognizedOperation:
		return "Unrecognized operation"
	case StatusMistypedArgument:
		return "Mistyped argument"
	case StatusResourceLimitation:
		return "Resource limitation"
	}
	return CategoryOf(s).String()
}

// StatusError is a DIMSE failure or warning that a handler returns; the
// dispatcher turns it into the response status, with the comment as Error
// Comment (0000,0902) and Offending as Offending Element (0000,0901).
type StatusError struct {
	Status    uint16
	Comment   string
	Offending []uint32
	Err       error // optional cause, for logs and errors.Is
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("dimse status 0x%04X (%s)", e.Status, StatusName(e.Status))
	if e.Comment != "" {
		msg += ": " + e.Comment
	}
	return msg
}

func (e *StatusError) Unwrap() error { return e.Err }

// Errorf returns a *StatusError with a formatted comment.
func Errorf(status uint16, format string, args ...any) *StatusError {
	err := fmt.Errorf(format, args...)
	return &StatusError{Status: status, Comment: err.Error(), Err: errors.Unwrap(err)}
}

// AsStatus maps any handler error to a status and comment. A *StatusError
// keeps its own; anything else is fallback with the error text as comment.
func AsStatus(err error, fallback uint16) *StatusError {
	if err == nil {
		return &StatusError{Status: StatusSuccess}
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se
	}
	return &StatusError{Status: fallback, Comment: err.Error(), Err: err}
}
