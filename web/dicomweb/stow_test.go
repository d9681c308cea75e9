package dicomweb

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/store/fsblob"
	"github.com/ward-pacs/ward/store/sqlite"
	"github.com/ward-pacs/ward/web"
)

const pydicomFiles = "/usr/lib/python3/dist-packages/pydicom/data/test_files"

// pydicomFile reads a pydicom test file (skipped, or failed under
// CI=true, when pydicom's data is missing).
func pydicomFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pydicomFiles, name))
	if err != nil {
		testci.SkipOrFail(t, "pydicom test file: %v", err)
	}
	return b
}

// fixedAuth authenticates every request as p.
type fixedAuth struct{ p *archive.Principal }

func (a fixedAuth) Authenticate(*http.Request) (*archive.Principal, error) { return a.p, nil }

// stowFixture is a DICOMweb server over a real archive (sqlite index,
// fsblob store) in a temporary directory.
type stowFixture struct {
	ar  *archive.Archive
	idx *sqlite.DB
	srv *httptest.Server
}

func newStowFixture(t *testing.T, perms archive.Permissions, maxBody int64) *stowFixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	idx, err := sqlite.Open(ctx, filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	bs, err := fsblob.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close(); idx.Close() })
	ar := &archive.Archive{Index: idx, Blobs: bs}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ar.Close)
	p := &archive.Principal{Kind: archive.User, Name: "tester", Grant: perms}
	h := web.New(web.Config{Authenticator: fixedAuth{p}, MaxBody: maxBody})
	Register(h, ar, Options{})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &stowFixture{ar: ar, idx: idx, srv: srv}
}

var canStore = archive.Permissions{archive.PermStore: true}

type part struct {
	ctype string // "" : no Content-Type header
	data  []byte
}

func dicomPart(b []byte) part { return part{ctype: "application/dicom", data: b} }

func multipartBody(boundary string, parts ...part) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n")
		if p.ctype != "" {
			b.WriteString("Content-Type: " + p.ctype + "\r\n")
		}
		b.WriteString("\r\n")
		b.Write(p.data)
		b.WriteString("\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return b.Bytes()
}

// stowAnswer is a decoded Store Instances Response.
type stowAnswer struct {
	status   int
	warnings []string
	url      string
	stored   []map[string]string // ReferencedSOPClassUID/InstanceUID, RetrieveURL
	failed   []map[string]string // ... and FailureReason as %04X
}

func (f *stowFixture) post(t *testing.T, path, ctype string, body io.Reader, contentLength int64) *stowAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = contentLength
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Accept", "application/dicom+json")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := &stowAnswer{status: resp.StatusCode, warnings: resp.Header.Values("Warning")}
	if resp.Header.Get("Content-Type") != "application/dicom+json" {
		return a
	}
	var ds map[string]struct {
		VR    string            `json:"vr"`
		Value []json.RawMessage `json:"Value"`
	}
	if err := json.Unmarshal(raw, &ds); err != nil {
		t.Fatalf("answer %s: %v", raw, err)
	}
	str := func(v []json.RawMessage) string {
		if len(v) == 0 {
			return ""
		}
		var s string
		if json.Unmarshal(v[0], &s) == nil {
			return s
		}
		var n int
		_ = json.Unmarshal(v[0], &n)
		return fmt.Sprintf("%04X", n)
	}
	a.url = str(ds["00081190"].Value)
	items := func(tag string) []map[string]string {
		var out []map[string]string
		for _, raw := range ds[tag].Value {
			var it map[string]struct {
				Value []json.RawMessage `json:"Value"`
			}
			if err := json.Unmarshal(raw, &it); err != nil {
				t.Fatal(err)
			}
			m := map[string]string{}
			for k, v := range it {
				m[k] = str(v.Value)
			}
			out = append(out, m)
		}
		return out
	}
	a.stored, a.failed = items("00081199"), items("00081198")
	return a
}

