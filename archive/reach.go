package archive

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store"
)

// The bulk-query rule: one requestor may list the whole archive (every
// patient, study, series or instance) only with the bulk-query permission.
// This file is the whole rule; the front ends (DIMSE, QIDO-RS later) only
// put the principal in the context (WithPrincipal), whose grant says
// whether it holds the permission.
//
// A query is universal (it can list the whole archive) when:
//   - below the top level of its model (PATIENT in Patient Root, STUDY in
//     Study Root), it lacks the unique key of a level above, as a single
//     value that constrains: a hierarchical query names the one patient,
//     study and series it searches in (PS3.4 C.4.1.2.1). Ward does not
//     refuse such a query outright: it is answered, like the lenient
//     relational search of other archives, to a requestor with bulk-query
//     (and to QIDO-RS, where /series and /instances without a study are
//     ordinary searches);
//   - at the top level, none of its matching keys constrains.
//
// A key constrains when some plausible value does not match it. Judged
// conservatively, a key does NOT constrain when it is:
//   - a wildcard or a single value with no literal character: only '*',
//     '?', spaces or other padding, control or invisible characters, the
//     PN delimiters '^' and '=', the value delimiter '\' ("?*", "*?*",
//     "* *", "*^*", "??????" all list everything with a value);
//   - empty-value matching (`""`): it selects what lacks a value;
//   - a list with any element that does not constrain (or no element);
//   - a date or date-time range open at the start ("-99991231"), or wider
//     than MaxDateSpan, an open end read as the end of today
//     ("00000101-", "19000101-20991231"); a bound that does not parse as
//     YYYYMMDD;
//   - a time, or a time range: a time of day alone spans every date;
//   - on an attribute with a handful of values across the archive
//     (coarse: sex, modality, SOP class, issuer of patient ID...);
//   - a sequence key none of whose item keys constrains.
// A NUL ends a value for this judgement, whatever follows it (a backend
// written in C may stop there).
//
// A retrieve (C-MOVE, C-GET) must name the objects it retrieves by the
// unique key of its level, single values or a list (JudgeRetrieve); one
// that does not is refused with ErrInvalidIdentifier (DIMSE: A900), with
// or without bulk-query.
//
// The identifier parser refuses before this what no one may send: a NUL
// inside a value, wildcards in a list, anything but a single value for a
// unique key above the level.

// MaxDateSpan is the widest date range that constrains a query on its own
// (a year, leap day included).
const MaxDateSpan = 366 * 24 * time.Hour

// Reach is the judgement of a query or retrieve: whether it reaches the
// whole archive, and why (for the requestor; no patient data).
type Reach struct {
	Universal bool
	// Why is short enough to survive in an Error Comment (64 characters
	// with a prefix of 19); Detail adds the rule.
	Why, Detail string
	// Missing is the unique key whose absence made it universal (0: none).
	Missing dicom.Tag
}

// Comment is the failure comment of a universal query for a requestor
// without bulk-query: what is needed first, as DIMSE cuts comments at 64
// characters (the log and the audit trail keep all of it).
func (r Reach) Comment() string {
	c := "bulk-query needed: " + r.Why
	if r.Detail != "" {
		c += " (" + r.Detail + ")"
	}
	return c
}

// topLevel is the top level of a model.
func topLevel(patientRoot bool) store.Level {
	if patientRoot {
		return store.LevelPatient
	}
	return store.LevelStudy
}

// JudgeQuery judges a query (C-FIND, or QIDO-RS) at now (today's date
// closes open date ranges).
func JudgeQuery(q *store.Query, now time.Time) Reach {
	top := topLevel(q.PatientRoot)
	for l := top; l < q.Level; l++ {
		u := uniqueKey[l]
		if !hasConstraining(q.Keys, u, now) {
			tag, _ := dicom.TagByKeyword(u)
			return Reach{Universal: true, Missing: tag,
				Why:    fmt.Sprintf("%s query without %s", q.Level, u),
				Detail: fmt.Sprintf("it searches every %s; a hierarchical query names the unique key of each level above, PS3.4 C.4.1.2.1", strings.ToLower(l.String()))}
		}
	}
	if q.Level > top {
		return Reach{}
	}
	for i := range q.Keys {
		if constrains(&q.Keys[i], now) {
			return Reach{}
		}
	}
	return Reach{Universal: true,
		Why:    fmt.Sprintf("no key narrows this %s query", q.Level),
		Detail: "wildcards that match any value, open or wide date ranges, times, sex or modality alone do not; name the patient or study, or narrow it"}
}

