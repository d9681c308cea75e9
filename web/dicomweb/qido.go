package dicomweb

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/web"
)

// QIDO-RS (PS3.18 10.6): a search turns into one Study Root query on the
// archive's service, the same hierarchical query C-FIND makes, so the
// matching rules are PS3.4 C.2.2.2's (wildcards, ranges, UID lists,
// case-insensitive PN, the bulk-query rule and the result cap). Its
// identifier holds:
//   - the Query/Retrieve Level of the resource (STUDY, SERIES, IMAGE);
//   - the UIDs of the path as single-value keys;
//   - a matching key per {attributeID}={value} parameter, by keyword or
//     GGGGEEEE tag, or SEQUENCE.ATTRIBUTE for an item attribute of an
//     indexed sequence;
//   - return keys: the defaults of PS3.18 Table 6.7.1-2 (and -2a, -2b) for
//     the level, those of the levels above for a search across them
//     (/series, /instances, /studies/{study}/instances), and includefield.
//
// Matches come back as one application/dicom+json array, each with its
// RetrieveURL (0008,1190). An empty result is 200 with [] (not 204: every
// client reads an empty array, not all of them a 204). The answer is
// built in memory before it is sent, so that a Warning header can say
// whether the cap cut it: the cap (at most Options.MaxResults matches)
// bounds that memory.

// defaultMaxResults caps a search when Options.MaxResults is not above 0.
const defaultMaxResults = 1000

// Bounds of the query parameters: more, or longer, is answered 400.
const (
	maxSearchParams   = 64
	maxSearchValue    = 1024
	maxIncludeFields  = 256
	maxSearchRawQuery = 16 << 10
	maxSearchOffset   = 1 << 30
)

// retrieveURLTag is Retrieve URL (0008,1190), UR.
const retrieveURLTag dicom.Tag = 0x00081190

// badParam is a query parameter error (answered 400 with its message).
func badParam(format string, args ...any) error {
	return failf(http.StatusBadRequest, format, args...)
}

// qidoLevel is a search's level: STUDY, SERIES or IMAGE.
type qidoLevel int

const (
	studyLevel qidoLevel = iota
	seriesLevel
	instanceLevel
)

func (l qidoLevel) String() string { return [...]string{"STUDY", "SERIES", "IMAGE"}[l] }

