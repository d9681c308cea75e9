package dicomweb

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/web"
)

// The WADO-RS retrieve and WADO-URI handlers over a real archive (sqlite
// index, file blobs), through the web front end, with a service that
// records every instance's reported delivery as the audit trail would.

const (
	tStudy  = "1.2.826.0.1.3680043.10.1432.16.1"
	tSeries = "1.2.826.0.1.3680043.10.1432.16.1.1"
	tOther  = "1.2.826.0.1.3680043.10.1432.16.1.2"
	tImpl   = "1.2.826.0.1.3680043.10.1432.16.1.1.1" // implicit VR LE
	tExpl   = "1.2.826.0.1.3680043.10.1432.16.1.1.2" // explicit VR LE
	tJPEG   = "1.2.826.0.1.3680043.10.1432.16.1.2.1" // JPEG baseline, in tOther
	scClass = "1.2.840.10008.5.1.4.1.1.7"
	jpegTS  = "1.2.840.10008.1.2.4.50"
)

func us(v uint16) []byte { return []byte{byte(v), byte(v >> 8)} }

// testObject is a small secondary capture image: 2×2 16-bit native pixel
// data, or one 8-bit JPEG fragment when encapsulated.
func testObject(t *testing.T, series, sop string, ts *dicom.TransferSyntax) []byte {
	t.Helper()
	ds := &dicom.DataSet{}
	ds.Set(dicom.SOPClassUID, scClass)
	ds.Set(dicom.SOPInstanceUID, sop)
	ds.Set(dicom.StudyInstanceUID, tStudy)
	ds.Set(dicom.SeriesInstanceUID, series)
	ds.Set(dicom.PatientID, "WADO-1")
	ds.Set(dicom.PatientName, "Test^Wado")
	ds.Set(dicom.Modality, "OT")
	ds.Put(&dicom.Element{Tag: dicom.SamplesPerPixel, VR: "US", Value: us(1)})
	ds.Set(dicom.PhotometricInterpretation, "MONOCHROME2")
	ds.Put(&dicom.Element{Tag: dicom.Rows, VR: "US", Value: us(2)})
	ds.Put(&dicom.Element{Tag: dicom.Columns, VR: "US", Value: us(2)})
	if ts.Encapsulated {
		ds.Put(&dicom.Element{Tag: dicom.BitsAllocated, VR: "US", Value: us(8)})
		ds.Put(&dicom.Element{Tag: dicom.BitsStored, VR: "US", Value: us(8)})
		ds.Put(&dicom.Element{Tag: dicom.HighBit, VR: "US", Value: us(7)})
		ds.Put(&dicom.Element{Tag: dicom.PixelRepresentation, VR: "US", Value: us(0)})
		ds.Put(&dicom.Element{Tag: dicom.PixelData, VR: "OB", Undefined: true,
			Fragments: [][]byte{{}, {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0xFF, 0xD9}}})
	} else {
		ds.Put(&dicom.Element{Tag: dicom.BitsAllocated, VR: "US", Value: us(16)})
		ds.Put(&dicom.Element{Tag: dicom.BitsStored, VR: "US", Value: us(16)})
		ds.Put(&dicom.Element{Tag: dicom.HighBit, VR: "US", Value: us(15)})
		ds.Put(&dicom.Element{Tag: dicom.PixelRepresentation, VR: "US", Value: us(0)})
		ds.Put(&dicom.Element{Tag: dicom.PixelData, VR: "OW", Value: []byte{1, 2, 3, 4, 5, 6, 7, 8}})
	}
	b, err := ds.Bytes(ts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deliveries records the outcome each instance's Delivered was told.
type deliveries struct {
	mu  sync.Mutex
	got map[string][]error
}

func (d *deliveries) take() map[string][]error {
	d.mu.Lock()
	defer d.mu.Unlock()
	g := d.got
	d.got = map[string][]error{}
	return g
}

// recording wraps a service: every instance it retrieves reports to d.
type recording struct {
	archive.Service
	d *deliveries
}

func (r recording) Retrieve(ctx context.Context, q *archive.RetrieveRequest, each func(*archive.Instance) error) error {
	if archive.PrincipalFrom(ctx) == nil {
		return errors.New("no principal in the context")
	}
	return r.Service.Retrieve(ctx, q, func(in *archive.Instance) error {
		uid := in.SOPInstanceUID
		in.Delivered = func(err error) {
			r.d.mu.Lock()
			r.d.got[uid] = append(r.d.got[uid], err)
			r.d.mu.Unlock()
		}
		return each(in)
	})
}

type allowAll struct{}

func (allowAll) Authenticate(*http.Request) (*archive.Principal, error) {
	return &archive.Principal{Kind: archive.User, Name: "viewer", Roles: []string{"viewer"}}, nil
}

type wadoFixture struct {
	srv    *httptest.Server
	d      *deliveries
	stored map[string][]byte // data sets as stored, by SOP Instance UID
	ar     *archive.Archive
}

func newWADOFixture(t *testing.T) *wadoFixture {
	t.Helper()
	ctx := context.Background()
	ar, _ := testArchive(t, nil)
	f := &wadoFixture{d: &deliveries{got: map[string][]error{}}, stored: map[string][]byte{}, ar: ar}
	for _, o := range []struct {
		series, sop string
		ts          *dicom.TransferSyntax
	}{
		{tSeries, tImpl, dicom.ImplicitVRLittleEndian},
		{tSeries, tExpl, dicom.ExplicitVRLittleEndian},
		{tOther, tJPEG, dicom.LookupTransferSyntax(jpegTS)},
	} {
		b := testObject(t, o.series, o.sop, o.ts)
		if _, err := ar.Store(ctx, &archive.StoreRequest{SOPClassUID: scClass, SOPInstanceUID: o.sop, TransferSyntaxUID: o.ts.UID, Data: bytes.NewReader(b)}); err != nil {
			t.Fatalf("storing %s: %v", o.sop, err)
		}
		f.stored[o.sop] = b
	}
	h := web.New(web.Config{Authenticator: allowAll{}})
	Register(h, recording{Service: ar, d: f.d}, Options{MaxResults: 100})
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *wadoFixture) get(t *testing.T, path string, accept ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range accept {
		req.Header.Add("Accept", a)
	}
	rsp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rsp.Body.Close() })
	return rsp
}

