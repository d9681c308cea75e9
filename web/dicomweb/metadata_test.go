package dicomweb_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
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
	"github.com/ward-pacs/ward/web/dicomweb"
)

const pydicomData = "/usr/lib/python3/dist-packages/pydicom/data"

// viewer authenticates every request as one user.
type viewer struct{}

func (viewer) Authenticate(*http.Request) (*archive.Principal, error) {
	return &archive.Principal{Kind: archive.User, Name: "carol"}, nil
}

// metaServer is a DICOMweb server over an archive in a temporary
// directory, without the policy and audit wrappers (internal/server's
// tests cover those).
type metaServer struct {
	ar  *archive.Archive
	idx *sqlite.DB
	srv *httptest.Server
}

func newMetaServer(t testing.TB, skipAfterStore bool) *metaServer {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	idx, err := sqlite.Open(ctx, filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	bs, err := fsblob.Open(ctx, filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close(); idx.Close() })
	ar := &archive.Archive{Index: idx, Blobs: bs, SkipMetadataAfterStore: skipAfterStore}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ar.Close)
	h := web.New(web.Config{Authenticator: viewer{}})
	dicomweb.Register(h, ar, dicomweb.Options{})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &metaServer{ar: ar, idx: idx, srv: srv}
}

// storeFile stores a Part 10 file and returns its data set as read whole.
func (m *metaServer) storeFile(t testing.TB, rel string) *dicom.DataSet {
	t.Helper()
	p := filepath.Join(pydicomData, rel)
	if _, err := os.Stat(p); err != nil {
		testci.SkipOrFail(t, "%s missing: %v", p, err)
	}
	meta, rc, err := dicom.OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	ts := dicom.LookupTransferSyntax(meta.TransferSyntaxUID)
	ds, err := dicom.ReadDataSet(bytes.NewReader(data), ts, 1<<26)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.ar.Store(context.Background(), &archive.StoreRequest{
		SOPClassUID: ds.String(dicom.SOPClassUID), SOPInstanceUID: ds.String(dicom.SOPInstanceUID),
		TransferSyntaxUID: meta.TransferSyntaxUID, Data: bytes.NewReader(data)})
	if err != nil {
		t.Fatalf("storing %s: %v", rel, err)
	}
	return ds
}

func (m *metaServer) get(t testing.TB, path, accept string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", m.srv.URL+path, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := m.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func uidsOf(ds *dicom.DataSet) (study, series, inst string) {
	return ds.String(dicom.StudyInstanceUID), ds.String(dicom.SeriesInstanceUID), ds.String(dicom.SOPInstanceUID)
}

type jsonDS = map[string]map[string]any

func firstValue(obj jsonDS, tag string) any {
	v, _ := obj[tag]["Value"].([]any)
	if len(v) == 0 {
		return nil
	}
	return v[0]
}

// TestMetadata: series, study and instance metadata as DICOM JSON, warm
// (kept after the store) and cold (read from the object when first
// asked), with absolute BulkDataURIs that lead to the value's bytes.
func TestMetadata(t *testing.T) {
	for _, cold := range []bool{false, true} {
		name := "warm"
		if cold {
			name = "cold"
		}
		t.Run(name, func(t *testing.T) {
			m := newMetaServer(t, cold)
			ct := m.storeFile(t, "test_files/CT_small.dcm")
			mr := m.storeFile(t, "test_files/MR_small_implicit.dcm")
			if !cold {
				m.ar.Close() // the after-store work is done
			}
			study, series, inst := uidsOf(ct)
			base := "/dicom-web/studies/" + study + "/series/" + series
			for _, accept := range []string{"", "*/*", "application/dicom+json", "application/json"} {
				resp, body := m.get(t, base+"/metadata", accept)
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/dicom+json" {
					t.Fatalf("Accept %q: %s %s: %s", accept, resp.Status, resp.Header.Get("Content-Type"), body)
				}
			}
			_, body := m.get(t, base+"/metadata", "application/dicom+json")
			var arr []jsonDS
			if err := json.Unmarshal(body, &arr); err != nil {
				t.Fatalf("%v: %.300s", err, body)
			}
			if len(arr) != 1 {
				t.Fatalf("%d instances in the series' metadata", len(arr))
			}
			obj := arr[0]
			if firstValue(obj, "00080018") != inst || firstValue(obj, "00280010") != float64(128) {
				t.Errorf("SOPInstanceUID %v, Rows %v", firstValue(obj, "00080018"), firstValue(obj, "00280010"))
			}
			if pn, _ := firstValue(obj, "00100010").(map[string]any); pn["Alphabetic"] != ct.String(dicom.PatientName) {
				t.Errorf("PatientName %v, want %q", pn, ct.String(dicom.PatientName))
			}
			uri, _ := obj["7FE00010"]["BulkDataURI"].(string)
			wantURI := m.srv.URL + base + "/instances/" + inst + "/bulkdata/7FE00010"
			if uri != wantURI {
				t.Fatalf("pixel data BulkDataURI %q, want %q", uri, wantURI)
			}
			if _, ok := obj["7FE00010"]["InlineBinary"]; ok {
				t.Error("pixel data inline")
			}
			// The BulkDataURI leads to the value's bytes.
			got := fetchBulk(t, m, strings.TrimPrefix(uri, m.srv.URL))
			if want := ct.Get(dicom.PixelData).Value; !bytes.Equal(got, want) {
				t.Errorf("bulk data: %d bytes differing from the pixel data's %d", len(got), len(want))
			}

			// Study scope: both series' instances; instance scope: one.
			_, body = m.get(t, "/dicom-web/studies/"+study+"/metadata", "")
			arr = nil
			if err := json.Unmarshal(body, &arr); err != nil {
				t.Fatal(err)
			}
			mrStudy, _, mrInst := uidsOf(mr)
			want := 1
			if mrStudy == study {
				want = 2
			}
			if len(arr) != want {
				t.Errorf("study metadata: %d instances, want %d", len(arr), want)
			}
			_, body = m.get(t, base+"/instances/"+inst+"/metadata", "")
			arr = nil
			if err := json.Unmarshal(body, &arr); err != nil || len(arr) != 1 || firstValue(arr[0], "00080018") != inst {
				t.Errorf("instance metadata: %v %.200s", err, body)
			}
			// An implicit VR object: the dictionary's VRs, and its pixel
			// data as bulk data.
			s2, se2, _ := uidsOf(mr)
			_, body = m.get(t, "/dicom-web/studies/"+s2+"/series/"+se2+"/instances/"+mrInst+"/metadata", "")
			arr = nil
			if err := json.Unmarshal(body, &arr); err != nil || len(arr) != 1 {
				t.Fatalf("implicit VR instance: %v", err)
			}
			if vr := arr[0]["00280010"]["vr"]; vr != "US" {
				t.Errorf("Rows VR %v", vr)
			}
			if u, _ := arr[0]["7FE00010"]["BulkDataURI"].(string); !strings.HasSuffix(u, "/instances/"+mrInst+"/bulkdata/7FE00010") {
				t.Errorf("implicit VR pixel data: %v", arr[0]["7FE00010"])
			}
		})
	}
}

