package archive

import (
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store"
)

// DefaultMaxFindResults is the cap on the matches of one C-FIND when
// Archive.MaxFindResults is 0.
const DefaultMaxFindResults = 1000

// utf8Charset is the Specific Character Set of responses whose values the
// request's character set cannot encode.
const utf8Charset = "ISO_IR 192"

// Query serves a hierarchical query (C-FIND; QIDO-RS later), Patient Root
// or Study Root; emit is called once per match.
//
// Behaviour (see also parseFind and parseKey):
//   - A bad identifier (no or unknown level, a non-unique key above the
//     level, a key below it, a range or wildcard where the VR forbids it)
//     fails with ErrInvalidIdentifier naming the attribute.
//   - Matching keys the index cannot match on (optional keys Ward does not
//     store, sequences it does not index, item attributes of an indexed
//     sequence it does not keep) are ignored for matching, as PS3.4
//     C.4.1.2.3 allows; every match then has KeysIgnored. They are
//     returned with zero length like every unsupported return key.
//   - Indexed sequences (Archive.Sequences) are matched per PS3.4
//     C.2.2.2.6 (any stored item matching every item key) and returned
//     with their stored items, each holding the item attributes the
//     request's item named (all kept ones for an empty sequence).
//   - A universal query (JudgeQuery: below the top level without the
//     unique keys above it, or at the top level without a key that
//     narrows it) fails with ErrNotAuthorized unless the context's
//     principal holds bulk-query. A context without a principal does not.
//   - More matches than the cap (the principal's MaxResults, else
//     MaxFindResults, default 1000; q.Limit lowers it): the first cap
//     matches are emitted, then Query fails with ErrTooManyResults saying
//     the results were cut and that the query should be narrowed. The
//     requestor thus knows the list is incomplete. q.Offset skips matches
//     first (in the index's stable order); the cap counts those after.
//   - Each match holds exactly the attributes of the request (those Ward
//     does not have with zero length), plus Query/Retrieve Level, the
//     Retrieve AE Title and, when the request had one or a value is not
//     ASCII, Specific Character Set: the request's when it can encode every
//     value, else ISO_IR 192 (UTF-8).
func (ar *Archive) Query(ctx context.Context, rq *Query, emit func(Match) error) error {
	if PrincipalFrom(ctx).deidentified() {
		return Fail(ErrNotAuthorized, "de-identified peer: query answers would reveal identity")
	}
	patientRoot, err := patientRoot(rq.Model)
	if err != nil {
		return err
	}
	qr := ar.capabilities().Querier
	if qr == nil {
		return Fail(ErrNotSupported, "the index backend cannot serve queries")
	}
	supported := func(string) bool { return true }
	if km := ar.capabilities().KeyMatcher; km != nil {
		supported = km.CanMatch
	}
	id, err := parseFind(rq.Identifier, patientRoot, rq.KeysAboveLevel, supported, ar.seqs)
	if err != nil {
		return err
	}
	ignored := len(id.ignored) > 0
	p := PrincipalFrom(ctx)
	limit := ar.MaxFindResults
	if p != nil && p.MaxResults != 0 {
		limit = p.MaxResults
	}
	if limit == 0 {
		limit = DefaultMaxFindResults
	}
	if rq.Limit > 0 && (limit < 0 || rq.Limit < limit) {
		limit = rq.Limit
	}
	q := &store.Query{
		Level:           id.level,
		PatientRoot:     patientRoot,
		Keys:            id.keys,
		PNCaseSensitive: ar.PNCaseSensitive,
		Return:          []string{},
		Offset:          max(rq.Offset, 0),
	}
	for _, rk := range id.ret {
		if rk.spec != nil {
			q.ReturnSequences = append(q.ReturnSequences, rk.spec.SequenceSpec)
		} else if rk.kw != "" {
			q.Return = append(q.Return, rk.kw)
		}
	}
	if limit > 0 {
		q.Limit = limit + 1
	}
	if !p.Allows(PermBulkQuery) {
		if reach := JudgeQuery(q, time.Now()); reach.Universal {
			return Fail(ErrNotAuthorized, reach.Comment())
		}
	}
	aet := ar.AETitle
	if aet == "" {
		aet = rq.RetrieveAETitle
	}
	n := 0
	capped := errors.New("cap reached")
	var emitErr error
	err = qr.Query(ctx, q, func(m store.Match) error {
		if limit > 0 && n == limit {
			return capped
		}
		n++
		if err := emit(Match{DataSet: response(id, m, aet), KeysIgnored: ignored}); err != nil {
			emitErr = err
			return err
		}
		return nil
	})
	switch {
	case errors.Is(err, capped):
		return Failf(ErrTooManyResults, "narrow the query: more than %d matches, the first %d sent", limit, limit)
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case emitErr != nil && errors.Is(err, emitErr):
		return err // the front end's own
	case errors.Is(err, store.ErrUnsupportedKey):
		return &Error{Kind: ErrInvalidIdentifier, Comment: err.Error(), Err: err}
	}
	return resourceError("querying the index", err)
}