func (f *stowFixture) postBytes(t *testing.T, path, ctype string, body []byte) *stowAnswer {
	return f.post(t, path, ctype, bytes.NewReader(body), int64(len(body)))
}

// dataSetOf is the data set of a Part 10 file (after its meta).
func dataSetOf(t *testing.T, file []byte) []byte {
	t.Helper()
	_, br, err := dicom.ReadFileHeader(bytes.NewReader(file), dicom.DefaultMetaLimit)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func uidsOf(t *testing.T, file []byte) (class, inst, study string) {
	t.Helper()
	meta, br, err := dicom.ReadFileHeader(bytes.NewReader(file), dicom.DefaultMetaLimit)
	if err != nil {
		t.Fatal(err)
	}
	ts := dicom.LookupTransferSyntax(meta.TransferSyntaxUID)
	ds, err := dicom.ReadDataSet(br, ts, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	return meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, ds.String(dicom.StudyInstanceUID)
}

// checkStored checks the archive holds file's object, its data set
// byte for byte.
func (f *stowFixture) checkStored(t *testing.T, file []byte) {
	t.Helper()
	_, inst, _ := uidsOf(t, file)
	req := &archive.RetrieveRequest{Model: archive.StudyRoot, Identifier: &dicom.DataSet{}}
	req.Identifier.Set(dicom.QueryRetrieveLevel, "IMAGE")
	_, _, study := uidsOf(t, file)
	req.Identifier.Set(dicom.StudyInstanceUID, study)
	req.Identifier.Set(dicom.SOPInstanceUID, inst)
	found := false
	err := f.ar.Retrieve(context.Background(), req, func(in *archive.Instance) error {
		rc, err := in.Open(context.Background())
		if err != nil {
			return err
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, dataSetOf(t, file)) {
			t.Errorf("instance %s: stored data set differs from the one sent", inst)
		}
		found = true
		return nil
	})
	if err != nil || !found {
		t.Fatalf("instance %s not retrievable: %v", inst, err)
	}
}

func (f *stowFixture) checkAbsent(t *testing.T, file []byte) {
	t.Helper()
	_, inst, _ := uidsOf(t, file)
	if _, err := f.idx.Get(context.Background(), inst); err == nil {
		t.Errorf("instance %s stored, want refused", inst)
	}
}

func TestStowQuotedBoundary(t *testing.T) {
	ct, mr := pydicomFile(t, "CT_small.dcm"), pydicomFile(t, "MR_small.dcm")
	f := newStowFixture(t, canStore, 1<<30)
	a := f.postBytes(t, Root+"/studies", `multipart/related; type="application/dicom"; boundary="ward test:1"`,
		multipartBody("ward test:1", dicomPart(ct), dicomPart(mr)))
	if a.status != http.StatusOK || len(a.stored) != 2 || len(a.failed) != 0 {
		t.Fatalf("answer %+v", a)
	}
	for i, file := range [][]byte{ct, mr} {
		class, inst, study := uidsOf(t, file)
		it := a.stored[i]
		if it["00081150"] != class || it["00081155"] != inst || !strings.HasPrefix(it["00081190"], f.srv.URL+Root+"/studies/"+study+"/series/") ||
			!strings.HasSuffix(it["00081190"], "/instances/"+inst) {
			t.Errorf("item %d = %v", i, it)
		}
		f.checkStored(t, file)
	}
}

// Orthanc sends the boundary and type unquoted; a chunked body (no
// Content-Length) streams through.
func TestStowUnquotedChunked(t *testing.T) {
	ct := pydicomFile(t, "CT_small.dcm")
	f := newStowFixture(t, canStore, 1<<30)
	pr, pw := io.Pipe()
	go func() {
		body := multipartBody("----=_Part_7", part{data: ct}) // no part Content-Type: the root type
		for len(body) > 0 {
			n := min(len(body), 1000)
			if _, err := pw.Write(body[:n]); err != nil {
				return
			}
			body = body[n:]
		}
		pw.Close()
	}()
	a := f.post(t, Root+"/studies", `multipart/related; type=application/dicom; boundary=----=_Part_7`, pr, -1)
	_, _, study := uidsOf(t, ct)
	if a.status != http.StatusOK || len(a.stored) != 1 || a.url != f.srv.URL+Root+"/studies/"+study {
		t.Fatalf("answer %+v", a)
	}
	f.checkStored(t, ct)
}

// A corrupt part among good ones fails alone: 202, listed with its
// reason; the good ones are stored.
func TestStowCorruptPart(t *testing.T) {
	ct, mr := pydicomFile(t, "CT_small.dcm"), pydicomFile(t, "MR_small.dcm")
	corrupt := append([]byte(nil), mr[:600]...) // meta intact, data set cut
	f := newStowFixture(t, canStore, 1<<30)
	garbage := bytes.Repeat([]byte("not dicom "), 20)
	a := f.postBytes(t, Root+"/studies", `multipart/related; type="application/dicom"; boundary=b1`,
		multipartBody("b1", dicomPart(ct), dicomPart(corrupt), dicomPart(garbage)))
	if a.status != http.StatusAccepted || len(a.stored) != 1 || len(a.failed) != 2 {
		t.Fatalf("answer %+v", a)
	}
	_, inst, _ := uidsOf(t, mr)
	if a.failed[0]["00081155"] != inst || a.failed[0]["00081197"] != "C000" || a.failed[1]["00081197"] != "C000" {
		t.Errorf("failed = %v", a.failed)
	}
	if len(a.warnings) != 2 || !strings.Contains(a.warnings[0], "part 2") {
		t.Errorf("warnings = %q", a.warnings)
	}
	f.checkStored(t, ct)
	f.checkAbsent(t, mr)

	// Nothing stored: 409.
	a = f.postBytes(t, Root+"/studies", `multipart/related; boundary=b1`, multipartBody("b1", dicomPart(garbage)))
	if a.status != http.StatusConflict || len(a.failed) != 1 {
		t.Fatalf("answer %+v", a)
	}
}

// POST /studies/{study}: an instance of another study is refused (A900)
// and not stored.
func TestStowStudyMismatch(t *testing.T) {
	ct, mr := pydicomFile(t, "CT_small.dcm"), pydicomFile(t, "MR_small.dcm")
	_, _, study := uidsOf(t, ct)
	if _, _, s2 := uidsOf(t, mr); s2 == study {
		t.Fatal("test files share a study")
	}
	f := newStowFixture(t, canStore, 1<<30)
	a := f.postBytes(t, Root+"/studies/"+study, `multipart/related; type="application/dicom"; boundary=b2`,
		multipartBody("b2", dicomPart(ct), dicomPart(mr)))
	if a.status != http.StatusAccepted || len(a.stored) != 1 || len(a.failed) != 1 || a.failed[0]["00081197"] != "A900" ||
		a.url != f.srv.URL+Root+"/studies/"+study {
		t.Fatalf("answer %+v", a)
	}
	if !strings.Contains(a.warnings[0], "StudyInstanceUID") {
		t.Errorf("warnings = %q", a.warnings)
	}
	f.checkStored(t, ct)
	f.checkAbsent(t, mr)
}

// The body limit: a chunked body over it is cut with 413, as is one whose
// Content-Length says so.
func TestStowBodyLimit(t *testing.T) {
	ct := pydicomFile(t, "CT_small.dcm")
	f := newStowFixture(t, canStore, int64(len(ct))/2)
	body := multipartBody("b3", dicomPart(ct))
	a := f.post(t, Root+"/studies", `multipart/related; type="application/dicom"; boundary=b3`, io.MultiReader(bytes.NewReader(body)), -1)
	if a.status != http.StatusRequestEntityTooLarge || len(a.warnings) == 0 || !strings.Contains(a.warnings[0], "max_body") {
		t.Fatalf("chunked: %+v", a)
	}
	a = f.postBytes(t, Root+"/studies", `multipart/related; type="application/dicom"; boundary=b3`, body)
	if a.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("with Content-Length: %+v", a)
	}
	f.checkAbsent(t, ct)
}

func TestStowTooManyParts(t *testing.T) {
	f := newStowFixture(t, canStore, 1<<30)
	parts := make([]part, maxStowParts+1)
	for i := range parts {
		parts[i] = part{ctype: "text/plain", data: []byte("x")}
	}
	a := f.postBytes(t, Root+"/studies", `multipart/related; boundary=b4`, multipartBody("b4", parts...))
	if a.status != http.StatusRequestEntityTooLarge || !strings.Contains(strings.Join(a.warnings, ""), "parts") {
		t.Fatalf("answer %+v", a)
	}
}

func TestStowRequestRefused(t *testing.T) {
	ct := pydicomFile(t, "CT_small.dcm")
	f := newStowFixture(t, canStore, 1<<30)
	body := multipartBody("b5", dicomPart(ct))
	for _, c := range []struct {
		name, path, ctype string
		body              []byte
		want              int
	}{
		{"metadata parts", Root + "/studies", `multipart/related; type="application/dicom+json"; boundary=b5`, body, http.StatusUnsupportedMediaType},
		{"xml parts", Root + "/studies", `multipart/related; type=application/dicom+xml; boundary=b5`, body, http.StatusUnsupportedMediaType},
		{"not multipart", Root + "/studies", `application/dicom`, ct, http.StatusUnsupportedMediaType},
		{"no content type", Root + "/studies", ``, body, http.StatusUnsupportedMediaType},
		{"no boundary", Root + "/studies", `multipart/related; type="application/dicom"`, body, http.StatusBadRequest},
		{"wrong boundary", Root + "/studies", `multipart/related; type="application/dicom"; boundary=other`, body, http.StatusBadRequest},
		{"no part", Root + "/studies", `multipart/related; boundary=b5`, []byte("--b5--\r\n"), http.StatusBadRequest},
		{"bad study UID", Root + "/studies/1.2.x", `multipart/related; boundary=b5`, body, http.StatusBadRequest},
		{"truncated", Root + "/studies", `multipart/related; boundary=b5`, body[:len(body)/2], http.StatusBadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			if a := f.postBytes(t, c.path, c.ctype, c.body); a.status != c.want || len(a.warnings) == 0 {
				t.Errorf("status %d (%q), want %d", a.status, a.warnings, c.want)
			}
		})
	}
	f.checkAbsent(t, ct)
}

