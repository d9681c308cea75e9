package dicomweb

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/web"
)

// STOW-RS (PS3.18 10.5): POST /studies and /studies/{study} with a
// multipart/related body of application/dicom parts (Part 10 files).
// Each part streams into the service's Store as it arrives: its File
// Meta Information names the object and its transfer syntax, and the
// data set goes on to the archive, which acknowledges it only once it is
// durable and indexed. The answer is the Store Instances Response
// (PS3.18 10.5.3, Annex I): what was stored, what failed and why.

// maxStowParts bounds the parts of one request.
const maxStowParts = 10000

// maxStowWarnings bounds the Warning headers an answer carries (one per
// failed part).
const maxStowWarnings = 20

// The attributes of the Store Instances Response (PS3.18 Annex I).
const (
	tagRetrieveURL           dicom.Tag = 0x00081190
	tagFailureReason         dicom.Tag = 0x00081197
	tagFailedSOPSequence     dicom.Tag = 0x00081198
	tagReferencedSOPSequence dicom.Tag = 0x00081199
)

// Failure Reason (0008,1197) values (PS3.18 Table I.2-2; 0x0111 and
// 0x0124 are PS3.7 Annex C general statuses, which Table I.2-2 allows as
// additional codes).
const (
	reasonProcessing       uint16 = 0x0110
	reasonDuplicate        uint16 = 0x0111
	reasonSOPClass         uint16 = 0x0122 // Referenced SOP Class not supported
	reasonNotAuthorized    uint16 = 0x0124
	reasonOutOfResources   uint16 = 0xA700
	reasonMismatch         uint16 = 0xA900 // Data Set does not match SOP Class (or the request)
	reasonCannotUnderstand uint16 = 0xC000
	reasonTransferSyntax   uint16 = 0xC122 // Referenced Transfer Syntax not supported
)

// failureReasons is the one table from the archive's domain errors to
// STOW-RS failure reasons; every kind in archive.Kinds has a row
// (stow_test.go checks).
var failureReasons = map[error]uint16{
	archive.ErrCannotUnderstand:   reasonCannotUnderstand,
	archive.ErrDuplicate:          reasonDuplicate,
	archive.ErrAttributeMismatch:  reasonMismatch,
	archive.ErrInvalidAttribute:   reasonCannotUnderstand,
	archive.ErrInvalidIdentifier:  reasonMismatch,
	archive.ErrNoSpace:            reasonOutOfResources,
	archive.ErrStorage:            reasonOutOfResources,
	archive.ErrUnavailable:        reasonOutOfResources,
	archive.ErrNotSupported:       reasonSOPClass,
	archive.ErrNotAuthorized:      reasonNotAuthorized,
	archive.ErrTooManyResults:     reasonProcessing,
	archive.ErrUnknownDestination: reasonProcessing,
	archive.ErrAuditUnavailable:   reasonOutOfResources,
	archive.ErrProcessing:         reasonProcessing,
}

// failureReason is the Failure Reason of an error from the service and
// the comment a client may see.
func failureReason(err error) (uint16, string) {
	var ae *archive.Error
	if errors.As(err, &ae) {
		code, ok := failureReasons[ae.Kind]
		if !ok {
			code = reasonProcessing
		}
		msg := ae.Comment
		if msg == "" {
			msg = ae.Kind.Error()
		}
		return code, msg
	}
	return reasonProcessing, "internal error"
}

// stowResult gathers a request's outcome.
type stowResult struct {
	base     string // the DICOMweb root clients see
	study    string // the study the path names, "" for none
	parts    int
	stored   []*dicom.DataSet
	failed   []*dicom.DataSet
	studies  map[string]bool
	warnings []string
	// broken: the body broke off after some instances were stored.
	broken bool
}

func (res *stowResult) fail(class, inst string, reason uint16, comment string) {
	it := &dicom.DataSet{}
	it.Set(dicom.ReferencedSOPClassUID, class)
	it.Set(dicom.ReferencedSOPInstanceUID, inst)
	it.Put(usElement(tagFailureReason, reason))
	res.failed = append(res.failed, it)
	if len(res.warnings) < maxStowWarnings {
		res.warnings = append(res.warnings, fmt.Sprintf("part %d: failure %04X: %s", res.parts, reason, comment))
	}
}