// JudgeRetrieve judges the selection of a retrieve: it must name its
// objects by the unique key of its level.
func JudgeRetrieve(q *store.Query) Reach {
	u := uniqueKey[q.Level]
	for i := range q.Keys {
		k := &q.Keys[i]
		if k.Attribute != u {
			continue
		}
		switch k.Kind {
		case store.MatchSingle:
			if literal(k.Value, "UI") {
				return Reach{}
			}
		case store.MatchList:
			if listConstrains(k.Values, "UI") {
				return Reach{}
			}
		}
	}
	tag, _ := dicom.TagByKeyword(u)
	return Reach{Universal: true, Missing: tag,
		Why: fmt.Sprintf("%s %s retrieve needs %s", article(q.Level), q.Level, describe(tag, u))}
}

func article(l store.Level) string {
	if l == store.LevelImage {
		return "an"
	}
	return "a"
}

// hasConstraining reports whether keys hold a single-value key on attribute
// kw that constrains.
func hasConstraining(keys []store.Key, kw string, now time.Time) bool {
	for i := range keys {
		if k := &keys[i]; k.Attribute == kw && k.Kind == store.MatchSingle && constrains(k, now) {
			return true
		}
	}
	return false
}

// coarse lists the attributes that hold a handful of values across an
// archive: a key on one of them alone lists a large part of it.
var coarse = map[string]bool{
	"PatientSex": true, "IssuerOfPatientID": true,
	"ModalitiesInStudy": true, "SOPClassesInStudy": true,
	"Modality": true, "BodyPartExamined": true,
	"SOPClassUID": true, "AvailableTransferSyntaxUID": true,
	"CodingSchemeDesignator": true, "ReferencedSOPClassUID": true,
}

// vrOf is the VR of a keyword ("" when unknown: judged as text).
func vrOf(kw string) string {
	if t, ok := dicom.TagByKeyword(kw); ok {
		return dicom.VROf(t)
	}
	return ""
}

// constrains reports whether some plausible value would not match k.
func constrains(k *store.Key, now time.Time) bool {
	if coarse[k.Attribute] {
		return false
	}
	vr := vrOf(k.Attribute)
	if vr == "TM" {
		return false
	}
	switch k.Kind {
	case store.MatchSingle, store.MatchWildcard:
		return literal(k.Value, vr)
	case store.MatchList:
		return listConstrains(k.Values, vr)
	case store.MatchRange:
		if vr != "DA" && vr != "DT" {
			return false
		}
		return dateRangeConstrains(k.Lo, k.Hi, now)
	case store.MatchSequence:
		for i := range k.Items {
			if k.Items[i].Kind != store.MatchSequence && constrains(&k.Items[i], now) {
				return true
			}
		}
	}
	return false // MatchEmpty, unknown kinds
}

func listConstrains(vs []string, vr string) bool {
	if len(vs) == 0 {
		return false
	}
	for _, v := range vs {
		if !literal(v, vr) {
			return false
		}
	}
	return true
}

// literal reports whether v holds a character that a matching value must
// contain: anything but wildcards, padding, delimiters, control and
// invisible characters. A NUL ends v.
func literal(v, vr string) bool {
	if i := strings.IndexByte(v, 0); i >= 0 {
		v = v[:i]
	}
	for _, r := range v {
		switch {
		case r == '*' || r == '?' || r == '\\':
		case vr == "PN" && (r == '^' || r == '='):
		case r == unicode.ReplacementChar:
		case unicode.IsSpace(r) || unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zs, unicode.Mn):
		default:
			return true
		}
	}
	return false
}

// parseDate reads the date at the start of a DA or DT value (YYYYMMDD).
func parseDate(v string) (time.Time, bool) {
	if len(v) < 8 {
		return time.Time{}, false
	}
	d, err := time.Parse("20060102", v[:8])
	return d, err == nil
}

// dateRangeConstrains: a range constrains when it has a start and spans at
// most MaxDateSpan, from the start of its first day to the end of its last
// day, an open end read as the end of today (UTC).
func dateRangeConstrains(lo, hi string, now time.Time) bool {
	from, ok := parseDate(lo)
	if !ok {
		return false
	}
	until := now.UTC().Truncate(24*time.Hour).AddDate(0, 0, 1)
	if hi != "" {
		h, ok := parseDate(hi)
		if !ok {
			return false
		}
		if h = h.AddDate(0, 0, 1); h.Before(until) {
			until = h // the end of the day hi
		}
	}
	return until.Sub(from) <= MaxDateSpan
}
