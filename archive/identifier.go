package archive

import (
	"fmt"
	"strings"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store"
)

// The Query/Retrieve information models (PS3.4 C.6.1 Patient Root, C.6.2
// Study Root): which level each attribute belongs to and which attribute is
// the unique key of each level. Attributes not listed are taken to belong
// to the query level (an optional key of that level).
var qrLevel = map[string]store.Level{
	// Patient (C.6.1.1.2)
	"PatientName": store.LevelPatient, "PatientID": store.LevelPatient,
	"IssuerOfPatientID": store.LevelPatient, "PatientBirthDate": store.LevelPatient,
	"PatientBirthTime": store.LevelPatient, "PatientSex": store.LevelPatient,
	"OtherPatientIDs": store.LevelPatient, "OtherPatientIDsSequence": store.LevelPatient,
	"OtherPatientNames": store.LevelPatient, "EthnicGroup": store.LevelPatient,
	"PatientComments": store.LevelPatient, "ReferencedPatientSequence": store.LevelPatient,
	"NumberOfPatientRelatedStudies":   store.LevelPatient,
	"NumberOfPatientRelatedSeries":    store.LevelPatient,
	"NumberOfPatientRelatedInstances": store.LevelPatient,

	// Study (C.6.1.1.3)
	"StudyInstanceUID": store.LevelStudy, "StudyDate": store.LevelStudy, "StudyTime": store.LevelStudy,
	"AccessionNumber": store.LevelStudy, "StudyID": store.LevelStudy, "StudyDescription": store.LevelStudy,
	"ReferringPhysicianName": store.LevelStudy, "ModalitiesInStudy": store.LevelStudy,
	"SOPClassesInStudy": store.LevelStudy, "NameOfPhysiciansReadingStudy": store.LevelStudy,
	"AdmittingDiagnosesDescription": store.LevelStudy, "PatientAge": store.LevelStudy,
	"PatientSize": store.LevelStudy, "PatientWeight": store.LevelStudy, "Occupation": store.LevelStudy,
	"AdditionalPatientHistory": store.LevelStudy, "OtherStudyNumbers": store.LevelStudy,
	"ProcedureCodeSequence": store.LevelStudy, "AnatomicRegionsInStudyCodeSequence": store.LevelStudy,
	"ReferencedStudySequence":       store.LevelStudy,
	"NumberOfStudyRelatedSeries":    store.LevelStudy,
	"NumberOfStudyRelatedInstances": store.LevelStudy,

	// Series (C.6.1.1.4)
	"SeriesInstanceUID": store.LevelSeries, "Modality": store.LevelSeries, "SeriesNumber": store.LevelSeries,
	"SeriesDescription": store.LevelSeries, "SeriesDate": store.LevelSeries, "SeriesTime": store.LevelSeries,
	"BodyPartExamined": store.LevelSeries, "PerformedProcedureStepStartDate": store.LevelSeries,
	"PerformedProcedureStepStartTime": store.LevelSeries, "RequestAttributesSequence": store.LevelSeries,
	"AnatomicRegionSequence":         store.LevelSeries,
	"NumberOfSeriesRelatedInstances": store.LevelSeries,

	// Composite object instance (C.6.1.1.5)
	"SOPInstanceUID": store.LevelImage, "SOPClassUID": store.LevelImage, "InstanceNumber": store.LevelImage,
	"ContentDate": store.LevelImage, "ContentTime": store.LevelImage, "NumberOfFrames": store.LevelImage,
	"Rows": store.LevelImage, "Columns": store.LevelImage, "AvailableTransferSyntaxUID": store.LevelImage,
	"AlternateRepresentationSequence": store.LevelImage,
}

// uniqueKey is the unique key of each level.
var uniqueKey = [...]string{
	store.LevelPatient: "PatientID",
	store.LevelStudy:   "StudyInstanceUID",
	store.LevelSeries:  "SeriesInstanceUID",
	store.LevelImage:   "SOPInstanceUID",
}

// levelOf returns the level of an attribute in the model, for a query at
// level l. In the Study Root model patient attributes are study attributes.
func levelOf(kw string, l store.Level, patientRoot bool) store.Level {
	lv, ok := qrLevel[kw]
	if !ok {
		return l
	}
	if !patientRoot && lv == store.LevelPatient {
		return store.LevelStudy
	}
	return lv
}

// isUnique reports whether kw is the unique key of its level in the model.
// In the Study Root model PatientID is not a unique key.
func isUnique(kw string, patientRoot bool) bool {
	for l, u := range uniqueKey {
		if u == kw {
			return patientRoot || store.Level(l) != store.LevelPatient
		}
	}
	return false
}

// returnOnly lists the attributes the archive fills itself: a value in the
// request is not a matching key.
var returnOnly = map[dicom.Tag]bool{
	dicom.RetrieveAETitle:      true,
	dicom.InstanceAvailability: true,
}