// part10 is one file received.
type received struct {
	contentType string
	meta        *dicom.FileMeta
	data        []byte
}

func readPart10(t *testing.T, ct string, r io.Reader) received {
	t.Helper()
	meta, br, err := dicom.ReadFileHeader(r, dicom.DefaultMetaLimit)
	if err != nil {
		t.Fatalf("not a Part 10 file: %v", err)
	}
	if meta.NoMeta {
		t.Fatal("no file meta information")
	}
	data, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	return received{contentType: ct, meta: meta, data: data}
}

// parts reads a multipart/related; type="application/dicom" answer.
func parts(t *testing.T, rsp *http.Response) []received {
	t.Helper()
	if rsp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(rsp.Body)
		t.Fatalf("status %d: %s", rsp.StatusCode, b)
	}
	mt, params, err := mime.ParseMediaType(rsp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/related" || params["type"] != "application/dicom" {
		t.Fatalf("Content-Type %q", rsp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(rsp.Body, params["boundary"])
	var out []received
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, readPart10(t, p.Header.Get("Content-Type"), p))
	}
}

// decoded reads a data set in ts into LE explicit bytes, to compare
// objects across syntaxes.
func canonical(t *testing.T, b []byte, uid string) []byte {
	t.Helper()
	ts := dicom.LookupTransferSyntax(uid)
	var out bytes.Buffer
	if dicom.IsUncompressed(ts) {
		if err := dicom.Transcode(&out, bytes.NewReader(b), ts, dicom.ExplicitVRLittleEndian); err != nil {
			t.Fatalf("decoding %s: %v", uid, err)
		}
		return out.Bytes()
	}
	return b
}

func wantDelivered(t *testing.T, d *deliveries, want map[string]error) {
	t.Helper()
	got := d.take()
	if len(got) != len(want) {
		t.Fatalf("deliveries reported %v, want %v", got, want)
	}
	for uid, w := range want {
		g := got[uid]
		if len(g) != 1 {
			t.Fatalf("%s reported %d times: %v", uid, len(g), g)
		}
		if (w == nil) != (g[0] == nil) || (w != nil && !errors.Is(g[0], w)) {
			t.Fatalf("%s reported %v, want %v", uid, g[0], w)
		}
	}
}