func (res *stowResult) ok(class, inst string, st *archive.Stored) {
	it := &dicom.DataSet{}
	it.Set(dicom.ReferencedSOPClassUID, class)
	it.Set(dicom.ReferencedSOPInstanceUID, inst)
	if st != nil && st.StudyInstanceUID != "" && st.SeriesInstanceUID != "" {
		it.Put(urElement(tagRetrieveURL, res.base+"/studies/"+st.StudyInstanceUID+"/series/"+st.SeriesInstanceUID+"/instances/"+inst))
		if res.studies == nil {
			res.studies = map[string]bool{}
		}
		res.studies[st.StudyInstanceUID] = true
	}
	res.stored = append(res.stored, it)
}

// dataSet is the Store Instances Response: the study's Retrieve URL (when
// the request named one, or all stored instances are in one), Failed SOP
// Sequence and Referenced SOP Sequence.
func (res *stowResult) dataSet() *dicom.DataSet {
	ds := &dicom.DataSet{}
	study := res.study
	if study == "" && len(res.studies) == 1 {
		for s := range res.studies {
			study = s
		}
	}
	if study != "" {
		ds.Put(urElement(tagRetrieveURL, res.base+"/studies/"+study))
	}
	if len(res.failed) > 0 {
		ds.Put(&dicom.Element{Tag: tagFailedSOPSequence, VR: "SQ", Items: res.failed})
	}
	if len(res.stored) > 0 {
		ds.Put(&dicom.Element{Tag: tagReferencedSOPSequence, VR: "SQ", Items: res.stored})
	}
	return ds
}

// status is the answer's status (PS3.18 10.5.3.1): 200 when every
// instance was stored, 409 when none was, 202 between (and when the body
// broke off after some were stored).
func (res *stowResult) status() int {
	switch {
	case len(res.failed) == 0 && !res.broken:
		return http.StatusOK
	case len(res.stored) == 0:
		return http.StatusConflict
	}
	return http.StatusAccepted
}

// urElement is a UR element (Retrieve URL is not in the dictionary
// Set reads VRs from).
func urElement(t dicom.Tag, v string) *dicom.Element {
	if len(v)%2 == 1 {
		v += " "
	}
	return &dicom.Element{Tag: t, VR: "UR", Value: []byte(v)}
}

func usElement(t dicom.Tag, v uint16) *dicom.Element {
	b := make([]byte, 2)
	binary.LittleEndian.PutUint16(b, v)
	return &dicom.Element{Tag: t, VR: "US", Value: b}
}

// The answer's media types.
const (
	mediaDicomJSON = "application/dicom+json"
	mediaDicomXML  = "application/dicom+xml"
)

// stowAnswerType picks the answer's media type from Accept: DICOM JSON
// (also for application/json and wildcards) or DICOM XML; "" when neither
// is acceptable.
func stowAnswerType(ranges []MediaRange) string {
	for _, m := range ranges {
		switch {
		case m.Matches(mediaDicomJSON), m.Type == "application/json":
			return mediaDicomJSON
		case m.Type == mediaDicomXML:
			return mediaDicomXML
		}
	}
	return ""
}