// response builds the response identifier of one match.
func response(id *identifier, m store.Match, aet string) *dicom.DataSet {
	vals := make([]string, len(id.ret))
	var seqItems [][]map[dicom.Tag]string // only when sequences are returned
	ascii := true
	for i, rk := range id.ret {
		if rk.spec != nil {
			if seqItems == nil {
				seqItems = make([][]map[dicom.Tag]string, len(id.ret))
			}
			seqItems[i] = returnedItems(rk, m[rk.kw])
			for _, it := range seqItems[i] {
				for _, v := range it {
					if !isASCII(v) {
						ascii = false
						vals[i] = v // checked for the character set below
					}
				}
			}
			continue
		}
		switch rk.tag {
		case dicom.RetrieveAETitle:
			vals[i] = aet
		case dicom.InstanceAvailability:
			vals[i] = "ONLINE"
		default:
			if rk.kw != "" && !rk.seq {
				vals[i] = m[rk.kw]
			}
		}
		if !isASCII(vals[i]) {
			ascii = false
		}
	}
	cs := id.charset
	if !ascii {
	check:
		for i, v := range vals {
			if _, ok := dicom.EncodeText(cs, v); !ok {
				cs = []string{utf8Charset}
				break
			}
			if seqItems == nil {
				continue
			}
			for _, it := range seqItems[i] {
				for _, iv := range it {
					if _, ok := dicom.EncodeText(cs, iv); !ok {
						cs = []string{utf8Charset}
						break check
					}
				}
			}
		}
	}
	// Room for every attribute, the Query/Retrieve Level, the Specific
	// Character Set and the Retrieve AE Title.
	ds := &dicom.DataSet{Elements: make([]*dicom.Element, 0, len(id.ret)+3)}
	// The values are encoded in cs: the Specific Character Set of ds when
	// it has one, nil (the default repertoire) when it has none, as
	// ds.Set would find it, without reading it back for every value.
	if len(cs) > 0 && (len(id.charset) > 0 || !ascii) {
		ds.Set(dicom.SpecificCharacterSet, joinBackslash(cs))
	} else {
		cs = nil
	}
	ds.SetIn(cs, dicom.QueryRetrieveLevel, id.level.String())
	hasAET := false
	for i, rk := range id.ret {
		if rk.tag == dicom.RetrieveAETitle {
			hasAET = true
		}
		if rk.spec != nil {
			putSequence(ds, rk, seqItems[i], cs)
			continue
		}
		putValue(ds, rk, vals[i], cs)
	}
	if !hasAET && aet != "" {
		ds.SetIn(cs, dicom.RetrieveAETitle, aet)
	}
	return ds
}

// returnedItems decodes the stored items of an indexed sequence (a Match
// value, store.EncodeItems) restricted to the item attributes requested
// (every kept one when the request named none). Attributes the request
// names but Ward does not keep come back empty.
func returnedItems(rk requested, v string) []map[dicom.Tag]string {
	stored, err := store.DecodeItems(v)
	if err != nil || len(stored) == 0 {
		return nil
	}
	tags := rk.items
	if tags == nil {
		tags = rk.spec.items
	}
	out := make([]map[dicom.Tag]string, len(stored))
	for i, it := range stored {
		m := make(map[dicom.Tag]string, len(tags))
		for _, t := range tags {
			m[t] = it[rk.spec.want[t]] // "" for attributes not kept
		}
		out[i] = m
	}
	return out
}

// putSequence adds a returned sequence: one item per stored item, with the
// requested item attributes encoded in the response's character set.
func putSequence(ds *dicom.DataSet, rk requested, items []map[dicom.Tag]string, cs []string) {
	e := &dicom.Element{Tag: rk.tag, VR: "SQ"}
	for _, it := range items {
		item := &dicom.DataSet{}
		for t, v := range it {
			if v == "" {
				item.Put(&dicom.Element{Tag: t, VR: dicom.VROf(t)})
				continue
			}
			item.SetIn(cs, t, v)
		}
		e.Items = append(e.Items, item)
	}
	ds.Put(e)
}

// putValue adds one returned attribute in the VR of the dictionary (or of
// the request for unknown tags), text encoded in cs.
func putValue(ds *dicom.DataSet, rk requested, v string, cs []string) {
	vr := dicom.VROf(rk.tag)
	if vr == "UN" && rk.vr != "" {
		vr = rk.vr
	}
	switch {
	case rk.seq || vr == "SQ":
		ds.Put(&dicom.Element{Tag: rk.tag, VR: "SQ"})
		return
	case v == "":
		ds.Put(&dicom.Element{Tag: rk.tag, VR: vr})
		return
	}
	switch vr {
	case "US", "SS":
		n, err := strconv.Atoi(v)
		if err != nil {
			ds.Put(&dicom.Element{Tag: rk.tag, VR: vr})
			return
		}
		b := binary.LittleEndian.AppendUint16(nil, uint16(n))
		ds.Put(&dicom.Element{Tag: rk.tag, VR: vr, Value: b})
	case "UL", "SL":
		n, err := strconv.Atoi(v)
		if err != nil {
			ds.Put(&dicom.Element{Tag: rk.tag, VR: vr})
			return
		}
		b := binary.LittleEndian.AppendUint32(nil, uint32(n))
		ds.Put(&dicom.Element{Tag: rk.tag, VR: vr, Value: b})
	default:
		ds.SetIn(cs, rk.tag, v)
		if e := ds.Get(rk.tag); e != nil && e.VR != vr {
			e.VR = vr
		}
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func joinBackslash(v []string) string {
	s := ""
	for i, x := range v {
		if i > 0 {
			s += `\`
		}
		s += x
	}
	return s
}