func TestRetrieveInstancesAsStored(t *testing.T) {
	f := newWADOFixture(t)
	ps := parts(t, f.get(t, "/dicom-web/studies/"+tStudy, `multipart/related; type="application/dicom"; transfer-syntax=*`))
	if len(ps) != 3 {
		t.Fatalf("%d parts, want 3", len(ps))
	}
	for _, p := range ps {
		uid := p.meta.MediaStorageSOPInstanceUID
		want, ok := f.stored[uid]
		if !ok {
			t.Fatalf("unexpected instance %s", uid)
		}
		if !bytes.Equal(p.data, want) {
			t.Errorf("%s: data set differs from the one stored", uid)
		}
		if p.meta.MediaStorageSOPClassUID != scClass {
			t.Errorf("%s: SOP class %q", uid, p.meta.MediaStorageSOPClassUID)
		}
		if p.contentType != "application/dicom; transfer-syntax="+p.meta.TransferSyntaxUID {
			t.Errorf("%s: part Content-Type %q for a file in %s", uid, p.contentType, p.meta.TransferSyntaxUID)
		}
	}
	wantDelivered(t, f.d, map[string]error{tImpl: nil, tExpl: nil, tJPEG: nil})

	// */* (curl, many clients) is the same: as stored.
	ps = parts(t, f.get(t, "/dicom-web/studies/"+tStudy+"/series/"+tSeries))
	if len(ps) != 2 || ps[0].meta.TransferSyntaxUID == ps[1].meta.TransferSyntaxUID {
		t.Fatalf("series as stored: %d parts", len(ps))
	}
	wantDelivered(t, f.d, map[string]error{tImpl: nil, tExpl: nil})
}

// TestRetrieveDefaultSyntax: without transfer-syntax a native object comes
// in Explicit VR Little Endian (PS3.18), a compressed one as stored.
func TestRetrieveDefaultSyntax(t *testing.T) {
	f := newWADOFixture(t)
	ps := parts(t, f.get(t, "/dicom-web/studies/"+tStudy, `multipart/related; type="application/dicom"`))
	if len(ps) != 3 {
		t.Fatalf("%d parts, want 3", len(ps))
	}
	for _, p := range ps {
		uid := p.meta.MediaStorageSOPInstanceUID
		wantTS := dicom.ExplicitVRLittleEndian.UID
		if uid == tJPEG {
			wantTS = jpegTS
		}
		if p.meta.TransferSyntaxUID != wantTS {
			t.Errorf("%s in %s, want %s", uid, p.meta.TransferSyntaxUID, wantTS)
		}
		storedTS := dicom.ImplicitVRLittleEndian.UID
		switch uid {
		case tExpl:
			storedTS = dicom.ExplicitVRLittleEndian.UID
		case tJPEG:
			storedTS = jpegTS
		}
		if !bytes.Equal(canonical(t, p.data, wantTS), canonical(t, f.stored[uid], storedTS)) {
			t.Errorf("%s: data set differs from the one stored", uid)
		}
	}
	wantDelivered(t, f.d, map[string]error{tImpl: nil, tExpl: nil, tJPEG: nil})
}

// TestRetrieveTranscodes: a named native syntax is produced from any
// native one, big endian included.
func TestRetrieveTranscodes(t *testing.T) {
	f := newWADOFixture(t)
	for _, ts := range []*dicom.TransferSyntax{dicom.ImplicitVRLittleEndian, dicom.ExplicitVRBigEndian, dicom.DeflatedExplicitVRLittleEndian} {
		ps := parts(t, f.get(t, "/dicom-web/studies/"+tStudy+"/series/"+tSeries+"/instances/"+tExpl,
			`multipart/related; type="application/dicom"; transfer-syntax=`+ts.UID))
		if len(ps) != 1 || ps[0].meta.TransferSyntaxUID != ts.UID || ps[0].contentType != "application/dicom; transfer-syntax="+ts.UID {
			t.Fatalf("%s: %+v", ts.Name, ps)
		}
		if !bytes.Equal(canonical(t, ps[0].data, ts.UID), canonical(t, f.stored[tExpl], dicom.ExplicitVRLittleEndian.UID)) {
			t.Errorf("%s: data set differs from the one stored", ts.Name)
		}
		wantDelivered(t, f.d, map[string]error{tExpl: nil})
	}
}

