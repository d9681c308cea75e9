package dicomweb

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/web"
)

// principalAuth authenticates every request as one principal.
type principalAuth struct{ p *archive.Principal }

func (a principalAuth) Authenticate(*http.Request) (*archive.Principal, error) { return a.p, nil }

const (
	ctImage = "1.2.840.10008.5.1.4.1.1.2"
	uidRoot = "1.2.826.0.1.3680043.10.543.16."
)

// qidoObject is one test object: its patient, study, series and instance.
type qidoObject struct {
	charset, name, pid, study, date, desc, series, modality, inst string
	number                                                        string
}

// The corpus: three patients, one with a name outside ASCII; the first
// study has two series (CT and MR) and three instances.
var qidoCorpus = []qidoObject{
	{"", "Doe^John", "P1", uidRoot + "1", "20200115", "Head", uidRoot + "1.1", "CT", uidRoot + "1.1.1", "1"},
	{"", "Doe^John", "P1", uidRoot + "1", "20200115", "Head", uidRoot + "1.1", "CT", uidRoot + "1.1.2", "2"},
	{"", "Doe^John", "P1", uidRoot + "1", "20200115", "Head", uidRoot + "1.2", "MR", uidRoot + "1.2.1", "1"},
	{"ISO_IR 192", "Müller^Jürgen", "P2", uidRoot + "2", "20210301", "Knee", uidRoot + "2.1", "MR", uidRoot + "2.1.1", "1"},
	{"", "DOE^JANE", "P3", uidRoot + "3", "20220710", "Chest", uidRoot + "3.1", "CT", uidRoot + "3.1.1", "1"},
	{"", "DOE^JANE", "P3", uidRoot + "3", "20220710", "Chest", uidRoot + "3.1", "CT", uidRoot + "3.1.2", "2"},
}

func (o qidoObject) bytes(t testing.TB) []byte {
	t.Helper()
	ds := &dicom.DataSet{}
	if o.charset != "" {
		ds.Set(dicom.SpecificCharacterSet, o.charset)
	}
	set := func(kw, v string) {
		tag, ok := dicom.TagByKeyword(kw)
		if !ok {
			t.Fatalf("keyword %s", kw)
		}
		ds.Set(tag, v)
	}
	set("SOPClassUID", ctImage)
	set("SOPInstanceUID", o.inst)
	set("PatientName", o.name)
	set("PatientID", o.pid)
	set("StudyInstanceUID", o.study)
	set("StudyDate", o.date)
	set("StudyTime", "101500")
	set("StudyDescription", o.desc)
	set("AccessionNumber", "A"+o.pid)
	set("SeriesInstanceUID", o.series)
	set("Modality", o.modality)
	set("SeriesNumber", o.series[len(o.series)-1:])
	set("InstanceNumber", o.number)
	if o.modality == "MR" {
		// A Request Attributes Sequence item (an indexed sequence).
		rp, _ := dicom.TagByKeyword("RequestedProcedureID")
		sps, _ := dicom.TagByKeyword("ScheduledProcedureStepID")
		ras, _ := dicom.TagByKeyword("RequestAttributesSequence")
		it := &dicom.DataSet{}
		it.Set(rp, "RP-"+o.pid)
		it.Set(sps, "SPS-"+o.pid)
		ds.Put(&dicom.Element{Tag: ras, VR: "SQ", Items: []*dicom.DataSet{it}})
	}
	b, err := ds.Bytes(dicom.ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newQIDOServer is a web front end with DICOMweb over a real archive
// (SQLite index, file blobs) holding qidoCorpus, authenticating every
// request as a user with perms.
func newQIDOServer(t testing.TB, perms archive.Permissions, maxResults int) http.Handler {
	t.Helper()
	ctx := context.Background()
	ar, _ := testArchive(t, nil)
	for _, o := range qidoCorpus {
		if _, err := ar.Store(ctx, &archive.StoreRequest{SOPClassUID: ctImage, SOPInstanceUID: o.inst,
			TransferSyntaxUID: dicom.ExplicitVRLittleEndian.UID, Data: bytes.NewReader(o.bytes(t))}); err != nil {
			t.Fatal(err)
		}
	}
	p := &archive.Principal{Kind: archive.User, Name: "ana", Roles: []string{"viewer"}, Grant: perms}
	h := web.New(web.Config{Authenticator: principalAuth{p}})
	Register(h, ar, Options{MaxResults: maxResults})
	return h
}

var viewerPerms = archive.Permissions{archive.PermFind: true, archive.PermBulkQuery: true, archive.PermGet: true}

// jsonMatch is one match of a QIDO-RS answer.
type jsonMatch map[string]struct {
	VR    string            `json:"vr"`
	Value []json.RawMessage `json:"Value"`
}

// str is the first value of tag (a PN's Alphabetic group), "" if none.
func (m jsonMatch) str(tag string) string {
	a, ok := m[tag]
	if !ok || len(a.Value) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(a.Value[0], &s) == nil {
		return s
	}
	var pn struct{ Alphabetic string }
	if json.Unmarshal(a.Value[0], &pn) == nil && pn.Alphabetic != "" {
		return pn.Alphabetic
	}
	return strings.Trim(string(a.Value[0]), `"`)
}

// values is every value of tag as text.
func (m jsonMatch) values(tag string) []string {
	var out []string
	for _, v := range m[tag].Value {
		out = append(out, strings.Trim(string(v), `"`))
	}
	return out
}

func get(t testing.TB, h http.Handler, target string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	rq := httptest.NewRequest(http.MethodGet, target, nil)
	rq.Header.Set("Authorization", "Bearer x")
	for i := 0; i+1 < len(hdr); i += 2 {
		rq.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, rq)
	return w
}

// qido runs a QIDO-RS request that must succeed and returns its matches.
func qido(t testing.TB, h http.Handler, target string) ([]jsonMatch, http.Header) {
	t.Helper()
	w := get(t, h, target)
	if w.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", target, w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/dicom+json" {
		t.Fatalf("GET %s: Content-Type %q", target, ct)
	}
	var ms []jsonMatch
	if err := json.Unmarshal(w.Body.Bytes(), &ms); err != nil {
		t.Fatalf("GET %s: %v: %s", target, err, w.Body)
	}
	return ms, w.Header()
}

func uids(ms []jsonMatch, tag string) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.str(tag))
	}
	slices.Sort(out)
	return out
}