// The default return attributes (PS3.18 Table 6.7.1-2, -2a, -2b) per
// level, beyond RetrieveURL, which each match gets, and Specific
// Character Set, which the archive adds when a value needs it. Study
// Description and the series date and time are added because viewers'
// study and series lists show them.
var defaultReturn = [...][]string{
	studyLevel: {"StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
		"ReferringPhysicianName", "TimezoneOffsetFromUTC", "PatientName", "PatientID", "PatientBirthDate",
		"PatientSex", "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries",
		"NumberOfStudyRelatedInstances", "StudyDescription"},
	seriesLevel: {"StudyInstanceUID", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "SeriesInstanceUID",
		"SeriesNumber", "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
		"PerformedProcedureStepStartTime", "SeriesDate", "SeriesTime",
		"RequestAttributesSequence.ScheduledProcedureStepID", "RequestAttributesSequence.RequestedProcedureID"},
	instanceLevel: {"StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability",
		"TimezoneOffsetFromUTC", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames"},
}

// allReturn is what includefield=all adds per level: every attribute the
// index keeps there (attributes it does not keep come back empty).
var allReturn = [...][]string{
	studyLevel: {"PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
		"StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
		"ReferringPhysicianName", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
		"ModalitiesInStudy", "SOPClassesInStudy", "ProcedureCodeSequence", "ReferencedStudySequence"},
	seriesLevel: {"SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate", "SeriesTime",
		"BodyPartExamined", "PerformedProcedureStepStartDate", "NumberOfSeriesRelatedInstances",
		"RequestAttributesSequence", "AnatomicRegionSequence"},
	instanceLevel: {"SOPInstanceUID", "SOPClassUID", "InstanceNumber", "ContentDate", "ContentTime",
		"NumberOfFrames", "Rows", "Columns"},
}

// search is a parsed QIDO-RS request.
type search struct {
	level      qidoLevel
	identifier *dicom.DataSet
	limit      int // 0: none
	offset     int
	fuzzy      bool
	// retrieveAET: the request asked for Retrieve AE Title, which the
	// archive adds to every match (kept only when asked).
	retrieveAET bool
}

// key is one attribute a parameter names: a top-level tag, or an item
// attribute of a sequence (seq != 0).
type key struct {
	seq, tag dicom.Tag
}

// parseAttribute reads an attributeID: a keyword or GGGGEEEE, or two of
// them joined by '.' for an attribute of a sequence's item.
func parseAttribute(s string) (key, error) {
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return key{}, badParam("%q: only one level of sequence is supported (SEQUENCE.ATTRIBUTE)", s)
	}
	var tags []dicom.Tag
	for _, p := range parts {
		t, ok := tagOf(p)
		if !ok {
			return key{}, badParam("%q is not a known attribute keyword or tag (GGGGEEEE)", p)
		}
		if t.IsPrivate() || t.Group() <= 2 || t.Group() == 0xFFFE || t.Element() == 0 {
			return key{}, badParam("%q: private, group length and file meta attributes cannot be searched", p)
		}
		tags = append(tags, t)
	}
	if len(tags) == 1 {
		return key{tag: tags[0]}, nil
	}
	if dicom.VROf(tags[0]) != "SQ" {
		return key{}, badParam("%q: %s is not a sequence", s, parts[0])
	}
	if dicom.VROf(tags[1]) == "SQ" {
		return key{}, badParam("%q: nested sequences are not supported", s)
	}
	return key{seq: tags[0], tag: tags[1]}, nil
}

// tagOf looks up a keyword or an 8-digit hexadecimal tag (any tag: one
// the dictionary does not know is returned empty, and cannot be a matching
// key, since its VR is unknown).
func tagOf(s string) (dicom.Tag, bool) {
	if len(s) == 8 {
		if n, err := strconv.ParseUint(s, 16, 32); err == nil {
			return dicom.Tag(n), true
		}
	}
	if s == "" || !isKeyword(s) {
		return 0, false
	}
	if s == "RetrieveURL" { // newer than the dictionary
		return retrieveURLTag, true
	}
	return dicom.TagByKeyword(s)
}