// requested is one attribute of a request identifier, in the order of the
// request.
type requested struct {
	tag dicom.Tag
	kw  string
	vr  string
	seq bool
	// An indexed sequence: spec, and the item attributes of the request's
	// item (nil: every kept one, for a zero-length sequence or empty item).
	spec  *seqSpec
	items []dicom.Tag
}

// identifier is a parsed C-FIND/C-MOVE/C-GET identifier.
type identifier struct {
	level       store.Level
	patientRoot bool
	charset     []string // the request's Specific Character Set
	keys        []store.Key
	ret         []requested // every attribute of the request, in order
	// ignored lists matching keys the archive could not apply (optional
	// keys it does not support); C-FIND then answers FF01.
	ignored []string
	// above: keys of the levels above the query level match like keys of
	// the level (Query.KeysAboveLevel).
	above bool
}

// patientRoot returns whether m is the Patient Root model.
func patientRoot(m Model) (bool, error) {
	switch m {
	case PatientRoot:
		return true, nil
	case StudyRoot:
		return false, nil
	}
	return false, Fail(ErrNotSupported, "the query/retrieve model is not Patient Root or Study Root")
}

// badKey is an invalid identifier error about the key t.
func badKey(t dicom.Tag, format string, args ...any) *Error {
	return attrError(ErrInvalidIdentifier, t, fmt.Sprintf(format, args...))
}

func describe(t dicom.Tag, kw string) string {
	if kw == "" {
		return t.String()
	}
	return t.String() + " " + kw
}

// parseLevel reads the Query/Retrieve Level.
func parseLevel(ds *dicom.DataSet, patientRoot bool) (store.Level, error) {
	if ds == nil {
		return 0, Fail(ErrInvalidIdentifier, "no identifier")
	}
	v := strings.TrimSpace(ds.String(dicom.QueryRetrieveLevel))
	var l store.Level
	switch v {
	case "PATIENT":
		l = store.LevelPatient
	case "STUDY":
		l = store.LevelStudy
	case "SERIES":
		l = store.LevelSeries
	case "IMAGE":
		l = store.LevelImage
	case "":
		return 0, badKey(dicom.QueryRetrieveLevel, "the identifier has no Query/Retrieve Level (0008,0052)")
	default:
		return 0, badKey(dicom.QueryRetrieveLevel, "unknown Query/Retrieve Level %q", v)
	}
	if l == store.LevelPatient && !patientRoot {
		return 0, badKey(dicom.QueryRetrieveLevel, "the Study Root model has no PATIENT level")
	}
	return l, nil
}

// skipped reports attributes of an identifier that are neither keys nor
// returned: group lengths, File Meta and command groups, private tags.
func skipped(t dicom.Tag) bool {
	return t.Element() == 0 || t.Group() <= 2 || t.IsPrivate()
}

// parseFind parses a C-FIND identifier (hierarchical query, PS3.4 C.4.1.2.1
// and C.4.1.3.1): keys above the query level must be unique keys with a
// single value, keys below it are refused (that would be a relational query,
// which Ward does not negotiate), keys at the level may use every matching
// kind. Empty values are return keys wherever they are.
//
// With above (QIDO-RS), keys of the levels above the query level match
// with every kind too, as PS3.18 10.6.1.2 allows a search for all series
// or instances to name study (and series) attributes.
func parseFind(ds *dicom.DataSet, patientRoot, above bool, supported func(kw string) bool, seqs *seqIndex) (*identifier, error) {
	l, err := parseLevel(ds, patientRoot)
	if err != nil {
		return nil, err
	}
	id := &identifier{level: l, patientRoot: patientRoot, above: above, charset: splitCharset(ds.String(dicom.SpecificCharacterSet))}
	for _, e := range ds.Elements {
		t := e.Tag
		if skipped(t) || t == dicom.QueryRetrieveLevel || t == dicom.SpecificCharacterSet {
			continue
		}
		kw := dicom.Keyword(t)
		r := requested{tag: t, kw: kw, vr: e.VR, seq: e.IsSequence() || e.VR == "SQ"}
		id.ret = append(id.ret, r)
		if returnOnly[t] || t == dicom.TimezoneOffsetFromUTC {
			// Timezone Offset From UTC would qualify DA/TM/DT matching;
			// Ward compares the values as stored and ignores it.
			continue
		}
		if r.seq {
			sp := seqs.spec(t)
			if sp == nil {
				if !emptySequence(e) {
					id.ignored = append(id.ignored, describe(t, kw))
				}
				continue
			}
			id.ret[len(id.ret)-1].spec = sp
			k, items, err := parseSequenceKey(id, e, sp, l, patientRoot)
			if err != nil {
				return nil, err
			}
			id.ret[len(id.ret)-1].items = items
			if k != nil {
				id.keys = append(id.keys, *k)
			}
			continue
		}
		raw := ds.String(t)
		if raw == "" {
			continue // return key
		}
		lv := levelOf(kw, l, patientRoot)
		switch {
		case lv > l:
			return nil, badKey(t, "relational queries are not supported: %s is a key below the %s level", describe(t, kw), l)
		case lv < l && !isUnique(kw, patientRoot) && !id.above:
			return nil, badKey(t, "hierarchical query: %s is above the %s level and not a unique key", describe(t, kw), l)
		}
		k, err := parseKey(t, kw, e.VR, raw)
		if err != nil {
			return nil, err
		}
		if k == nil {
			continue // universal
		}
		if lv < l && k.Kind != store.MatchSingle && !id.above {
			return nil, badKey(t, "hierarchical query: the unique key %s above the %s level needs a single value", describe(t, kw), l)
		}
		if kw == "" || !supported(kw) {
			id.ignored = append(id.ignored, describe(t, kw))
			continue
		}
		id.keys = append(id.keys, *k)
	}
	return id, nil
}