const (
	tagStudyUID  = "0020000D"
	tagSeriesUID = "0020000E"
	tagSOPUID    = "00080018"
	tagName      = "00100010"
	tagRetrieve  = "00081190"
)

func TestQIDOMatching(t *testing.T) {
	h := newQIDOServer(t, viewerPerms, 1000)
	for _, c := range []struct {
		target string
		tag    string
		want   []string
	}{
		// Wildcards, case-insensitive PN, %2A decoded as '*'.
		{"/dicom-web/studies?PatientName=doe*", tagStudyUID, []string{uidRoot + "1", uidRoot + "3"}},
		{"/dicom-web/studies?PatientName=DOE%5EJ%2A", tagStudyUID, []string{uidRoot + "1", uidRoot + "3"}},
		{"/dicom-web/studies?PatientName=d?e^jane", tagStudyUID, []string{uidRoot + "3"}},
		// A name outside ASCII, in UTF-8 as URLs carry it, any case.
		{"/dicom-web/studies?PatientName=M%C3%BCller*", tagStudyUID, []string{uidRoot + "2"}},
		{"/dicom-web/studies?PatientName=m%C3%BCller%5Ej%C3%BCrgen", tagStudyUID, []string{uidRoot + "2"}},
		{"/dicom-web/studies?PatientName=M%C3%9CLLER*", tagStudyUID, []string{uidRoot + "2"}},
		// Date ranges, closed and open.
		{"/dicom-web/studies?StudyDate=20200101-20211231", tagStudyUID, []string{uidRoot + "1", uidRoot + "2"}},
		{"/dicom-web/studies?StudyDate=20210101-", tagStudyUID, []string{uidRoot + "2", uidRoot + "3"}},
		// UID lists, comma- or backslash-separated; by tag.
		{"/dicom-web/studies?StudyInstanceUID=" + uidRoot + "1," + uidRoot + "3", tagStudyUID, []string{uidRoot + "1", uidRoot + "3"}},
		{"/dicom-web/studies?0020000D=" + uidRoot + "1%5C" + uidRoot + "2", tagStudyUID, []string{uidRoot + "1", uidRoot + "2"}},
		{"/dicom-web/studies?PatientID=P1&ModalitiesInStudy=MR", tagStudyUID, []string{uidRoot + "1"}},
		{"/dicom-web/studies?PatientID=nobody", tagStudyUID, nil},
		// Every scope.
		{"/dicom-web/series?Modality=CT", tagSeriesUID, []string{uidRoot + "1.1", uidRoot + "3.1"}},
		{"/dicom-web/series?PatientName=doe*&Modality=MR", tagSeriesUID, []string{uidRoot + "1.2"}},
		{"/dicom-web/studies/" + uidRoot + "1/series", tagSeriesUID, []string{uidRoot + "1.1", uidRoot + "1.2"}},
		{"/dicom-web/studies/" + uidRoot + "1/series?Modality=MR", tagSeriesUID, []string{uidRoot + "1.2"}},
		{"/dicom-web/instances?PatientID=P3", tagSOPUID, []string{uidRoot + "3.1.1", uidRoot + "3.1.2"}},
		{"/dicom-web/instances?InstanceNumber=2", tagSOPUID, []string{uidRoot + "1.1.2", uidRoot + "3.1.2"}},
		{"/dicom-web/studies/" + uidRoot + "1/instances", tagSOPUID, []string{uidRoot + "1.1.1", uidRoot + "1.1.2", uidRoot + "1.2.1"}},
		{"/dicom-web/studies/" + uidRoot + "1/instances?Modality=CT", tagSOPUID, []string{uidRoot + "1.1.1", uidRoot + "1.1.2"}},
		{"/dicom-web/studies/" + uidRoot + "1/series/" + uidRoot + "1.1/instances", tagSOPUID, []string{uidRoot + "1.1.1", uidRoot + "1.1.2"}},
		{"/dicom-web/studies/" + uidRoot + "1/series/" + uidRoot + "1.1/instances?SOPInstanceUID=" + uidRoot + "1.1.2", tagSOPUID, []string{uidRoot + "1.1.2"}},
		// A sequence item attribute (indexed sequence).
		{"/dicom-web/series?PatientID=P1&00400275.00401001=nothing", tagSeriesUID, nil},
		{"/dicom-web/series?00400275.00401001=RP-P1", tagSeriesUID, []string{uidRoot + "1.2"}},
		{"/dicom-web/series?RequestAttributesSequence.RequestedProcedureID=rp-*", tagSeriesUID, nil}, // SH: case-sensitive
		{"/dicom-web/series?RequestAttributesSequence.RequestedProcedureID=RP-*", tagSeriesUID, []string{uidRoot + "1.2", uidRoot + "2.1"}},
		// OHIF's study list: a universal query with a limit, fuzzymatching
		// and series attributes asked for at study level (empty there).
		{"/dicom-web/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060", tagStudyUID, []string{uidRoot + "1", uidRoot + "2", uidRoot + "3"}},
		{"/dicom-web/studies?PatientName=*doe*&StudyDate=20200101-20221231&ModalitiesInStudy=CT&limit=25&includefield=00080060&includefield=00081030", tagStudyUID, []string{uidRoot + "1", uidRoot + "3"}},
		// fuzzymatching is accepted.
		{"/dicom-web/studies?PatientID=P2&fuzzymatching=false", tagStudyUID, []string{uidRoot + "2"}},
	} {
		ms, _ := qido(t, h, c.target)
		if got := uids(ms, c.tag); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.target, got, c.want)
		}
	}
}