func isKeyword(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// binaryVR: values Ward cannot take from a query parameter as a matching
// key (and that the index does not match on).
func binaryVR(vr string) bool {
	switch vr {
	case "US", "SS", "UL", "SL", "FL", "FD", "OB", "OW", "OF", "OD", "OL", "OV", "SV", "UV", "AT", "UN":
		return true
	}
	return false
}

// parseSearch reads a QIDO-RS request: the level and the path's target,
// and its raw query string. Errors are 400 httpErrors.
func parseSearch(level qidoLevel, t Target, rawQuery string) (*search, error) {
	if len(rawQuery) > maxSearchRawQuery {
		return nil, badParam("the query string is over %d bytes", maxSearchRawQuery)
	}
	if n := strings.Count(rawQuery, "&") + 1; n > maxSearchParams {
		return nil, badParam("more than %d query parameters", maxSearchParams)
	}
	params, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, badParam("cannot read the query string: %v", err)
	}
	sr := &search{level: level}
	ds := &dicom.DataSet{}
	items := map[dicom.Tag]*dicom.DataSet{} // sequence -> its one item
	matching := map[key]bool{}
	put := func(k key, value string) {
		if k.seq == 0 {
			if dicom.VROf(k.tag) == "SQ" {
				if ds.Get(k.tag) == nil {
					ds.Put(&dicom.Element{Tag: k.tag, VR: "SQ"})
				}
				return
			}
			ds.Set(k.tag, value)
			return
		}
		it := items[k.seq]
		if it == nil {
			it = &dicom.DataSet{}
			items[k.seq] = it
		}
		if value == "" && it.Get(k.tag) != nil {
			return // a return key named again
		}
		it.Set(k.tag, value)
	}
	include := func(s string) error {
		k, err := parseAttribute(s)
		if err != nil {
			return err
		}
		if k.seq == 0 && k.tag == dicom.RetrieveAETitle {
			sr.retrieveAET = true
		}
		if k.seq == 0 && k.tag == retrieveURLTag {
			return nil // every match has it
		}
		if !matching[k] && (k.seq != 0 || ds.Get(k.tag) == nil) {
			put(k, "")
		}
		return nil
	}
	nonASCII := false
	var fields []string  // includefield
	var keys [][2]string // matching keys: name, value
	for name, vs := range params {
		switch name {
		case "limit", "offset":
			if len(vs) != 1 {
				return nil, badParam("%s is given %d times", name, len(vs))
			}
			n, err := strconv.Atoi(vs[0])
			switch {
			case err != nil || n < 0 || n > maxSearchOffset:
				return nil, badParam("%s=%q is not a number from 0 to %d", name, vs[0], maxSearchOffset)
			case name == "limit" && n == 0:
				return nil, badParam("limit=0: a limit is at least 1")
			case name == "limit":
				sr.limit = n
			default:
				sr.offset = n
			}
		case "fuzzymatching":
			if len(vs) != 1 || (!strings.EqualFold(vs[0], "true") && !strings.EqualFold(vs[0], "false")) {
				return nil, badParam("fuzzymatching is true or false")
			}
			sr.fuzzy = strings.EqualFold(vs[0], "true")
		case "includefield":
			for _, v := range vs {
				for _, f := range strings.Split(v, ",") {
					if f = strings.TrimSpace(f); f != "" {
						fields = append(fields, f)
					}
				}
			}
			if len(fields) > maxIncludeFields {
				return nil, badParam("more than %d includefield attributes", maxIncludeFields)
			}
		default:
			if len(vs) != 1 {
				return nil, badParam("the matching key %s is given %d times; give one value (a list of UIDs is comma-separated)", name, len(vs))
			}
			v := vs[0]
			if len(v) > maxSearchValue {
				return nil, badParam("the value of %s is over %d bytes", name, maxSearchValue)
			}
			if !utf8.ValidString(v) {
				return nil, badParam("the value of %s is not UTF-8", name)
			}
			k, err := parseAttribute(name)
			if err != nil {
				return nil, badParam("unknown query parameter: %v", err)
			}
			if matching[k] {
				return nil, badParam("the matching key %s is given twice", name)
			}
			vr := dicom.VROf(k.tag)
			switch {
			case v == "":
				fields = append(fields, name) // a return key
				continue
			case vr == "SQ":
				return nil, badParam("%s is a sequence: match on an attribute of its item (%s.ATTRIBUTE)", name, name)
			case binaryVR(vr):
				return nil, badParam("%s (%s) cannot be a matching key", name, vr)
			case k.seq == 0 && (k.tag == dicom.RetrieveAETitle || k.tag == dicom.InstanceAvailability || k.tag == retrieveURLTag || k.tag == dicom.QueryRetrieveLevel || k.tag == dicom.SpecificCharacterSet):
				return nil, badParam("%s is returned, not matched", name)
			}
			if vr == "UI" || vr == "CS" {
				// PS3.18 8.3.4.1: a list of UIDs may be comma-separated.
				v = strings.ReplaceAll(v, ",", `\`)
			}
			for i := 0; i < len(v); i++ {
				if v[i] >= 0x80 {
					nonASCII = true
				}
			}
			matching[k] = true
			keys = append(keys, [2]string{name, v})
		}
	}
	// The values are UTF-8 (URLs are): say so before setting any.
	if nonASCII {
		ds.Set(dicom.SpecificCharacterSet, "ISO_IR 192")
	}
	ds.Set(dicom.QueryRetrieveLevel, level.String())
	for _, kv := range keys {
		k, _ := parseAttribute(kv[0])
		put(k, kv[1])
	}
	// The path's UIDs are single-value keys; a parameter naming one too
	// must agree.
	for _, u := range []struct {
		tag dicom.Tag
		uid string
	}{{dicom.StudyInstanceUID, t.Study}, {dicom.SeriesInstanceUID, t.Series}} {
		if u.uid == "" {
			continue
		}
		if matching[key{tag: u.tag}] && ds.String(u.tag) != u.uid {
			return nil, badParam("%s is in the path; the query parameter naming it too differs", dicom.Keyword(u.tag))
		}
		ds.Set(u.tag, u.uid)
		matching[key{tag: u.tag}] = true
	}
	// Return keys: the defaults of the level and of the levels the search
	// spans above it, then includefield.
	top := studyLevel
	switch {
	case t.Series != "":
		top = instanceLevel
	case t.Study != "":
		top = seriesLevel
	}
	all := false
	for _, f := range fields {
		if f == "all" {
			all = true
		}
	}
	for l := top; l <= level; l++ {
		for _, f := range defaultReturn[l] {
			if err := include(f); err != nil {
				return nil, err
			}
		}
	}
	if all {
		for l := studyLevel; l <= level; l++ {
			for _, f := range allReturn[l] {
				if err := include(f); err != nil {
					return nil, err
				}
			}
		}
	}
	for _, f := range fields {
		if f == "all" {
			continue
		}
		if err := include(f); err != nil {
			return nil, badParam("includefield: %v", err)
		}
	}
	for seq, it := range items {
		ds.Put(&dicom.Element{Tag: seq, VR: "SQ", Items: []*dicom.DataSet{it}})
	}
	sr.identifier = ds
	return sr, nil
}

func (s *Server) searchStudies(w http.ResponseWriter, r *http.Request) { s.search(w, r, studyLevel) }

func (s *Server) searchSeries(w http.ResponseWriter, r *http.Request) { s.search(w, r, seriesLevel) }

func (s *Server) searchInstances(w http.ResponseWriter, r *http.Request) {
	s.search(w, r, instanceLevel)
}

// search serves a QIDO-RS request at level.
func (s *Server) search(w http.ResponseWriter, r *http.Request, level qidoLevel) {
	t, ok := targetOf(w, r)
	if !ok {
		s.refusedQuery(r, "a UID in the path is not a valid UID")
		return
	}
	asXML, ok := searchFormat(w, r)
	if !ok {
		s.refusedQuery(r, "not acceptable: "+strings.Join(r.Header.Values("Accept"), ", "))
		return
	}
	sr, err := parseSearch(level, t, r.URL.RawQuery)
	if err != nil {
		s.refusedQuery(r, err.Error())
		web.Fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	limit := sr.limit
	m := s.opts.MaxResults
	if m <= 0 {
		m = defaultMaxResults // the answer is held in memory: never uncapped
	}
	if limit == 0 || limit > m {
		limit = m
	}
	q := &archive.Query{Model: archive.StudyRoot, Identifier: sr.identifier, Limit: limit, Offset: sr.offset, KeysAboveLevel: true}
	base := s.web.BaseURL(r) + Root
	var matches [][]byte // each match's DICOM JSON
	ignored := false
	err = s.svc.Query(r.Context(), q, func(m archive.Match) error {
		ds := m.DataSet
		ignored = ignored || m.KeysIgnored
		ds.Delete(dicom.QueryRetrieveLevel)
		if !sr.retrieveAET {
			ds.Delete(dicom.RetrieveAETitle)
		}
		u := []byte(retrieveURL(base, level, ds))
		if len(u)%2 == 1 {
			u = append(u, ' ')
		}
		ds.Put(&dicom.Element{Tag: retrieveURLTag, VR: "UR", Value: u})
		b, err := ds.MarshalJSON()
		if err != nil {
			return err
		}
		matches = append(matches, b)
		return nil
	})
	n := len(matches)
	hd := w.Header()
	switch {
	case err == nil:
	case errors.Is(err, archive.ErrTooManyResults):
		next := sr.offset + n
		if sr.limit > 0 && n >= sr.limit {
			hd.Add("Warning", fmt.Sprintf(`299 ward "more matches exist beyond limit=%d: ask with offset=%d"`, sr.limit, next))
		} else {
			hd.Add("Warning", fmt.Sprintf(`299 ward "the number of results exceeded the server's maximum of %d: more matches exist; narrow the query or ask with offset=%d"`, n, next))
		}
	default:
		s.web.Error(w, r, err)
		return
	}
	if sr.fuzzy {
		hd.Add("Warning", `299 ward "fuzzymatching is not supported: the keys were matched literally"`)
	}
	if ignored {
		hd.Add("Warning", `299 ward "some matching keys are not supported and were ignored: the results may be broader than asked"`)
	}
	if asXML {
		s.answerXML(w, r, matches)
		return
	}
	var body bytes.Buffer
	body.WriteByte('[')
	for i, b := range matches {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(b)
	}
	body.WriteByte(']')
	hd.Set("Content-Type", "application/dicom+json")
	hd.Set("Content-Length", strconv.Itoa(body.Len()))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body.Bytes())
	}
}

// answerXML answers the matches as multipart/related;
// type="application/dicom+xml", one Native DICOM Model part each.
func (s *Server) answerXML(w http.ResponseWriter, r *http.Request, matches [][]byte) {
	docs := make([][]byte, len(matches))
	for i, js := range matches {
		x, err := matchXML(js)
		if err != nil {
			s.web.Error(w, r, err)
			return
		}
		docs[i] = x
	}
	mp := NewMultipart(w, "application/dicom+xml")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	for _, x := range docs {
		pw, err := mp.Part(textproto.MIMEHeader{"Content-Type": {"application/dicom+xml; charset=utf-8"}})
		if err != nil {
			return
		}
		if _, err := pw.Write(x); err != nil {
			return
		}
	}
	_ = mp.Close()
}

// studyRootFind is the Study Root Query/Retrieve Information Model - FIND
// SOP Class, the model a QIDO-RS search is recorded under.
const studyRootFind = "1.2.840.10008.5.1.4.1.2.2.1"

// refusedQuery tells the service (its audit trail) of a search refused
// before it reached the service, so that it is recorded too.
func (s *Server) refusedQuery(r *http.Request, why string) {
	if rf, ok := s.svc.(archive.Refuser); ok {
		rf.Refused(r.Context(), &archive.Refusal{Op: archive.RefusedQuery, SOPClassUID: studyRootFind, Comment: why})
	}
}

// retrieveURL is the WADO-RS address of a match (PS3.18 10.6.3.2).
func retrieveURL(base string, level qidoLevel, ds *dicom.DataSet) string {
	u := base + "/studies/" + ds.String(dicom.StudyInstanceUID)
	if level >= seriesLevel {
		u += "/series/" + ds.String(dicom.SeriesInstanceUID)
	}
	if level == instanceLevel {
		u += "/instances/" + ds.String(dicom.SOPInstanceUID)
	}
	return u
}

// searchFormat picks the answer's form from the request's Accept (PS3.18
// 8.7.4): DICOM JSON for application/dicom+json, application/json or a
// wildcard (also without Accept), XML for multipart/related;
// type="application/dicom+xml", whichever comes first by weight. Anything
// else is answered 406 (an Accept that cannot be read 400) and ok is false.
func searchFormat(w http.ResponseWriter, r *http.Request) (asXML, ok bool) {
	ranges, err := ParseAccept(r.Header.Values("Accept"))
	if err != nil {
		web.Fail(w, r, http.StatusBadRequest, err.Error())
		return false, false
	}
	for _, m := range ranges {
		switch {
		case m.Matches("application/dicom+json") || m.Type == "application/json":
			return false, true
		case m.Type == "multipart/related" && strings.EqualFold(m.Params["type"], "application/dicom+xml"):
			return true, true
		}
	}
	web.Fail(w, r, http.StatusNotAcceptable, `QIDO-RS answers application/dicom+json or multipart/related; type="application/dicom+xml"`)
	return false, false
}