// parseSequenceKey parses an indexed sequence of a C-FIND identifier
// (PS3.4 C.2.2.2.6): its one item holds the item's matching and return
// keys, each parsed as a top-level key of its VR, decoded with the
// request's Specific Character Set. It returns the sequence key (nil when
// every item key is universal: the sequence is a return key) and the
// requested item attributes (nil: all). Item attributes Ward does not keep
// are ignored as matching keys, with the pending warning.
func parseSequenceKey(id *identifier, e *dicom.Element, sp *seqSpec, l store.Level, patientRoot bool) (*store.Key, []dicom.Tag, error) {
	t, kw := e.Tag, sp.Attribute
	if len(e.Items) == 0 {
		return nil, nil, nil
	}
	if len(e.Items) > 1 {
		return nil, nil, badKey(t, "the sequence matching key %s holds %d items; it must hold one", describe(t, kw), len(e.Items))
	}
	it := e.Items[0]
	var items []dicom.Tag
	var keys []store.Key
	for _, ie := range it.Elements {
		if skipped(ie.Tag) || ie.Tag == dicom.SpecificCharacterSet {
			continue
		}
		items = append(items, ie.Tag)
		ikw := dicom.Keyword(ie.Tag)
		if ie.IsSequence() || ie.VR == "SQ" {
			if !emptySequence(ie) {
				id.ignored = append(id.ignored, describe(t, kw)+" > "+describe(ie.Tag, ikw))
			}
			continue
		}
		raw := it.StringIn(id.charset, ie.Tag)
		if raw == "" {
			continue
		}
		vr := ie.VR
		if vr == "" || vr == "UN" {
			vr = dicom.VROf(ie.Tag)
		}
		k, err := parseKey(ie.Tag, ikw, vr, raw)
		if err != nil {
			return nil, nil, err
		}
		if k == nil {
			continue
		}
		if _, kept := sp.want[ie.Tag]; !kept {
			id.ignored = append(id.ignored, describe(t, kw)+" > "+describe(ie.Tag, ikw))
			continue
		}
		keys = append(keys, *k)
	}
	if len(items) == 0 {
		items = nil
	}
	if len(keys) == 0 {
		return nil, items, nil
	}
	lv := levelOf(kw, l, patientRoot)
	switch {
	case lv > l:
		return nil, nil, badKey(t, "relational queries are not supported: %s is a key below the %s level", describe(t, kw), l)
	case lv < l && !id.above:
		return nil, nil, badKey(t, "hierarchical query: %s is above the %s level and not a unique key", describe(t, kw), l)
	}
	return &store.Key{Attribute: kw, Kind: store.MatchSequence, Level: sp.Level, Items: keys}, items, nil
}

func emptySequence(e *dicom.Element) bool {
	for _, it := range e.Items {
		for _, ie := range it.Elements {
			if len(ie.Value) > 0 || len(ie.Items) > 0 {
				return false
			}
		}
	}
	return true
}