func TestRetrieveNotAcceptable(t *testing.T) {
	f := newWADOFixture(t)
	inst := "/dicom-web/studies/" + tStudy + "/series/" + tOther + "/instances/" + tJPEG
	for _, c := range []struct {
		name, path, accept string
		code               int
		delivered          map[string]error
	}{
		// Ward does not decompress: one instance is refused...
		{"compressed as native", inst, `multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1`, 406, map[string]error{tJPEG: errNotAcceptable}},
		// ...nor compress.
		{"native as compressed", "/dicom-web/studies/" + tStudy + "/series/" + tSeries + "/instances/" + tImpl, `multipart/related; type="application/dicom"; transfer-syntax=` + jpegTS, 406, map[string]error{tImpl: errNotAcceptable}},
		{"bulk data media type", inst, `multipart/related; type="application/octet-stream"`, 406, map[string]error{}},
		{"json", inst, `application/dicom+json`, 406, map[string]error{}},
		{"application/dicom for a study", "/dicom-web/studies/" + tStudy, `application/dicom`, 406, map[string]error{}},
		{"bad syntax", inst, `multipart/related; type="application/dicom"; transfer-syntax=jpeg`, 406, map[string]error{}},
		{"malformed Accept", inst, `multipart/related; type="application/dicom"; q=2`, 400, map[string]error{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rsp := f.get(t, c.path, c.accept)
			b, _ := io.ReadAll(rsp.Body)
			if rsp.StatusCode != c.code || len(b) < 10 || rsp.Header.Get("Warning") == "" {
				t.Fatalf("status %d (want %d): %q", rsp.StatusCode, c.code, b)
			}
			wantDelivered(t, f.d, c.delivered)
		})
	}

	// In a study, those that cannot be had are left out, with a Warning;
	// each counts as not delivered.
	rsp := f.get(t, "/dicom-web/studies/"+tStudy, `multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.2`)
	if w := rsp.Header.Get("Warning"); !strings.Contains(w, "1 of 3 instances left out") {
		t.Fatalf("Warning %q", w)
	}
	ps := parts(t, rsp)
	if len(ps) != 2 {
		t.Fatalf("%d parts, want 2", len(ps))
	}
	wantDelivered(t, f.d, map[string]error{tImpl: nil, tExpl: nil, tJPEG: errNotAcceptable})
}

func TestRetrieveNotFound(t *testing.T) {
	f := newWADOFixture(t)
	for _, path := range []string{
		"/dicom-web/studies/1.2.3.4",
		"/dicom-web/studies/" + tStudy + "/series/1.2.3.4",
		// The instance exists, not in this series, nor in this study.
		"/dicom-web/studies/" + tStudy + "/series/" + tOther + "/instances/" + tImpl,
		"/dicom-web/studies/1.2.3.4/series/" + tSeries + "/instances/" + tImpl,
	} {
		rsp := f.get(t, path)
		if b, _ := io.ReadAll(rsp.Body); rsp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "stored") {
			t.Errorf("%s: %d %q", path, rsp.StatusCode, b)
		}
	}
	rsp := f.get(t, "/dicom-web/studies/1.2.x")
	if rsp.StatusCode != http.StatusBadRequest {
		t.Errorf("an invalid UID: %d", rsp.StatusCode)
	}
	wantDelivered(t, f.d, map[string]error{})
}

// TestRetrieveSinglePart: application/dicom for one instance is the file
// itself.
func TestRetrieveSinglePart(t *testing.T) {
	f := newWADOFixture(t)
	rsp := f.get(t, "/dicom-web/studies/"+tStudy+"/series/"+tSeries+"/instances/"+tImpl, "application/dicom; transfer-syntax=*")
	if rsp.StatusCode != 200 || rsp.Header.Get("Content-Type") != "application/dicom; transfer-syntax="+dicom.ImplicitVRLittleEndian.UID {
		t.Fatalf("%d %q", rsp.StatusCode, rsp.Header.Get("Content-Type"))
	}
	p := readPart10(t, "", rsp.Body)
	if !bytes.Equal(p.data, f.stored[tImpl]) || p.meta.MediaStorageSOPInstanceUID != tImpl {
		t.Fatal("the file differs from the one stored")
	}
	wantDelivered(t, f.d, map[string]error{tImpl: nil})
}