func (s *Server) store(w http.ResponseWriter, r *http.Request) {
	t, ok := targetOf(w, r)
	if !ok {
		return
	}
	ranges, err := ParseAccept(r.Header.Values("Accept"))
	if err != nil {
		web.Fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	answer := stowAnswerType(ranges)
	if answer == "" {
		web.Fail(w, r, http.StatusNotAcceptable, "STOW-RS answers in application/dicom+json or application/dicom+xml")
		return
	}
	typ, params, err := parseContentType(r.Header.Get("Content-Type"))
	switch {
	case err != nil || typ != "multipart/related":
		web.Fail(w, r, http.StatusUnsupportedMediaType, `STOW-RS takes multipart/related; type="application/dicom" (one Part 10 file per part)`)
		return
	case params["type"] != "" && !strings.EqualFold(params["type"], "application/dicom"):
		web.Fail(w, r, http.StatusUnsupportedMediaType, "STOW-RS of "+params["type"]+` parts (metadata with bulk data) is not supported: send multipart/related; type="application/dicom"`)
		return
	case !validBoundary(params["boundary"]):
		web.Fail(w, r, http.StatusBadRequest, "the Content-Type has no valid multipart boundary")
		return
	}

	ctx, sess := archive.WithSession(r.Context())
	defer sess.End() // one Instances Transferred record for the request
	res := &stowResult{base: s.web.BaseURL(r) + Root, study: t.Study}
	pr := newPartReader(r.Body, params["boundary"], maxStowParts)
	var end error // what ended the body early
	for {
		part, err := pr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			end = err
			break
		}
		res.parts++
		if err := s.storePart(ctx, part, res); err != nil {
			end = err
			break
		}
	}
	var mb *http.MaxBytesError
	done := fmt.Sprintf("%d instances stored before", len(res.stored))
	switch {
	case errors.As(end, &mb):
		web.Fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over the limit of %d bytes ([web] max_body); %s", mb.Limit, done))
		return
	case errors.Is(end, errTooManyParts):
		web.Fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("more than %d parts in one request (%s): send the rest in another", maxStowParts, done))
		return
	case archive.KindOf(end) == archive.ErrNotAuthorized:
		s.web.Error(w, r, end)
		return
	case end != nil && !errors.Is(end, errMalformedBody):
		s.web.Error(w, r, end)
		return
	case end != nil && len(res.stored) == 0:
		web.Fail(w, r, http.StatusBadRequest, end.Error())
		return
	case end != nil:
		res.broken = true
		res.warnings = append(res.warnings, "the body broke off (the parts after it were not read): "+end.Error())
	case res.parts == 0:
		web.Fail(w, r, http.StatusBadRequest, "the request holds no part")
		return
	}
	s.stowAnswer(w, r, res, answer)
}

// storePart stores one part into res. It returns an error only for what
// ends the request: the body limit, a cancelled request, a principal that
// may not store, a body that breaks off.
func (s *Server) storePart(ctx context.Context, part *multipart.Part, res *stowResult) error {
	if ct := part.Header.Get("Content-Type"); ct != "" {
		typ, _, err := parseContentType(ct)
		if err != nil || typ != "application/dicom" {
			comment := "a part of type " + strconv.Quote(ct) + ": only application/dicom parts are stored"
			s.refused(ctx, "", comment)
			res.fail("", "", reasonCannotUnderstand, comment)
			return nil
		}
	}
	meta, br, err := dicom.ReadFileHeader(part, dicom.DefaultMetaLimit)
	if err != nil {
		if fatal(err) {
			return err
		}
		reason, comment := reasonCannotUnderstand, "not a DICOM Part 10 file: "+err.Error()
		if errors.Is(err, dicom.ErrNoTransferSyntax) {
			reason, comment = reasonTransferSyntax, "transfer syntax not supported: "+err.Error()
		}
		s.refused(ctx, "", comment)
		res.fail("", "", reason, comment)
		return nil
	}
	// The object is named by its data set's own UIDs where they were
	// peeked (files whose meta disagrees with the data set exist; Ward
	// writes a meta of its own), else by the meta's.
	class, inst := meta.SOPClassUID, meta.SOPInstanceUID
	if class == "" || inst == "" {
		class, inst = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
	}
	switch {
	case meta.NoMeta:
		comment := "no File Meta Information: each part must be a DICOM Part 10 file"
		s.refused(ctx, class, comment)
		res.fail(meta.SOPClassUID, meta.SOPInstanceUID, reasonCannotUnderstand, comment)
		return nil
	case class == "" || inst == "":
		comment := "the File Meta Information names no SOP Class or Instance"
		s.refused(ctx, class, comment)
		res.fail(class, inst, reasonCannotUnderstand, comment)
		return nil
	case !s.storable(class):
		comment := "SOP Class " + class + " is not a storage SOP class Ward accepts"
		s.refused(ctx, class, comment)
		res.fail(class, inst, reasonSOPClass, comment)
		return nil
	}
	st, err := s.svc.Store(ctx, &archive.StoreRequest{
		Origin:            archive.OriginFrom(ctx),
		SOPClassUID:       class,
		SOPInstanceUID:    inst,
		TransferSyntaxUID: meta.TransferSyntaxUID,
		Data:              br,
		ExpectStudy:       res.study,
	})
	if err != nil {
		if fatal(err) || archive.KindOf(err) == archive.ErrNotAuthorized {
			return err
		}
		reason, comment := failureReason(err)
		if archive.KindOf(err) == nil {
			s.web.Logger().Warn("STOW-RS instance failed", "err", err)
		}
		res.fail(class, inst, reason, comment)
		return nil
	}
	res.ok(class, inst, st)
	return nil
}