func TestQIDOReturnAttributes(t *testing.T) {
	h := newQIDOServer(t, viewerPerms, 1000)
	// Study defaults, with the study-level attributes from the index.
	ms, _ := qido(t, h, "/dicom-web/studies?PatientID=P1")
	if len(ms) != 1 {
		t.Fatalf("%d matches", len(ms))
	}
	m := ms[0]
	for tag, want := range map[string]string{
		tagName:     "Doe^John",
		"00100020":  "P1",
		"00080020":  "20200115",
		"00080050":  "AP1",
		"00201206":  "2", // NumberOfStudyRelatedSeries
		"00201208":  "3", // NumberOfStudyRelatedInstances
		"00081030":  "Head",
		tagRetrieve: "http://example.com/dicom-web/studies/" + uidRoot + "1",
	} {
		if got := m.str(tag); got != want {
			t.Errorf("%s = %q, want %q", tag, got, want)
		}
	}
	if got := m.values("00080061"); !slices.Equal(got, []string{"CT", "MR"}) {
		t.Errorf("ModalitiesInStudy = %v", got)
	}
	for _, tag := range []string{"00080030", "00080090", "00100030", "00100040", "00200010", "00080056"} {
		if _, ok := m[tag]; !ok {
			t.Errorf("default attribute %s missing", tag)
		}
	}
	if _, ok := m["00080052"]; ok {
		t.Error("QueryRetrieveLevel returned")
	}
	if m[tagRetrieve].VR != "UR" {
		t.Errorf("RetrieveURL VR %q", m[tagRetrieve].VR)
	}
	// A name outside ASCII comes back as it was stored.
	ms, _ = qido(t, h, "/dicom-web/studies?PatientID=P2")
	if got := ms[0].str(tagName); got != "Müller^Jürgen" {
		t.Errorf("PatientName = %q", got)
	}
	// Series: series defaults and the study's attributes for /series.
	ms, _ = qido(t, h, "/dicom-web/series?PatientID=P1&Modality=CT")
	if len(ms) != 1 || ms[0].str("00201209") != "2" || ms[0].str("00080060") != "CT" || ms[0].str(tagName) != "Doe^John" ||
		ms[0].str(tagRetrieve) != "http://example.com/dicom-web/studies/"+uidRoot+"1/series/"+uidRoot+"1.1" {
		t.Errorf("series: %v", ms)
	}
	if _, ok := ms[0]["00400275"]; !ok {
		t.Error("RequestAttributesSequence missing from series defaults")
	}
	// The sequence comes back with its stored item's default attributes.
	w := get(t, h, "/dicom-web/series?PatientID=P1&Modality=MR")
	if !strings.Contains(w.Body.String(), `"00400275":{"vr":"SQ","Value":[{"00400009":{"vr":"SH","Value":["SPS-P1"]},"00401001":{"vr":"SH","Value":["RP-P1"]}}]}`) {
		t.Errorf("RequestAttributesSequence: %s", w.Body)
	}
	// Within a study, the study attributes are not repeated.
	ms, _ = qido(t, h, "/dicom-web/studies/"+uidRoot+"1/series?Modality=MR")
	if _, ok := ms[0][tagName]; ok || ms[0].str(tagStudyUID) != uidRoot+"1" {
		t.Errorf("series in a study: %v", ms[0])
	}
	// Instances.
	ms, _ = qido(t, h, "/dicom-web/studies/"+uidRoot+"1/series/"+uidRoot+"1.2/instances")
	if len(ms) != 1 || ms[0].str("00080016") != ctImage || ms[0].str("00200013") != "1" || ms[0].str(tagSeriesUID) != uidRoot+"1.2" ||
		ms[0].str(tagRetrieve) != "http://example.com/dicom-web/studies/"+uidRoot+"1/series/"+uidRoot+"1.2/instances/"+uidRoot+"1.2.1" {
		t.Errorf("instances: %v", ms)
	}
	// includefield: by keyword, by tag, comma-separated and repeated;
	// attributes Ward does not keep come back empty.
	ms, _ = qido(t, h, "/dicom-web/studies?PatientID=P1&includefield=PatientAge,00081030&includefield=SOPClassesInStudy")
	if _, ok := ms[0]["00101010"]; !ok || ms[0].str("00081030") != "Head" || ms[0].str("00080062") != ctImage {
		t.Errorf("includefield: %v", ms[0])
	}
	// Tags the dictionary does not know, and RetrieveURL by keyword or
	// tag, may be asked for.
	ms, _ = qido(t, h, "/dicom-web/studies?PatientID=P1&includefield=00081190&includefield=RetrieveURL,00083002")
	if len(ms) != 1 || ms[0].str(tagRetrieve) == "" {
		t.Errorf("includefield of tags outside the dictionary: %v", ms)
	}
	// includefield=all adds what the index keeps.
	ms, _ = qido(t, h, "/dicom-web/instances?PatientID=P3&includefield=all")
	if len(ms) != 2 || ms[0].str("00080062") != ctImage || ms[0].str("00080061") != "CT" || ms[0]["00180015"].VR != "CS" {
		t.Errorf("includefield=all: %v", ms[0])
	}
}

