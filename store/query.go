package store

import (
	"context"
	"errors"
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
	// MatchWildcard: Value holds '*' and/or '?'.
	MatchWildcard
	// MatchList: Values is a list of UIDs, any of which matches.
	MatchList
	// MatchRange: Lo and Hi bound a DA, TM or DT value; either may be empty
	// for an open range.
	MatchRange
	// MatchEmpty: the attribute must be empty or absent ("" with the
	// empty-value matching of PS3.4 C.2.2.2.1, "\"\"" on the wire).
	MatchEmpty
)

// Key is one matching key. Attribute is the DICOM keyword (e.g.
// "PatientName"); the store knows which column and level it lives at.
type Key struct {
	Attribute string
	Kind      MatchKind
	Value     string   // MatchSingle, MatchWildcard
	Values    []string // MatchList
	Lo, Hi    string   // MatchRange
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
	// Return lists the keywords the caller wants in each Match. nil means
	// every attribute the backend has for the level; a backend may then
	// leave out attributes that are costly to compute and not listed
	// (ModalitiesInStudy, SOPClassesInStudy). Matching is not affected.
	Return []string
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