// fatal reports whether err, met reading a part, ends the request: the
// body limit, a cancelled request.
func fatal(err error) bool {
	var mb *http.MaxBytesError
	return errors.As(err, &mb) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// storable reports whether Ward stores objects of SOP class uid.
func (s *Server) storable(uid string) bool {
	if s.opts.Storable != nil {
		return s.opts.Storable(uid)
	}
	return dicom.IsStorageSOPClass(uid)
}

// refused tells the audit trail (when the service is a Refuser) of a part
// refused before it reached the service.
func (s *Server) refused(ctx context.Context, class, comment string) {
	if rf, ok := s.svc.(archive.Refuser); ok {
		rf.Refused(ctx, &archive.Refusal{Op: archive.RefusedStore, SOPClassUID: class, Comment: comment})
	}
}

// stowAnswer writes the Store Instances Response.
func (s *Server) stowAnswer(w http.ResponseWriter, r *http.Request, res *stowResult, media string) {
	ds := res.dataSet()
	var body []byte
	var err error
	if media == mediaDicomXML {
		body, err = nativeXML(ds)
	} else {
		body, err = ds.MarshalJSON()
	}
	if err != nil {
		s.web.Error(w, r, err)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", media)
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	for _, warn := range res.warnings {
		warn = strings.Map(func(c rune) rune {
			if c < 0x20 || c == 0x7f || c == '"' {
				return ' '
			}
			return c
		}, warn)
		hd.Add("Warning", `299 ward "`+warn+`"`)
	}
	w.WriteHeader(res.status())
	_, _ = w.Write(body)
}

// nativeXML encodes a response data set (UI, UR, US values and
// sequences) in the Native DICOM Model (PS3.19 A.1).
func nativeXML(ds *dicom.DataSet) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(xml.Header)
	b.WriteString(`<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">`)
	if err := xmlItems(&b, ds, 0); err != nil {
		return nil, err
	}
	b.WriteString("</NativeDicomModel>\n")
	return b.Bytes(), nil
}

func xmlItems(b *bytes.Buffer, ds *dicom.DataSet, depth int) error {
	if depth > dicom.MaxDepth {
		return dicom.ErrTooDeep
	}
	els := append([]*dicom.Element(nil), ds.Elements...)
	sort.Slice(els, func(i, j int) bool { return els[i].Tag < els[j].Tag })
	for _, e := range els {
		vr := e.VR
		fmt.Fprintf(b, `<DicomAttribute tag="%08X" vr="%s"`, uint32(e.Tag), vr)
		if kw := dicom.Keyword(e.Tag); kw != "" {
			fmt.Fprintf(b, ` keyword="%s"`, kw)
		}
		b.WriteByte('>')
		switch {
		case vr == "SQ":
			for i, it := range e.Items {
				fmt.Fprintf(b, `<Item number="%d">`, i+1)
				if err := xmlItems(b, it, depth+1); err != nil {
					return err
				}
				b.WriteString("</Item>")
			}
		case vr == "US" && len(e.Value) == 2:
			fmt.Fprintf(b, `<Value number="1">%d</Value>`, binary.LittleEndian.Uint16(e.Value))
		default:
			v := strings.TrimRight(string(e.Value), "\x00 ")
			if v != "" {
				b.WriteString(`<Value number="1">`)
				if err := xml.EscapeText(b, []byte(v)); err != nil {
					return err
				}
				b.WriteString("</Value>")
			}
		}
		b.WriteString("</DicomAttribute>")
	}
	return nil
}