func TestQIDOLimitOffset(t *testing.T) {
	h := newQIDOServer(t, viewerPerms, 1000)
	for _, c := range []struct{ path, tag string }{
		{"/dicom-web/studies?", tagStudyUID},
		{"/dicom-web/series?", tagSeriesUID},
		{"/dicom-web/instances?", tagSOPUID},
		{"/dicom-web/studies/" + uidRoot + "1/instances?", tagSOPUID},
	} {
		all, hd := qido(t, h, c.path)
		if hd.Get("Warning") != "" {
			t.Errorf("%s: Warning %q without a cut", c.path, hd.Get("Warning"))
		}
		var paged []string
		for off := 0; off < len(all)+1; off++ {
			ms, hd := qido(t, h, c.path+"limit=1&offset="+strconv.Itoa(off))
			if off < len(all) && len(ms) != 1 || off == len(all) && len(ms) != 0 {
				t.Fatalf("%s offset %d: %d matches", c.path, off, len(ms))
			}
			more := off < len(all)-1
			if w := hd.Get("Warning"); (w != "") != more || more && !strings.Contains(w, "offset="+strconv.Itoa(off+1)) {
				t.Errorf("%s offset %d: Warning %q", c.path, off, w)
			}
			for _, m := range ms {
				paged = append(paged, m.str(c.tag))
			}
		}
		var whole []string
		for _, m := range all {
			whole = append(whole, m.str(c.tag))
		}
		if !slices.Equal(paged, whole) {
			t.Errorf("%s: pages %v, want %v", c.path, paged, whole)
		}
	}
	// The server's maximum cuts with a Warning that says so; a client's
	// limit does not raise it.
	h = newQIDOServer(t, viewerPerms, 2)
	for _, target := range []string{"/dicom-web/instances", "/dicom-web/instances?limit=5"} {
		ms, hd := qido(t, h, target)
		if len(ms) != 2 || !strings.Contains(hd.Get("Warning"), "maximum of 2") {
			t.Errorf("%s: %d matches, Warning %q", target, len(ms), hd.Get("Warning"))
		}
	}
}