// fetchBulk follows a BulkDataURI and returns the one part's bytes.
func fetchBulk(t *testing.T, m *metaServer, path string) []byte {
	t.Helper()
	resp, body := m.get(t, path, `multipart/related; type="application/octet-stream"`)
	if resp.StatusCode != 200 {
		t.Fatalf("bulk data: %s: %s", resp.Status, body)
	}
	typ, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || typ != "multipart/related" || params["type"] != "application/octet-stream" {
		t.Fatalf("bulk data Content-Type %q", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	p, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if ct := p.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("part Content-Type %q", ct)
	}
	b, err := io.ReadAll(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Errorf("more than one part: %v", err)
	}
	return b
}

// TestMetadataErrors: what is not stored is 404; a media type other than
// JSON 406; a bad UID 400.
func TestMetadataErrors(t *testing.T) {
	m := newMetaServer(t, false)
	ct := m.storeFile(t, "test_files/CT_small.dcm")
	study, series, _ := uidsOf(ct)
	for _, c := range []struct {
		path, accept string
		want         int
	}{
		{"/dicom-web/studies/1.2.3.4/metadata", "", 404},
		{"/dicom-web/studies/" + study + "/series/1.2.3.4/metadata", "", 404},
		{"/dicom-web/studies/" + study + "/series/" + series + "/instances/1.2.3.4/metadata", "", 404},
		{"/dicom-web/studies/" + study + "/metadata", `multipart/related; type="application/dicom+xml"`, 406},
		{"/dicom-web/studies/" + study + "/metadata", "text/html", 406},
		{"/dicom-web/studies/1.2.x/metadata", "", 400},
	} {
		resp, body := m.get(t, c.path, c.accept)
		if resp.StatusCode != c.want {
			t.Errorf("%s (Accept %q): %s, want %d: %s", c.path, c.accept, resp.Status, c.want, body)
		}
	}
}

// TestBulkData: values nested in sequences are reachable by their path;
// a path that names no bulk data is 404, a malformed one 400, pixel data
// of an encapsulated syntax 406 pointing at frames, another media type
// 406.
func TestBulkData(t *testing.T) {
	m := newMetaServer(t, false)
	jp := m.storeFile(t, "test_files/JPEG-lossy.dcm")
	ct := m.storeFile(t, "test_files/CT_small.dcm")
	s, se, i := uidsOf(jp)
	jbase := "/dicom-web/studies/" + s + "/series/" + se + "/instances/" + i
	s, se, i = uidsOf(ct)
	cbase := "/dicom-web/studies/" + s + "/series/" + se + "/instances/" + i
	_, body := m.get(t, jbase+"/metadata", "")
	if !strings.Contains(string(body), `"7FE00010":{"vr":"OB","BulkDataURI":"`) {
		t.Errorf("encapsulated pixel data: %.2000s", body)
	}
	// A value nested in a sequence's second item.
	nested := &dicom.DataSet{}
	nested.Set(dicom.SOPClassUID, "1.2.840.10008.5.1.4.1.1.7")
	nested.Set(dicom.SOPInstanceUID, "1.2.826.0.1.3680043.10.1234.88.3")
	nested.Set(dicom.StudyInstanceUID, "1.2.826.0.1.3680043.10.1234.88.1")
	nested.Set(dicom.SeriesInstanceUID, "1.2.826.0.1.3680043.10.1234.88.2")
	nested.Set(dicom.PatientID, "P88")
	doc := bytes.Repeat([]byte("%PDF"), 600)
	item := &dicom.DataSet{}
	item.Put(&dicom.Element{Tag: dicom.NewTag(0x0042, 0x0011), VR: "OB", Value: doc})
	nested.Put(&dicom.Element{Tag: dicom.NewTag(0x0040, 0xA730), VR: "SQ", Items: []*dicom.DataSet{{}, item}})
	raw, err := nested.Bytes(dicom.ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.ar.Store(context.Background(), &archive.StoreRequest{SOPClassUID: "1.2.840.10008.5.1.4.1.1.7",
		SOPInstanceUID: "1.2.826.0.1.3680043.10.1234.88.3", TransferSyntaxUID: dicom.ExplicitVRLittleEndian.UID,
		Data: bytes.NewReader(raw)}); err != nil {
		t.Fatal(err)
	}
	nbase := "/dicom-web/studies/1.2.826.0.1.3680043.10.1234.88.1/series/1.2.826.0.1.3680043.10.1234.88.2/instances/1.2.826.0.1.3680043.10.1234.88.3"
	_, body = m.get(t, nbase+"/metadata", "")
	var arr []jsonDS
	if err := json.Unmarshal(body, &arr); err != nil || len(arr) != 1 {
		t.Fatalf("%v: %s", err, body)
	}
	items, _ := arr[0]["0040A730"]["Value"].([]any)
	if len(items) != 2 {
		t.Fatalf("sequence: %v", arr[0]["0040A730"])
	}
	uri, _ := items[1].(map[string]any)["00420011"].(map[string]any)["BulkDataURI"].(string)
	if !strings.HasSuffix(uri, nbase+"/bulkdata/0040A730/1/00420011") {
		t.Fatalf("nested BulkDataURI %q", uri)
	}
	if got := fetchBulk(t, m, strings.TrimPrefix(uri, m.srv.URL)); !bytes.Equal(got, doc) {
		t.Errorf("nested bulk data: %d bytes, want %d", len(got), len(doc))
	}

	for _, c := range []struct {
		path, accept string
		want         int
		msg          string
	}{
		{nbase + "/bulkdata/0040A730/2/00420011", "", 404, "no bulk data"},
		{jbase + "/bulkdata/7FE00010", "", 406, "frames"},
		{cbase + "/bulkdata/00100010", "", 404, "no bulk data"},
		{cbase + "/bulkdata/7FE0001", "", 400, "path"},
		{cbase + "/bulkdata/7FE00010/0", "", 400, "path"},
		{cbase + "/bulkdata/7FE00010", "application/dicom", 406, "octet-stream"},
		{cbase + "/bulkdata/7FE00010", `multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.50`, 406, "octet-stream"},
		{cbase + "/bulkdata/7FE00010", "*/*", 200, ""},
		{"/dicom-web/studies/" + s + "/series/" + se + "/instances/1.2.3/bulkdata/7FE00010", "", 404, "no such instance"},
	} {
		resp, body := m.get(t, c.path, c.accept)
		if resp.StatusCode != c.want || !strings.Contains(string(body), c.msg) {
			t.Errorf("%s (Accept %q): %s, want %d %q: %.200s", c.path, c.accept, resp.Status, c.want, c.msg, body)
		}
	}
}

// failingService gives two instances whose second's metadata cannot be
// read.
type failingService struct{ archive.Service }

func (failingService) Retrieve(_ context.Context, r *archive.RetrieveRequest, each func(*archive.Instance) error) error {
	for i, md := range []func(context.Context) ([]byte, error){
		func(context.Context) ([]byte, error) {
			return []byte(`{"00080018":{"vr":"UI","Value":["1.2.3.1"]}}`), nil
		},
		func(context.Context) ([]byte, error) {
			return nil, archive.Fail(archive.ErrStorage, "reading a stored object failed")
		},
	} {
		in := &archive.Instance{SOPInstanceUID: fmt.Sprintf("1.2.3.%d", i+1), StudyInstanceUID: "1.2.3", SeriesInstanceUID: "1.2.3.0", Metadata: md}
		if err := each(in); err != nil {
			return err
		}
	}
	return nil
}

// TestMetadataFailsMidway: an instance that fails once the answer has
// started breaks the connection off, so that no client takes the part
// sent for the whole answer.
func TestMetadataFailsMidway(t *testing.T) {
	h := web.New(web.Config{Authenticator: viewer{}})
	dicomweb.Register(h, failingService{}, dicomweb.Options{})
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/dicom-web/studies/1.2.3/metadata")
	if err != nil {
		return // broken off before the headers were flushed
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("the answer ended cleanly: %s", body)
	}
	var arr []any
	if json.Unmarshal(body, &arr) == nil {
		t.Fatalf("a cut answer is valid JSON: %s", body)
	}
}
