package dimse

import (
	"strings"
	"testing"
)

// TestStatusTable checks every status constant against the code, category
// and meaning PS3.7 Annex C (general statuses) and PS3.4 (B.2.3 C-STORE,
// C.4.1.1.4 C-FIND, C.4.2.1.5 C-MOVE, C.4.3.1.4 C-GET) give it, transcribed
// here independently of status.go, and that StatusName names it by that
// meaning.
func TestStatusTable(t *testing.T) {
	for _, c := range []struct {
		name     string
		got      uint16
		code     uint16
		category Category
		meaning  string // words StatusName must contain (lower case)
	}{
		{"Success", StatusSuccess, 0x0000, CategorySuccess, "success"},
		{"Cancel", StatusCancel, 0xFE00, CategoryCancel, "cancel"},
		{"Pending", StatusPending, 0xFF00, CategoryPending, "pending"},
		{"PendingWarning", StatusPendingWarning, 0xFF01, CategoryPending, "optional keys"},
		{"WarningCoercion", StatusWarningCoercion, 0xB000, CategoryWarning, "warning"},
		{"WarningElementsDiscarded", StatusWarningElementsDiscarded, 0xB006, CategoryWarning, "elements discarded"},
		{"WarningDataSetMismatch", StatusWarningDataSetMismatch, 0xB007, CategoryWarning, "does not match"},
		{"SubOpsWarning", StatusSubOpsWarning, 0xB000, CategoryWarning, "warning"},
		{"OutOfResources", StatusOutOfResources, 0xA700, CategoryFailure, "out of resources"},
		{"OutOfResourcesMatches", StatusOutOfResourcesMatches, 0xA701, CategoryFailure, "matches"},
		{"OutOfResourcesSubOps", StatusOutOfResourcesSubOps, 0xA702, CategoryFailure, "sub-operations"},
		{"MoveDestinationUnknown", StatusMoveDestinationUnknown, 0xA801, CategoryFailure, "destination unknown"},
		{"DataSetMismatch", StatusDataSetMismatch, 0xA900, CategoryFailure, "does not match"},
		{"CannotUnderstand", StatusCannotUnderstand, 0xC000, CategoryFailure, "cannot understand"},
		{"UnableToProcess", StatusUnableToProcess, 0xC001, CategoryFailure, "unable to process"},
		{"DuplicateInvocation", StatusDuplicateInvocation, 0x0210, CategoryFailure, "duplicate invocation"},
		{"InvalidArgument", StatusInvalidArgument, 0x0115, CategoryFailure, "invalid argument"},
		{"InvalidAttributeValue", StatusInvalidAttributeValue, 0x0106, CategoryFailure, "invalid attribute value"},
		{"MistypedArgument", StatusMistypedArgument, 0x0212, CategoryFailure, "mistyped argument"},
		{"NoSuchSOPClass", StatusNoSuchSOPClass, 0x0118, CategoryFailure, "no such sop class"},
		{"ProcessingFailure", StatusProcessingFailure, 0x0110, CategoryFailure, "processing failure"},
		{"ResourceLimitation", StatusResourceLimitation, 0x0213, CategoryFailure, "resource limitation"},
		{"UnrecognizedOperation", StatusUnrecognizedOperation, 0x0211, CategoryFailure, "unrecognized operation"},
		{"NotAuthorized", StatusNotAuthorized, 0x0124, CategoryFailure, "not authorized"},
		{"SOPClassNotSupported", StatusSOPClassNotSupported, 0x0122, CategoryFailure, "sop class not supported"},
		{"ClassInstanceConflict", StatusClassInstanceConflict, 0x0119, CategoryFailure, "class-instance conflict"},
		{"DuplicateSOPInstance", StatusDuplicateSOPInstance, 0x0111, CategoryFailure, "duplicate sop instance"},
		{"InvalidSOPInstance", StatusInvalidSOPInstance, 0x0117, CategoryFailure, "invalid sop instance"},
		{"UnexpectedFailure", StatusUnexpectedFailure, 0x0110, CategoryFailure, "processing failure"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.code {
				t.Errorf("Status%s = %04X, PS3.7/PS3.4 give %04X", c.name, c.got, c.code)
			}
			if cat := CategoryOf(c.code); cat != c.category {
				t.Errorf("CategoryOf(%04X) = %v, want %v", c.code, cat, c.category)
			}
			if n := strings.ToLower(StatusName(c.code)); !strings.Contains(n, c.meaning) {
				t.Errorf("StatusName(%04X) = %q, want it to say %q", c.code, StatusName(c.code), c.meaning)
			}
		})
	}
	// The PS3.7 C.1 ranges: Axxx and Cxxx are failures, Bxxx warnings.
	for _, c := range []uint16{0xA7FF, 0xA9FF, 0xC0FF, 0xCFFF} {
		if CategoryOf(c) != CategoryFailure {
			t.Errorf("CategoryOf(%04X) = %v, want Failure", c, CategoryOf(c))
		}
	}
	if CategoryOf(0xB123) != CategoryWarning {
		t.Errorf("CategoryOf(B123) = %v, want Warning", CategoryOf(0xB123))
	}
}
