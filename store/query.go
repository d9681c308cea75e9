package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// ErrUnsupportedKey is returned (wrapped) by Querier methods for a matching
// key the backend cannot match on: an attribute it does not index, a key
// below the query level, or a matching kind the attribute does not allow
// (e.g. a range on a UID). The archive maps it to a failure status.
var ErrUnsupportedKey = errors.New("store: unsupported matching key")

// Level is a query/retrieve level (PS3.4 C.3).
type Level int

// The levels, top down.
const (
	LevelPatient Level = iota
	LevelStudy
	LevelSeries
	LevelImage
)

func (l Level) String() string {
	return [...]string{"PATIENT", "STUDY", "SERIES", "IMAGE"}[l]
}

// MatchKind is how one key matches (PS3.4 C.2.2.2).
type MatchKind int

// The kinds of matching.
const (
	// MatchSingle: exact value (PN: case-insensitive unless the query says
	// otherwise).
	MatchSingle MatchKind = iota
	// MatchWildcard: Value holds '*' and/or '?'. A pattern holding a NUL
	// is refused with ErrUnsupportedKey (a NUL would end it early in a
	// backend written in C, and match more than asked).
	MatchWildcard
	// MatchList: Values is a list of UIDs, any of which matches.
	MatchList
	// MatchRange: Lo and Hi bound a DA, TM or DT value; either may be empty
	// for an open range.
	MatchRange
	// MatchEmpty: the attribute must be empty or absent ("" with the
	// empty-value matching of PS3.4 C.2.2.2.1, "\"\"" on the wire).
	MatchEmpty
	// MatchSequence: sequence matching (PS3.4 C.2.2.2.6). Attribute is an
	// indexed sequence (a SequenceSpec), Level the level it is indexed at,
	// Items the matching keys of the one item of the request. A stored
	// sequence matches when any of its items matches every item key (each
	// item key with the kinds above; an attribute absent from a stored item
	// is empty). A sequence key without item keys is universal: not a key.
	MatchSequence
)

// Key is one matching key. Attribute is the DICOM keyword (e.g.
// "PatientName"); the store knows which column and level it lives at.
type Key struct {
	Attribute string
	Kind      MatchKind
	Value     string   // MatchSingle, MatchWildcard
	Values    []string // MatchList
	Lo, Hi    string   // MatchRange
	Level     Level    // MatchSequence
	Items     []Key    // MatchSequence
}

// SequenceSpec is a sequence an Index keeps (first-level items only) for
// sequence matching and to return: the sequence keyword, the level whose
// row holds it (newest instance wins, like every attribute of that level)
// and the keywords of the item attributes kept.
type SequenceSpec struct {
	Attribute string
	Level     Level
	Items     []string
}

// DefaultSequences are the sequences Ward indexes unless configured
// otherwise: where PS3.4 C.6.1.1 places each (Referenced Patient Sequence at
// patient level; Procedure Code and Referenced Study Sequence at study level;
// Request Attributes Sequence at series level, Table C.6-6). Anatomic
// Region Sequence, an image attribute, is kept at series level like Body
// Part Examined.
func DefaultSequences() []SequenceSpec {
	code := []string{"CodeValue", "CodingSchemeDesignator", "CodeMeaning"}
	ref := []string{"ReferencedSOPClassUID", "ReferencedSOPInstanceUID"}
	return []SequenceSpec{
		{Attribute: "ReferencedPatientSequence", Level: LevelPatient, Items: ref},
		{Attribute: "ProcedureCodeSequence", Level: LevelStudy, Items: code},
		{Attribute: "ReferencedStudySequence", Level: LevelStudy, Items: ref},
		{Attribute: "RequestAttributesSequence", Level: LevelSeries,
			Items: []string{"RequestedProcedureID", "ScheduledProcedureStepID", "AccessionNumber"}},
		{Attribute: "AnatomicRegionSequence", Level: LevelSeries, Items: code},
	}
}