func TestQIDOBadRequests(t *testing.T) {
	h := newQIDOServer(t, viewerPerms, 1000)
	many := strings.Repeat("includefield=PatientAge&", maxSearchParams+1)
	for _, c := range []struct {
		target string
		code   int
		hdr    []string
	}{
		{"/dicom-web/studies?foo=1", 400, nil},
		{"/dicom-web/studies?PatientNam=x", 400, nil},
		{"/dicom-web/studies?limit=-1", 400, nil},
		{"/dicom-web/studies?limit=0", 400, nil},
		{"/dicom-web/studies?limit=x", 400, nil},
		{"/dicom-web/studies?offset=1&offset=2", 400, nil},
		{"/dicom-web/studies?fuzzymatching=maybe", 400, nil},
		{"/dicom-web/studies?PatientID=a&PatientID=b", 400, nil},
		{"/dicom-web/studies?StudyDate=2020*", 400, nil},             // wildcard on a date
		{"/dicom-web/studies?StudyInstanceUID=1.2.*", 400, nil},      // wildcard on a UID
		{"/dicom-web/studies?SOPInstanceUID=1.2.3", 400, nil},        // below the level
		{"/dicom-web/studies?RequestAttributesSequence=x", 400, nil}, // a sequence without its item attribute
		{"/dicom-web/studies?00400275.00401001.00080100=x", 400, nil},
		{"/dicom-web/studies?Rows=512", 400, nil},
		{"/dicom-web/studies?00091010=x", 400, nil},
		{"/dicom-web/studies?includefield=FFFEE000", 400, nil},
		{"/dicom-web/studies?PatientID=" + strings.Repeat("x", maxSearchValue+1), 400, nil},
		{"/dicom-web/studies?" + many, 400, nil},
		{"/dicom-web/studies?includefield=NoSuchThing", 400, nil},
		{"/dicom-web/studies?PatientID=%zz", 400, nil},
		{"/dicom-web/studies?PatientName=M%FCller", 400, nil}, // Latin-1, not UTF-8
		{"/dicom-web/studies/1.2.x/series", 400, nil},
		{"/dicom-web/studies/" + uidRoot + "1/series?StudyInstanceUID=" + uidRoot + "2", 400, nil},
		{"/dicom-web/studies?PatientID=P1", 406, []string{"Accept", `application/dicom`}},
		{"/dicom-web/studies?PatientID=P1", 406, []string{"Accept", `multipart/related; type="application/dicom"`}},
		{"/dicom-web/studies?PatientID=P1", 400, []string{"Accept", `multipart/related; q=7`}},
		{"/dicom-web/studies?PatientID=P1", 200, []string{"Accept", "*/*"}},
		{"/dicom-web/studies?PatientID=P1", 200, []string{"Accept", "application/json"}},
		{"/dicom-web/studies?PatientID=P1", 200, []string{"Accept", `multipart/related; type="application/dicom+xml", application/dicom+json;q=0.5`}},
	} {
		w := get(t, h, c.target, c.hdr...)
		if w.Code != c.code {
			t.Errorf("%.80s: %d, want %d (%s)", c.target, w.Code, c.code, w.Body)
		}
		if c.code >= 400 && (w.Header().Get("Warning") == "" || strings.TrimSpace(w.Body.String()) == "") {
			t.Errorf("%.80s: no message", c.target)
		}
	}
	// fuzzymatching=true: matched literally, and said so.
	_, hd := qido(t, h, "/dicom-web/studies?PatientID=P1&fuzzymatching=true")
	if !strings.Contains(hd.Get("Warning"), "fuzzymatching") {
		t.Errorf("fuzzymatching=true: Warning %q", hd.Get("Warning"))
	}
	// An empty result is 200 with [].
	if w := get(t, h, "/dicom-web/studies?PatientID=nobody"); w.Code != 200 || strings.TrimSpace(w.Body.String()) != "[]" {
		t.Errorf("empty result: %d %q", w.Code, w.Body)
	}
}

