package dicomweb

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/web"
)

// WADO-URI (PS3.18 9): GET /wado?requestType=WADO&studyUID=…&seriesUID=…
// &objectUID=…[&contentType=…][&transferSyntax=…]. The object is answered
// as application/dicom, a Part 10 file, in the transfer syntax chosen as
// for WADO-RS (outputSyntax): transferSyntax=UID, * (as stored), or none
// (Explicit VR Little Endian for a native object, as stored for a
// compressed one). Images (image/jpeg, the PS3.18 default, and
// image/png) are rendered as WADO-RS's rendered resource is
// (wadoURIImage); other types (image/gif, text/html, …) get 406.
//
// Parameters are read strictly: each at most once; requestType must be
// WADO; the three UIDs must be valid; anonymize is refused (Ward does not
// de-identify on the fly); the rendering parameters (annotation, rows,
// columns, region, windowCenter, windowWidth, frameNumber, imageQuality,
// presentationUID, presentationSeriesUID) are refused with
// application/dicom, to which they do not apply; charset is accepted and
// has no effect on application/dicom; any other parameter is a 400 that
// names it (a misspelt one would otherwise be ignored silently).

// wadoParams are the parameters of PS3.18 9.1.2 Ward knows.
var wadoParams = map[string]bool{
	"requestType": true, "studyUID": true, "seriesUID": true, "objectUID": true,
	"contentType": true, "charset": true, "anonymize": true, "transferSyntax": true,
	"annotation": true, "rows": true, "columns": true, "region": true,
	"windowCenter": true, "windowWidth": true, "frameNumber": true, "imageQuality": true,
	"presentationUID": true, "presentationSeriesUID": true,
}

// renderingParams apply only to rendered (image) answers.
var renderingParams = []string{
	"annotation", "rows", "columns", "region", "windowCenter", "windowWidth",
	"frameNumber", "imageQuality", "presentationUID", "presentationSeriesUID",
}

// maxWADOQuery bounds the query string read.
const maxWADOQuery = 4096

func (s *Server) wadoURI(w http.ResponseWriter, r *http.Request) {
	bad := func(msg string) { web.Fail(w, r, http.StatusBadRequest, msg) }
	if len(r.URL.RawQuery) > maxWADOQuery {
		bad(fmt.Sprintf("query string over %d bytes", maxWADOQuery))
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		bad("malformed query string")
		return
	}
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !wadoParams[k] {
			bad(fmt.Sprintf("unknown WADO-URI parameter %q (PS3.18 9.1.2; names are case-sensitive)", k))
			return
		}
		if len(q[k]) > 1 {
			bad(fmt.Sprintf("WADO-URI parameter %s given more than once", k))
			return
		}
	}
	switch rt := q.Get("requestType"); rt {
	case "WADO":
	case "":
		bad("requestType=WADO is required")
		return
	default:
		bad(fmt.Sprintf("requestType %q is not supported: only WADO", rt))
		return
	}
	var t Target
	for _, p := range []struct {
		name string
		uid  *string
	}{{"studyUID", &t.Study}, {"seriesUID", &t.Series}, {"objectUID", &t.Instance}} {
		v := q.Get(p.name)
		if v == "" {
			bad(p.name + " is required")
			return
		}
		if !dicom.ValidUID(v) {
			bad(p.name + " is not a valid UID")
			return
		}
		*p.uid = v
	}
	if !wantsDICOM(q.Get("contentType")) {
		s.wadoURIImage(w, r, t, q)
		return
	}
	if v := q.Get("anonymize"); v != "" {
		bad("anonymize is not supported: Ward does not de-identify objects it sends")
		return
	}
	for _, k := range renderingParams {
		if q.Has(k) {
			bad(k + " applies to rendered images, not to contentType=application/dicom")
			return
		}
	}
	want := syntaxDefault
	if ts := q.Get("transferSyntax"); ts != "" {
		if ts != syntaxAsStored && dicom.LookupTransferSyntax(ts) == nil {
			bad("transferSyntax is not a transfer syntax UID")
			return
		}
		want = ts
	}

	found, err := s.findInstances(r.Context(), t.RetrieveRequest())
	if err != nil {
		s.web.Error(w, r, err)
		return
	}
	if len(found) == 0 {
		web.Fail(w, r, http.StatusNotFound, "no instance with these UIDs is stored")
		return
	}
	// A SOP Instance UID names one object; anything more is not sent.
	for _, in := range found[1:] {
		report(in, archive.ErrNotAttempted)
	}
	send, _, refusal := plan(found[:1], want)
	if len(send) == 0 {
		web.Fail(w, r, http.StatusNotAcceptable, refusal.Error()+"; ask for transferSyntax=* to have the object as stored")
		return
	}
	s.sendSingle(w, r, send[0])
}