// TestRetrieveStorageFailure: an object whose file cannot be read before
// the first part is a 5xx; after it, the connection is cut (the client
// sees a truncated body, not a complete-looking one); either way every
// instance's delivery is reported.
func TestRetrieveStorageFailure(t *testing.T) {
	f := newWADOFixture(t)
	ctx := context.Background()
	in, err := f.ar.Index.Get(ctx, tExpl)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.ar.Blobs.Delete(ctx, in.BlobKey); err != nil {
		t.Fatal(err)
	}
	rsp := f.get(t, "/dicom-web/studies/"+tStudy+"/series/"+tSeries+"/instances/"+tExpl)
	if b, _ := io.ReadAll(rsp.Body); rsp.StatusCode < 500 {
		t.Fatalf("status %d: %s", rsp.StatusCode, b)
	}
	got := f.d.take()
	if len(got) != 1 || len(got[tExpl]) != 1 || got[tExpl][0] == nil {
		t.Fatalf("deliveries %v", got)
	}

	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/dicom-web/studies/"+tStudy+"/series/"+tSeries, nil)
	req.Header.Set("Accept", "multipart/related; type=application/dicom; transfer-syntax=*")
	rsp, err = f.srv.Client().Do(req)
	switch {
	case err != nil:
		// Cut before the status reached the client.
	case rsp.StatusCode == http.StatusOK:
		defer rsp.Body.Close()
		mt, params, _ := mime.ParseMediaType(rsp.Header.Get("Content-Type"))
		if mt != "multipart/related" {
			t.Fatal(mt)
		}
		mr := multipart.NewReader(rsp.Body, params["boundary"])
		var err error
		for err == nil {
			var p *multipart.Part
			if p, err = mr.NextPart(); err == nil {
				_, err = io.Copy(io.Discard, p)
			}
		}
		if err == io.EOF {
			t.Fatal("a retrieve that failed half way ended like a complete one")
		}
	case rsp.StatusCode < 500:
		rsp.Body.Close()
		t.Fatalf("status %d", rsp.StatusCode)
	default:
		rsp.Body.Close()
	}
	got = f.d.take()
	if len(got) != 2 || len(got[tExpl]) != 1 || got[tExpl][0] == nil || len(got[tImpl]) != 1 {
		t.Fatalf("deliveries %v", got)
	}
}

func TestRetrieveHead(t *testing.T) {
	f := newWADOFixture(t)
	req, _ := http.NewRequest(http.MethodHead, f.srv.URL+"/dicom-web/studies/"+tStudy, nil)
	rsp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rsp.Body.Close()
	if rsp.StatusCode != 200 || !strings.HasPrefix(rsp.Header.Get("Content-Type"), "multipart/related") {
		t.Fatalf("%d %q", rsp.StatusCode, rsp.Header.Get("Content-Type"))
	}
	wantDelivered(t, f.d, map[string]error{tImpl: archive.ErrNotAttempted, tExpl: archive.ErrNotAttempted, tJPEG: archive.ErrNotAttempted})
}