// TestQIDOBulkQueryRule: listing follows the role. A principal with
// bulk-query lists every study; one without it must name a key that
// narrows the search (the C-FIND rule), else 403 with why.
func TestQIDOBulkQueryRule(t *testing.T) {
	h := newQIDOServer(t, archive.Permissions{archive.PermFind: true}, 1000)
	for _, target := range []string{"/dicom-web/studies", "/dicom-web/studies?limit=10", "/dicom-web/studies?PatientName=*", "/dicom-web/series", "/dicom-web/instances?Modality=CT"} {
		if w := get(t, h, target); w.Code != http.StatusForbidden || w.Header().Get("Warning") == "" {
			t.Errorf("%s without bulk-query: %d %s", target, w.Code, w.Body)
		}
	}
	if ms, _ := qido(t, h, "/dicom-web/studies?PatientID=P1"); len(ms) != 1 {
		t.Errorf("a narrowed search: %d matches", len(ms))
	}
	if ms, _ := qido(t, h, "/dicom-web/studies/"+uidRoot+"1/series"); len(ms) != 2 {
		t.Errorf("series of a study: %d matches", len(ms))
	}
	h = newQIDOServer(t, viewerPerms, 1000)
	if ms, _ := qido(t, h, "/dicom-web/studies?limit=25"); len(ms) != 3 {
		t.Errorf("with bulk-query: %d studies", len(ms))
	}
}