// wantsDICOM reports whether a WADO-URI contentType (a list of media
// types, with weights) accepts application/dicom.
func wantsDICOM(ct string) bool {
	if ct == "" {
		return false
	}
	ranges, err := ParseAccept([]string{ct})
	if err != nil {
		return false
	}
	for _, m := range ranges {
		if m.Type == "application/dicom" {
			return true
		}
	}
	return false
}

// wadoURIImage answers a WADO-URI request for an image (contentType
// image/jpeg, the default, or image/png) with the rendered resource's
// code: rows and columns bound the size (the aspect kept), windowCenter
// and windowWidth set the window, frameNumber the frame (1-based),
// imageQuality the JPEG quality. annotation, region and the presentation
// state parameters are not supported (400).
func (s *Server) wadoURIImage(w http.ResponseWriter, r *http.Request, t Target, q url.Values) {
	bad := func(msg string) { web.Fail(w, r, http.StatusBadRequest, msg) }
	var p renderParams
	switch ct := strings.TrimSpace(strings.Split(q.Get("contentType"), ",")[0]); {
	case ct == "" || strings.HasPrefix(ct, "image/jpeg"):
		p.format = "image/jpeg"
	case strings.HasPrefix(ct, "image/png"):
		p.format = "image/png"
	default:
		web.Fail(w, r, http.StatusNotAcceptable, "WADO-URI answers application/dicom, image/jpeg or image/png, not "+ct)
		return
	}
	for _, k := range []string{"annotation", "region", "presentationUID", "presentationSeriesUID", "anonymize", "transferSyntax"} {
		if q.Has(k) {
			bad(k + " is not supported with an image contentType")
			return
		}
	}
	num := func(k string, lo, hi int) (int, bool) {
		v := q.Get(k)
		if v == "" {
			return 0, true
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			bad(fmt.Sprintf("%s is an integer from %d to %d", k, lo, hi))
			return 0, false
		}
		return n, true
	}
	rows, ok1 := num("rows", 1, maxViewport)
	cols, ok2 := num("columns", 1, maxViewport)
	frame, ok3 := num("frameNumber", 1, 1<<20)
	quality, ok4 := num("imageQuality", 1, 100)
	if !(ok1 && ok2 && ok3 && ok4) {
		return
	}
	if rows > 0 || cols > 0 {
		// One of them alone bounds that side; the other follows the
		// aspect (maxViewport bounds nothing in practice).
		p.vw, p.vh = cols, rows
		if p.vw == 0 {
			p.vw = maxViewport
		}
		if p.vh == 0 {
			p.vh = maxViewport
		}
	}
	if c, wd := q.Get("windowCenter"), q.Get("windowWidth"); c != "" || wd != "" {
		center, e1 := strconv.ParseFloat(c, 64)
		width, e2 := strconv.ParseFloat(wd, 64)
		if e1 != nil || e2 != nil || width < 1 || math.IsInf(center, 0) || math.IsInf(width, 0) || math.IsNaN(center) {
			bad("windowCenter and windowWidth go together, numbers with width at least 1")
			return
		}
		p.window = &voiWindow{center: center, width: width, function: "LINEAR"}
	}
	p.quality = quality
	p.explicit = rows > 0 || cols > 0 || p.window != nil || quality != 0
	if frame == 0 {
		frame = 1
	}
	s.serveRendered(w, r, t, frame, p)
}