func splitCharset(v string) []string {
	if v == "" {
		return nil
	}
	cs := strings.Split(v, `\`)
	for i := range cs {
		cs[i] = strings.TrimSpace(cs[i])
	}
	return cs
}

// parseKey turns one non-empty identifier value into a matching key
// (PS3.4 C.2.2.2); nil means universal matching.
//
//   - `""`: empty-value matching (C.2.2.2.1)
//   - '\' in a UI or CS value: list matching (any value matches; no
//     wildcards in it)
//   - a NUL inside the value: refused
//   - '-' in a DA, TM or DT value: range matching, open at either end; a DT
//     with a UTC offset in a range is refused (ambiguous '-')
//   - '*' or '?': wildcard matching (not for DA, TM, DT, UI, numbers); a
//     value of only '*' is universal matching
//   - anything else: single value matching
func parseKey(t dicom.Tag, kw, vr, v string) (*store.Key, error) {
	k := &store.Key{Attribute: kw}
	if kw == "" {
		k.Attribute = t.String()
	}
	if strings.ContainsRune(v, 0) {
		// PS3.5 6.2: NUL pads UIDs at the end, nothing more; inside a
		// value it would cut a pattern short in a C backend.
		return nil, badKey(t, "%s holds a NUL character", describe(t, kw))
	}
	if v == `""` {
		k.Kind = store.MatchEmpty
		return k, nil
	}
	if strings.Trim(v, "*") == "" {
		return nil, nil
	}
	switch vr {
	case "DA", "TM", "DT":
		if strings.ContainsAny(v, "*?") {
			return nil, badKey(t, "wildcard matching is not allowed on %s (%s)", describe(t, kw), vr)
		}
		if n := strings.Count(v, "-"); n == 1 {
			lo, hi, _ := strings.Cut(v, "-")
			k.Kind, k.Lo, k.Hi = store.MatchRange, strings.TrimSpace(lo), strings.TrimSpace(hi)
			if k.Lo == "" && k.Hi == "" {
				return nil, nil
			}
			return k, nil
		} else if n > 1 {
			return nil, badKey(t, "cannot read the range of %s: date-times with UTC offsets in ranges are not supported", describe(t, kw))
		}
		k.Kind, k.Value = store.MatchSingle, v
		return k, nil
	case "UI", "CS":
		if strings.Contains(v, `\`) {
			k.Kind = store.MatchList
			for _, x := range strings.Split(v, `\`) {
				if x = strings.TrimSpace(x); x != "" {
					k.Values = append(k.Values, x)
				}
			}
			if strings.ContainsAny(v, "*?") {
				return nil, badKey(t, "wildcards are not allowed in a list of values (%s)", describe(t, kw))
			}
			return k, nil
		}
		if vr == "UI" && strings.ContainsAny(v, "*?") {
			return nil, badKey(t, "wildcard matching is not allowed on %s (UI)", describe(t, kw))
		}
	case "US", "SS", "UL", "SL", "FL", "FD", "IS", "DS":
		if strings.ContainsAny(v, "*?") {
			return nil, badKey(t, "wildcard matching is not allowed on %s (%s)", describe(t, kw), vr)
		}
	}
	if strings.ContainsAny(v, "*?") {
		k.Kind, k.Value = store.MatchWildcard, v
		return k, nil
	}
	k.Kind, k.Value = store.MatchSingle, v
	return k, nil
}

// parseRetrieve parses a C-MOVE/C-GET identifier (PS3.4 C.4.2.2.1,
// C.4.3.2.1): only unique keys, the one of the retrieve level required
// (one value or a list), those above it single values. Other attributes
// with a value are refused; empty ones are ignored.
func parseRetrieve(ds *dicom.DataSet, patientRoot bool) (*identifier, error) {
	l, err := parseLevel(ds, patientRoot)
	if err != nil {
		return nil, err
	}
	id := &identifier{level: l, patientRoot: patientRoot}
	for _, e := range ds.Elements {
		t := e.Tag
		if skipped(t) || t == dicom.QueryRetrieveLevel || t == dicom.SpecificCharacterSet {
			continue
		}
		kw := dicom.Keyword(t)
		v := strings.TrimSpace(ds.String(t))
		if v == "" && !e.IsSequence() {
			continue
		}
		// PatientID is accepted in Study Root too (as a check), since
		// SCUs send it.
		if !isUnique(kw, true) {
			if e.IsSequence() && emptySequence(e) {
				continue
			}
			return nil, badKey(t, "a retrieve identifier holds only unique keys; %s is not one", describe(t, kw))
		}
		lv := levelOf(kw, l, true)
		if lv > l {
			return nil, badKey(t, "%s is below the %s retrieve level", describe(t, kw), l)
		}
		k := store.Key{Attribute: kw, Kind: store.MatchSingle, Value: v}
		if strings.Contains(v, `\`) {
			if lv < l {
				return nil, badKey(t, "the unique key %s above the %s level needs a single value", describe(t, kw), l)
			}
			k = store.Key{Attribute: kw, Kind: store.MatchList}
			for _, x := range strings.Split(v, `\`) {
				if x = strings.TrimSpace(x); x != "" {
					k.Values = append(k.Values, x)
				}
			}
		}
		if strings.ContainsAny(v, "*?") {
			return nil, badKey(t, "wildcards are not allowed in a retrieve identifier (%s)", describe(t, kw))
		}
		if strings.ContainsRune(v, 0) {
			return nil, badKey(t, "%s holds a NUL character", describe(t, kw))
		}
		id.keys = append(id.keys, k)
	}
	return id, nil
}