// A principal that may not store (a viewer, a read-scope token) gets 403,
// and nothing is stored.
func TestStowNotAuthorized(t *testing.T) {
	ct := pydicomFile(t, "CT_small.dcm")
	p := archive.Permissions{archive.PermFind: true, archive.PermGet: true}
	ctx := context.Background()
	dir := t.TempDir()
	idx, err := sqlite.Open(ctx, filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	bs, err := fsblob.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	ar := &archive.Archive{Index: idx, Blobs: bs}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer ar.Close()
	h := web.New(web.Config{Authenticator: fixedAuth{&archive.Principal{Kind: archive.User, Name: "viewer", Grant: p}}, MaxBody: 1 << 30})
	Register(h, permChecked{ar}, Options{})
	srv := httptest.NewServer(h)
	defer srv.Close()
	f := &stowFixture{ar: ar, idx: idx, srv: srv}
	a := f.postBytes(t, Root+"/studies", `multipart/related; type="application/dicom"; boundary=b6`, multipartBody("b6", dicomPart(ct), dicomPart(ct)))
	if a.status != http.StatusForbidden {
		t.Fatalf("answer %+v", a)
	}
	f.checkAbsent(t, ct)
}

// permChecked checks the store permission as internal/server's policy
// wrapper does.
type permChecked struct{ archive.Service }

func (p permChecked) Store(ctx context.Context, r *archive.StoreRequest) (*archive.Stored, error) {
	if !archive.PrincipalFrom(ctx).Allows(archive.PermStore) {
		return nil, archive.Fail(archive.ErrNotAuthorized, "not authorized: store")
	}
	return p.Service.Store(ctx, r)
}

func TestStowXMLAnswer(t *testing.T) {
	ct := pydicomFile(t, "CT_small.dcm")
	f := newStowFixture(t, canStore, 1<<30)
	body := multipartBody("b7", dicomPart(ct), dicomPart([]byte("junk")))
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+Root+"/studies", bytes.NewReader(body))
	req.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=b7`)
	req.Header.Set("Accept", "application/dicom+xml")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	_, inst, _ := uidsOf(t, ct)
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Content-Type") != "application/dicom+xml" ||
		!bytes.Contains(raw, []byte(`<DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence"><Item number="1">`)) ||
		!bytes.Contains(raw, []byte(`<Value number="1">`+inst+`</Value>`)) ||
		!bytes.Contains(raw, []byte(`keyword="FailureReason"><Value number="1">49152</Value>`)) {
		t.Fatalf("%d %s", resp.StatusCode, raw)
	}
	req.Header.Set("Accept", "image/png")
	req.Body = io.NopCloser(bytes.NewReader(body))
	resp2, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusNotAcceptable {
		t.Errorf("Accept image/png: %d", resp2.StatusCode)
	}
}