func TestQIDOGzip(t *testing.T) {
	h := newQIDOServer(t, viewerPerms, 1000)
	plain := get(t, h, "/dicom-web/studies")
	w := get(t, h, "/dicom-web/studies", "Accept-Encoding", "gzip, deflate")
	if w.Code != 200 || w.Header().Get("Content-Encoding") != "gzip" || !strings.Contains(w.Header().Get("Vary"), "Accept-Encoding") {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	zr, err := gzip.NewReader(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(b, plain.Body.Bytes()) {
		t.Fatalf("gunzipped answer differs: %v", err)
	}
	if plain.Header().Get("Content-Encoding") != "" {
		t.Error("compressed without Accept-Encoding")
	}
}

func FuzzParseSearch(f *testing.F) {
	for _, s := range []string{
		"", "PatientName=doe*&limit=10&offset=5", "includefield=all&fuzzymatching=true",
		"StudyInstanceUID=1.2.3,1.2.4&includefield=00081030,PatientAge", "StudyDate=20200101-",
		"00400275.00401001=x", "PatientName=M%C3%BCller", "a=1&a=2", "limit=99999999999999999999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		sr, err := parseSearch(seriesLevel, Target{Study: "1.2.3"}, raw)
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) || he.code != http.StatusBadRequest {
				t.Fatalf("not a parameter error: %v", err)
			}
			return
		}
		if sr.limit < 0 || sr.offset < 0 || len(sr.identifier.Elements) > 2*maxIncludeFields+64 {
			t.Fatalf("unbounded: %+v", sr)
		}
		if _, err := sr.identifier.MarshalJSON(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestQIDOXML: multipart/related; type="application/dicom+xml" answers one
// Native DICOM Model part per match (PS3.19 A.1), the same values as JSON.
func TestQIDOXML(t *testing.T) {
	h := newQIDOServer(t, viewerPerms, 1000)
	w := get(t, h, "/dicom-web/studies?PatientName=*&StudyDate=20200101-20211231", "Accept", `multipart/related; type="application/dicom+xml"`)
	mt, params, err := mime.ParseMediaType(w.Header().Get("Content-Type"))
	if w.Code != 200 || err != nil || mt != "multipart/related" || params["type"] != "application/dicom+xml" {
		t.Fatalf("%d %q %v", w.Code, w.Header().Get("Content-Type"), err)
	}
	type attr struct {
		Tag     string   `xml:"tag,attr"`
		VR      string   `xml:"vr,attr"`
		Keyword string   `xml:"keyword,attr"`
		Values  []string `xml:"Value"`
		PN      []struct {
			Family string `xml:"Alphabetic>FamilyName"`
			Given  string `xml:"Alphabetic>GivenName"`
		} `xml:"PersonName"`
	}
	type model struct {
		Attrs []attr `xml:"DicomAttribute"`
	}
	mr := multipart.NewReader(w.Body, params["boundary"])
	names := map[string]string{}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ct := p.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/dicom+xml") {
			t.Errorf("part Content-Type %q", ct)
		}
		var m model
		if err := xml.NewDecoder(p).Decode(&m); err != nil {
			t.Fatal(err)
		}
		var study, name string
		for _, a := range m.Attrs {
			switch a.Tag {
			case tagStudyUID:
				if a.Keyword != "StudyInstanceUID" || len(a.Values) != 1 {
					t.Errorf("StudyInstanceUID: %+v", a)
				}
				study = a.Values[0]
			case tagName:
				if len(a.PN) == 1 {
					name = a.PN[0].Family + "^" + a.PN[0].Given
				}
			case "00080061":
				if study == uidRoot+"1" && strings.Join(a.Values, ",") != "CT,MR" {
					t.Errorf("ModalitiesInStudy %v", a.Values)
				}
			}
		}
		names[study] = name
	}
	if len(names) != 2 || names[uidRoot+"1"] != "Doe^John" || names[uidRoot+"2"] != "Müller^Jürgen" {
		t.Errorf("XML matches: %v", names)
	}
	// An XML answer with no match is an empty multipart body.
	w = get(t, h, "/dicom-web/studies?PatientID=nobody", "Accept", `multipart/related; type="application/dicom+xml"`)
	if w.Code != 200 || !strings.HasSuffix(strings.TrimSpace(w.Body.String()), "--") {
		t.Errorf("empty XML answer: %d %q", w.Code, w.Body)
	}
}

func FuzzMatchXML(f *testing.F) {
	f.Add([]byte(`{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^John"}]},"00081110":{"vr":"SQ","Value":[{"00081150":{"vr":"UI","Value":["1.2"]}}]},"00280010":{"vr":"US","Value":[512]}}`))
	f.Add([]byte(`{"7FE00010":{"vr":"OB","InlineBinary":"AAEC"}}`))
	f.Fuzz(func(t *testing.T, js []byte) {
		x, err := matchXML(js)
		if err != nil {
			return
		}
		d := xml.NewDecoder(bytes.NewReader(x))
		for {
			if _, err := d.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("not XML: %v\n%s", err, x)
			}
		}
	})
}