// SequenceItem is one kept item of a sequence of an Instance: Values maps
// the kept item attributes (keywords) to their values (UTF-8); an attribute
// the item lacks is absent or "".
type SequenceItem struct {
	Attribute string // the sequence keyword, e.g. "ProcedureCodeSequence"
	Level     Level  // the level whose row holds the sequence
	Item      int    // the item's position in the sequence, from 0
	Values    map[string]string
}

// EncodeItems is the value a Match holds for a returned sequence: a JSON
// array of items, each an object of keyword -> value.
func EncodeItems(items []map[string]string) string {
	if len(items) == 0 {
		return ""
	}
	b, _ := json.Marshal(items) // maps of strings always marshal
	return string(b)
}

// DecodeItems reads a sequence value of a Match (EncodeItems); "" and "[]"
// are no items.
func DecodeItems(v string) ([]map[string]string, error) {
	if v == "" {
		return nil, nil
	}
	var items []map[string]string
	if err := json.Unmarshal([]byte(v), &items); err != nil {
		return nil, fmt.Errorf("store: sequence items: %w", err)
	}
	return items, nil
}

// SequenceIndexer is an optional capability of an Index: it stores
// Instance.Sequences, matches MatchSequence keys and returns
// Query.ReturnSequences. Fallback: Instance.Sequences are dropped; the
// archive ignores sequence matching keys (Pending Warning) and returns
// sequences empty.
type SequenceIndexer interface {
	IndexesSequences() bool
}

// Query is a hierarchical C-FIND (or the selection of a C-MOVE/C-GET).
type Query struct {
	Level Level
	// PatientRoot is true for the Patient Root information model, false for
	// Study Root (where patient attributes are study-level keys).
	PatientRoot bool
	// Keys are the matching keys (universal matches are not keys).
	Keys []Key
	// PNCaseSensitive turns off the default case-insensitive PN matching.
	PNCaseSensitive bool
	// Limit caps the number of matches returned (0: no cap).
	Limit int
	// Offset skips that many matches first (0: none), in the same stable
	// order, so that consecutive pages (Offset k*Limit) of an unchanged
	// index list every match once (QIDO-RS offset).
	Offset int
	// Return lists the keywords the caller wants in each Match; a backend
	// may leave out the attributes not listed (costly ones such as
	// ModalitiesInStudy and SOPClassesInStudy it should), but always
	// returns the unique keys of the level and the levels above. nil means
	// every attribute the backend has for the level. Matching is not
	// affected.
	Return []string
	// ReturnSequences lists the indexed sequences to return (Match holds
	// each under its keyword as EncodeItems of the stored items, every kept
	// item attribute); only those at or above the query level are returned.
	ReturnSequences []SequenceSpec
	// WithMetadata asks Querier.Instances to set Instance.Metadata, for
	// an Index that is a MetadataKeeper (others ignore it).
	WithMetadata bool
}

// Match is one query result: attribute keyword -> value (UTF-8), covering
// the attributes of the query level and the levels above it, plus the
// computed attributes (NumberOfStudyRelatedInstances, ModalitiesInStudy,
// ... as keywords, multi-valued ones joined with '\').
type Match map[string]string

// Querier is an optional capability of an Index: hierarchical queries.
// Fallback: none (an Index without it cannot serve C-FIND).
type Querier interface {
	// Query calls fn for each match, in a stable order, until fn returns an
	// error (which Query returns) or the matches are exhausted. It stops
	// early when ctx is done.
	Query(ctx context.Context, q *Query, fn func(Match) error) error
	// Instances lists the instances under the matches of q (any level),
	// for C-MOVE and C-GET.
	Instances(ctx context.Context, q *Query, fn func(*Instance) error) error
}

// KeyMatcher is an optional capability of a Querier: whether it can match
// on an attribute (keyword). The archive ignores matching keys a backend
// cannot match on, as PS3.4 allows for optional keys, and says so with
// the pending-warning status.
// Fallback: every key is passed on; one the backend cannot match on fails
// the query with ErrUnsupportedKey.
type KeyMatcher interface {
	CanMatch(attribute string) bool
}