func TestWADOURI(t *testing.T) {
	f := newWADOFixture(t)
	base := "/wado?requestType=WADO&studyUID=" + tStudy + "&seriesUID=" + tSeries + "&objectUID="
	rsp := f.get(t, base+tImpl+"&contentType=application%2Fdicom")
	if rsp.StatusCode != 200 || !strings.HasPrefix(rsp.Header.Get("Content-Type"), "application/dicom") {
		t.Fatalf("%d %q", rsp.StatusCode, rsp.Header.Get("Content-Type"))
	}
	p := readPart10(t, "", rsp.Body)
	if p.meta.TransferSyntaxUID != dicom.ExplicitVRLittleEndian.UID ||
		!bytes.Equal(canonical(t, p.data, p.meta.TransferSyntaxUID), canonical(t, f.stored[tImpl], dicom.ImplicitVRLittleEndian.UID)) {
		t.Fatal("the object differs from the one stored")
	}
	wantDelivered(t, f.d, map[string]error{tImpl: nil})

	rsp = f.get(t, base+tImpl+"&contentType=application/dicom&transferSyntax=*")
	if p := readPart10(t, "", rsp.Body); !bytes.Equal(p.data, f.stored[tImpl]) || p.meta.TransferSyntaxUID != dicom.ImplicitVRLittleEndian.UID {
		t.Fatal("as stored: the object differs from the one stored")
	}
	wantDelivered(t, f.d, map[string]error{tImpl: nil})

	other := "/wado?requestType=WADO&studyUID=" + tStudy + "&seriesUID=" + tOther + "&objectUID=" + tJPEG + "&contentType=application/dicom"
	for _, c := range []struct {
		name, query string
		code        int
		says        string
		delivered   map[string]error
	}{
		{"no requestType", "/wado?studyUID=" + tStudy + "&seriesUID=" + tSeries + "&objectUID=" + tImpl + "&contentType=application/dicom", 400, "requestType", nil},
		{"other requestType", strings.Replace(base, "WADO&", "WADO-RS&", 1) + tImpl + "&contentType=application/dicom", 400, "requestType", nil},
		{"no objectUID", base + "&contentType=application/dicom", 400, "objectUID", nil},
		{"invalid UID", base + "1.2.x&contentType=application/dicom", 400, "valid UID", nil},
		{"repeated", base + tImpl + "&contentType=application/dicom&objectUID=" + tImpl, 400, "more than once", nil},
		{"unknown parameter", base + tImpl + "&contentType=application/dicom&anonymise=yes", 400, "anonymise", nil},
		{"anonymize", base + tImpl + "&contentType=application/dicom&anonymize=yes", 400, "anonymize", nil},
		{"rendering parameter", base + tImpl + "&contentType=application/dicom&rows=64", 400, "rows", nil},
		{"default is image/jpeg", base + tImpl, 200, "\xff\xd8", map[string]error{tImpl: nil}},
		{"png", base + tImpl + "&contentType=image/png", 200, "PNG", map[string]error{tImpl: nil}},
		{"image with rows, window, quality", base + tImpl + "&rows=64&windowCenter=40&windowWidth=400&imageQuality=80", 200, "\xff\xd8", map[string]error{tImpl: nil}},
		{"image region", base + tImpl + "&region=0,0,1,1", 400, "region", nil},
		{"image window alone", base + tImpl + "&windowCenter=40", 400, "windowWidth", nil},
		{"image of another type", base + tImpl + "&contentType=image/gif", 406, "image/png", nil},
		{"bad transferSyntax", base + tImpl + "&contentType=application/dicom&transferSyntax=x", 400, "transferSyntax", nil},
		{"not stored", base + "1.2.3.4&contentType=application/dicom", 404, "no instance", nil},
		{"wrong series", base + tJPEG + "&contentType=application/dicom", 404, "no instance", nil},
		{"compressed as native", other + "&transferSyntax=1.2.840.10008.1.2", 406, "JPEG Baseline", map[string]error{tJPEG: errNotAcceptable}},
		{"compressed by default", other, 200, "", map[string]error{tJPEG: nil}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rsp := f.get(t, c.query)
			b, _ := io.ReadAll(rsp.Body)
			if rsp.StatusCode != c.code || !strings.Contains(string(b), c.says) {
				t.Fatalf("status %d (want %d): %q", rsp.StatusCode, c.code, b)
			}
			if c.delivered == nil {
				c.delivered = map[string]error{}
			}
			wantDelivered(t, f.d, c.delivered)
		})
	}
}

// TestRetrieveNeedsCredentials: the routes are behind the web front
// end's authentication.
func TestRetrieveNeedsCredentials(t *testing.T) {
	h := web.New(web.Config{})
	Register(h, recording{d: &deliveries{got: map[string][]error{}}}, Options{})
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, p := range []string{"/dicom-web/studies/" + tStudy, "/wado?requestType=WADO&studyUID=" + tStudy + "&seriesUID=" + tSeries + "&objectUID=" + tImpl + "&contentType=application/dicom"} {
		rsp, err := srv.Client().Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		rsp.Body.Close()
		if rsp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without credentials: %d", p, rsp.StatusCode)
		}
	}
}