// Every domain error has a failure reason, and the reasons are PS3.18
// Table I.2-2's (or PS3.7 Annex C general statuses).
func TestFailureReasonTable(t *testing.T) {
	allowed := map[uint16]bool{0x0110: true, 0x0111: true, 0x0122: true, 0x0124: true, 0xC122: true}
	for _, k := range archive.Kinds {
		code, ok := failureReasons[k]
		if !ok {
			t.Errorf("%v: no failure reason", k)
			continue
		}
		if !allowed[code] && code&0xFF00 != 0xA700 && code&0xFF00 != 0xA900 && code&0xF000 != 0xC000 {
			t.Errorf("%v: %04X is not a STOW-RS failure reason", k, code)
		}
	}
}

func TestParseContentType(t *testing.T) {
	for _, c := range []struct {
		in, typ, boundary, ptype string
	}{
		{`multipart/related; type="application/dicom"; boundary="a b"`, "multipart/related", "a b", "application/dicom"},
		{`Multipart/Related;type=application/dicom;boundary=----=_Part_0`, "multipart/related", "----=_Part_0", "application/dicom"},
		{`multipart/related; boundary="q\"x"`, "multipart/related", `q"x`, ""},
	} {
		typ, p, err := parseContentType(c.in)
		if err != nil || typ != c.typ || p["boundary"] != c.boundary || p["type"] != c.ptype {
			t.Errorf("%q: %q %v %v", c.in, typ, p, err)
		}
	}
	for _, bad := range []string{``, `multipart`, `a/b; x`, `a/b; boundary="x`, `a/b; b=1; b=2`, `a/b; =x`} {
		if _, _, err := parseContentType(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if validBoundary("") || validBoundary(strings.Repeat("a", 71)) || validBoundary("a ") || validBoundary("a\x00") || !validBoundary("----=_Part_0") {
		t.Error("validBoundary")
	}
}

// drainService stores nothing: it reads each object to its end, as the
// archive does, so that a fuzzed body runs the whole reading path
// without a disk.
type drainService struct{ archive.Service }

func (drainService) Store(ctx context.Context, r *archive.StoreRequest) (*archive.Stored, error) {
	if _, err := io.Copy(io.Discard, r.Data); err != nil {
		return &archive.Stored{}, archive.Failf(archive.ErrCannotUnderstand, "cannot read: %w", err)
	}
	return &archive.Stored{StudyInstanceUID: "1.2", SeriesInstanceUID: "1.2.3"}, nil
}

// FuzzStowBody runs STOW-RS bodies (seeded with real ones in
// testdata/stow) through the handler: it must answer every one with a
// status, never panic or hang, and read at most the body limit.
func FuzzStowBody(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/stow/*.mpr")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	h := web.New(web.Config{Authenticator: fixedAuth{&archive.Principal{Kind: archive.User, Name: "f", Grant: canStore}}, MaxBody: 1 << 20})
	Register(h, drainService{}, Options{})
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, Root+"/studies", bytes.NewReader(body))
		req.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=ward-seed-1`)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusAccepted, http.StatusConflict, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body.Bytes())
		}
	})
}

func FuzzParseContentType(f *testing.F) {
	for _, s := range []string{`multipart/related; type="application/dicom"; boundary="x y"`, `multipart/related;type=application/dicom;boundary=----=_Part_1`, `a/b; c="d\"e"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		typ, p, err := parseContentType(s)
		if err == nil && (typ == "" || len(p) > maxContentTypeParams) {
			t.Fatalf("%q: %q %v", s, typ, p)
		}
	})
}

// part10 encodes ds as a Part 10 file with the transfer syntax UID ts in
// its meta (the data set in Explicit VR Little Endian).
func part10File(t *testing.T, ds *dicom.DataSet, ts string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := dicom.WriteFileHeader(&b, &dicom.FileMeta{MediaStorageSOPClassUID: ds.String(dicom.SOPClassUID),
		MediaStorageSOPInstanceUID: ds.String(dicom.SOPInstanceUID), TransferSyntaxUID: ts}); err != nil {
		t.Fatal(err)
	}
	body, err := ds.Bytes(dicom.ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	b.Write(body)
	return b.Bytes()
}

// Parts refused before they reach the archive, each with its reason: a
// bare data set (no File Meta Information), a SOP class that is not a
// storage one, a transfer syntax UID that is not a UID.
func TestStowPartRefusals(t *testing.T) {
	noMeta := pydicomFile(t, "no_meta.dcm")
	f := newStowFixture(t, canStore, 1<<30)
	ds := &dicom.DataSet{}
	ds.Set(dicom.SOPClassUID, "1.2.840.10008.1.1") // Verification
	ds.Set(dicom.SOPInstanceUID, "1.2.826.0.1.3680043.10.998.1")
	ds.Set(dicom.StudyInstanceUID, "1.2.826.0.1.3680043.10.998.2")
	ds.Set(dicom.SeriesInstanceUID, "1.2.826.0.1.3680043.10.998.3")
	verification := part10File(t, ds, dicom.ExplicitVRLittleEndian.UID)
	badTS := bytes.Replace(verification, []byte(dicom.ExplicitVRLittleEndian.UID+"\x00"), []byte("1.2.840.10008.x.2.1\x00"), 1)
	a := f.postBytes(t, Root+"/studies", `multipart/related; boundary=b8`, multipartBody("b8", dicomPart(noMeta), dicomPart(verification), dicomPart(badTS)))
	if a.status != http.StatusConflict || len(a.failed) != 3 {
		t.Fatalf("answer %+v", a)
	}
	for i, want := range []string{"C000", "0122", "C122"} {
		if got := a.failed[i]["00081197"]; got != want {
			t.Errorf("part %d: failure reason %s, want %s (%q)", i+1, got, want, a.warnings)
		}
	}
	if a.failed[1]["00081155"] != "1.2.826.0.1.3680043.10.998.1" {
		t.Errorf("failed item = %v", a.failed[1])
	}
}

// A re-sent instance follows storage.on_duplicate: refused with 0111
// under "reject"; listed as stored, with its Retrieve URL, under "keep".
func TestStowDuplicate(t *testing.T) {
	ct := pydicomFile(t, "CT_small.dcm")
	f := newStowFixture(t, canStore, 1<<30)
	body := multipartBody("b9", dicomPart(ct))
	const ctype = `multipart/related; type="application/dicom"; boundary=b9`
	if a := f.postBytes(t, Root+"/studies", ctype, body); a.status != http.StatusOK {
		t.Fatalf("first: %+v", a)
	}
	f.ar.OnDuplicate = archive.DuplicateReject
	if a := f.postBytes(t, Root+"/studies", ctype, body); a.status != http.StatusConflict || len(a.failed) != 1 || a.failed[0]["00081197"] != "0111" {
		t.Fatalf("reject: %+v", a)
	}
	f.ar.OnDuplicate = archive.DuplicateKeep
	_, inst, study := uidsOf(t, ct)
	a := f.postBytes(t, Root+"/studies", ctype, body)
	if a.status != http.StatusOK || len(a.stored) != 1 || !strings.HasSuffix(a.stored[0]["00081190"], "/instances/"+inst) || a.url != f.srv.URL+Root+"/studies/"+study {
		t.Fatalf("keep: %+v", a)
	}
	f.checkStored(t, ct)
}

// A part header over maxPartHeader ends the request: 400 when nothing was
// stored; after a stored instance, 202 with a Warning that says so.
func TestStowPartHeaderBound(t *testing.T) {
	ct := pydicomFile(t, "CT_small.dcm")
	f := newStowFixture(t, canStore, 1<<30)
	huge := part{ctype: "application/dicom\r\nX-Padding: " + strings.Repeat("a", 3*maxPartHeader), data: ct}
	const ctype = `multipart/related; boundary=b10`
	a := f.postBytes(t, Root+"/studies", ctype, multipartBody("b10", huge))
	if a.status != http.StatusBadRequest || !strings.Contains(strings.Join(a.warnings, ""), "part header over") {
		t.Fatalf("alone: %+v", a)
	}
	a = f.postBytes(t, Root+"/studies", ctype, multipartBody("b10", dicomPart(ct), huge))
	if a.status != http.StatusAccepted || len(a.stored) != 1 || !strings.Contains(strings.Join(a.warnings, ""), "broke off") {
		t.Fatalf("after a stored one: %+v", a)
	}
	// Bodies larger than the buffer and the header bound, skipped unread,
	// do not count against the next header.
	big := make([]byte, 4*maxPartHeader)
	a = f.postBytes(t, Root+"/studies", ctype, multipartBody("b10", part{ctype: "text/plain", data: big}, dicomPart(ct)))
	if a.status != http.StatusAccepted || len(a.stored) != 1 || len(a.failed) != 1 {
		t.Fatalf("skipped body: %+v", a)
	}
}

// refusalCounter is a service that counts the parts refused before they
// reached it (the audit trail records them as failed stores).
type refusalCounter struct {
	drainService
	refusals []*archive.Refusal
}

func (c *refusalCounter) Refused(ctx context.Context, r *archive.Refusal) {
	c.refusals = append(c.refusals, r)
}

func TestStowRefusalsReported(t *testing.T) {
	svc := &refusalCounter{}
	h := web.New(web.Config{Authenticator: fixedAuth{&archive.Principal{Kind: archive.User, Name: "u", Grant: canStore}}, MaxBody: 1 << 20})
	Register(h, svc, Options{})
	seed, err := os.ReadFile("testdata/stow/two-crlf.mpr")
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Replace(seed, []byte("--ward-seed-1--\r\n"), []byte("--ward-seed-1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--ward-seed-1\r\n\r\nDICMnot really\r\n--ward-seed-1--\r\n"), 1)
	req := httptest.NewRequest(http.MethodPost, Root+"/studies", bytes.NewReader(body))
	req.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=ward-seed-1`)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted || len(svc.refusals) != 2 || svc.refusals[0].Op != archive.RefusedStore || !strings.Contains(svc.refusals[0].Comment, "text/plain") {
		t.Fatalf("%d %s; refusals %+v", rec.Code, rec.Body.Bytes(), svc.refusals)
	}
}
