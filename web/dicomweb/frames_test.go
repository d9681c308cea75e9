package dicomweb

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/web"
)

// systemPy is Debian's python3, with python3-pydicom (pydicomFiles is
// where its test files are).
const systemPy = "/usr/bin/python3"

// fakeService serves retrieves from pydicom's test files, keyed by their
// SOP Instance UIDs, and records what each instance's Delivered was told.
type fakeService struct {
	archive.Service
	objs map[string]fakeObj
	mu   sync.Mutex
	got  map[string][]error
}

type fakeObj struct {
	study, series, ts, path string
}

func (f *fakeService) Retrieve(ctx context.Context, r *archive.RetrieveRequest, each func(*archive.Instance) error) error {
	id := r.Identifier
	study, series, sop := id.String(dicom.StudyInstanceUID), id.String(dicom.SeriesInstanceUID), id.String(dicom.SOPInstanceUID)
	keys := make([]string, 0, len(f.objs))
	for k := range f.objs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o := f.objs[k]
		if o.study != study || (series != "" && o.series != series) || (sop != "" && k != sop) {
			continue
		}
		path, uid := o.path, k
		err := each(&archive.Instance{
			SOPInstanceUID: uid, TransferSyntaxUID: o.ts, StudyInstanceUID: o.study,
			Open: func(context.Context) (io.ReadCloser, error) {
				_, rc, err := dicom.OpenFile(path)
				return rc, err
			},
			Delivered: func(err error) {
				f.mu.Lock()
				f.got[uid] = append(f.got[uid], err)
				f.mu.Unlock()
			},
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// testServer serves the named pydicom files, each as its own instance in
// study 1.2.3, series 1.2.3.4.
func testServer(t *testing.T, names ...string) (*httptest.Server, *fakeService, map[string]string) {
	t.Helper()
	fs := &fakeService{objs: map[string]fakeObj{}, got: map[string][]error{}}
	uids := map[string]string{}
	for i, n := range names {
		path := filepath.Join(pydicomFiles, n)
		meta, rc, err := dicom.OpenFile(path)
		if err != nil {
			testci.SkipOrFail(t, "pydicom test file %s: %v", n, err)
		}
		rc.Close()
		uid := "1.2.3.4." + strconv.Itoa(i+1) // pydicom's files share UIDs
		fs.objs[uid] = fakeObj{study: "1.2.3", series: "1.2.3.4", ts: meta.TransferSyntaxUID, path: path}
		uids[n] = uid
	}
	h := web.New(web.Config{Authenticator: allowAll{}})
	Register(h, fs, Options{})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, fs, uids
}

func instanceURL(srv *httptest.Server, uid string) string {
	return srv.URL + Root + "/studies/1.2.3/series/1.2.3.4/instances/" + uid
}

func fetch(t *testing.T, url, accept string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// framePart is one part of a multipart answer.
type framePart struct {
	typ  string
	body []byte
}

func readParts(t *testing.T, resp *http.Response) []framePart {
	t.Helper()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/related" {
		t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	var out []framePart
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, framePart{p.Header.Get("Content-Type"), b})
	}
}

// pydicomFrames returns the SHA-256 of each frame of a pydicom file as
// pydicom splits them (native frames little endian).
func pydicomFrames(t *testing.T, name string) []string {
	t.Helper()
	oracleMu.Lock()
	defer oracleMu.Unlock()
	if h, ok := oracleCache[name]; ok {
		return h
	}
	script := `
import sys, hashlib, pydicom, numpy as np
from pydicom.encaps import generate_pixel_data_frame
ds = pydicom.dcmread(sys.argv[1])
n = int(ds.get('NumberOfFrames', 1) or 1)
ts = ds.file_meta.TransferSyntaxUID
if ts.is_compressed:
    frames = list(generate_pixel_data_frame(ds.PixelData, n))
else:
    ba = ds.BitsAllocated
    size = ds.Rows*ds.Columns*ds.SamplesPerPixel*ba//8
    frames = [ds.PixelData[i*size:(i+1)*size] for i in range(n)]
    if not ts.is_little_endian and ba > 8:
        frames = [np.frombuffer(b, dtype='>u%d' % (ba//8)).astype('<u%d' % (ba//8)).tobytes() for b in frames]
print(" ".join(hashlib.sha256(b).hexdigest() for b in frames))
`
	out, err := exec.Command(systemPy, "-c", script, filepath.Join(pydicomFiles, name)).Output()
	if err != nil {
		testci.SkipOrFail(t, "pydicom: %v", err)
	}
	oracleCache[name] = strings.Fields(string(out))
	return oracleCache[name]
}

var (
	oracleMu    sync.Mutex
	oracleCache = map[string][]string{}
)

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// TestFramesRetrieve: frames over HTTP equal pydicom's, native and
// compressed, single and multi-frame, in the order asked, with each part
// labelled with its syntax; what Ward cannot give is a 406 that says why.
func TestFramesRetrieve(t *testing.T) {
	files := []string{"CT_small.dcm", "MR_small_bigendian.dcm", "rtdose.dcm", "rtdose_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_rle_2frame.dcm"}
	srv, fs, uids := testServer(t, files...)
	const ohif = "multipart/related; type=application/octet-stream; transfer-syntax=*"
	cases := []struct {
		file, frames, accept string
		want                 int
		partType             string
	}{
		{"CT_small.dcm", "1", ohif, 200, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"},
		{"CT_small.dcm", "1", `multipart/related; type="application/octet-stream"`, 200, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"},
		{"CT_small.dcm", "1", "", 200, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"},
		{"MR_small_bigendian.dcm", "1", ohif, 200, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"},
		{"rtdose.dcm", "3,1,15", ohif, 200, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"},
		{"rtdose_rle.dcm", "2,4,15", ohif, 200, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.5"},
		{"rtdose_rle.dcm", "1", `multipart/related; type="image/x-dicom-rle"`, 200, "image/x-dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"},
		{"SC_rgb_jpeg_dcmtk.dcm", "1", `multipart/related; type="image/jpeg"`, 200, "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"},
		{"SC_rgb_jpeg_dcmtk.dcm", "1", `multipart/related; type="image/jpeg"; transfer-syntax=*`, 200, "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"},
		{"MR_small_jp2klossless.dcm", "1", `multipart/related; type="image/jp2"; transfer-syntax=1.2.840.10008.1.2.4.90`, 200, "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90"},
		{"SC_rgb_rle_2frame.dcm", "2,1", ohif, 200, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.5"},
		// Decompression and compression are not offered.
		{"SC_rgb_jpeg_dcmtk.dcm", "1", `multipart/related; type="application/octet-stream"`, 406, ""},
		{"MR_small_jp2klossless.dcm", "1", `multipart/related; type="image/jpeg"`, 406, ""},
		{"CT_small.dcm", "1", `multipart/related; type="image/jpeg"`, 406, ""},
		{"CT_small.dcm", "1", `application/dicom`, 406, ""},
		// Bad frame lists.
		{"CT_small.dcm", "2", ohif, 404, ""},
		{"CT_small.dcm", "0", ohif, 400, ""},
		{"CT_small.dcm", "1,x", ohif, 400, ""},
		{"rtdose.dcm", strings.Repeat("2,1,", 10), ohif, 400, ""},
	}
	for _, c := range cases {
		t.Run(c.file+"/"+c.frames+"/"+c.accept, func(t *testing.T) {
			resp := fetch(t, instanceURL(srv, uids[c.file])+"/frames/"+c.frames, c.accept)
			if resp.StatusCode != c.want {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, b, c.want)
			}
			if c.want != 200 {
				if resp.Header.Get("Warning") == "" {
					t.Error("no Warning saying why")
				}
				if c.want == 406 && !strings.Contains(resp.Header.Get("Warning"), "Ward does not") {
					t.Errorf("406 without the reason: %q", resp.Header.Get("Warning"))
				}
				return
			}
			parts := readParts(t, resp)
			list := strings.Split(c.frames, ",")
			if len(parts) != len(list) {
				t.Fatalf("%d parts for %d frames", len(parts), len(list))
			}
			want := pydicomFrames(t, c.file)
			for i, p := range parts {
				if p.typ != c.partType {
					t.Errorf("part %d: Content-Type %q, want %q", i, p.typ, c.partType)
				}
				n := 0
				for _, ch := range list[i] {
					n = n*10 + int(ch-'0')
				}
				if sha(p.body) != want[n-1] {
					t.Errorf("part %d (frame %d) differs from pydicom's", i, n)
				}
			}
		})
	}
	// Every instance's outcome was reported, once per request.
	fs.mu.Lock()
	defer fs.mu.Unlock()
	total := 0
	for _, errs := range fs.got {
		total += len(errs)
	}
	if total < len(cases)-4 {
		t.Errorf("%d Delivered reports for %d requests", total, len(cases))
	}
	if resp := fetch(t, srv.URL+Root+"/studies/1.2.3/series/1.2.3.4/instances/9.9.9/frames/1", ohif); resp.StatusCode != 404 {
		t.Errorf("unknown instance: %d", resp.StatusCode)
	}
	// HEAD: the headers, and the instance reported as not sent.
	uid := uids["CT_small.dcm"]
	fs.got[uid] = nil
	fs.mu.Unlock()
	resp, err := http.Head(instanceURL(srv, uid) + "/frames/1")
	fs.mu.Lock()
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/related") {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	resp.Body.Close()
	if got := fs.got[uid]; len(got) != 1 || !errors.Is(got[0], archive.ErrNotAttempted) {
		t.Errorf("HEAD reported %v, want ErrNotAttempted", got)
	}
}

// TestRendered: rendered and thumbnail resources decode as the type
// asked, at the size asked; compressed syntaxes Go cannot decode are a
// 406 that says why.
func TestRendered(t *testing.T) {
	files := []string{"CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_small_odd.dcm", "rtdose.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_rle_2frame.dcm"}
	srv, _, uids := testServer(t, files...)
	cases := []struct {
		path, accept string
		want         int
		format       string
		w, h         int
	}{
		{"CT_small.dcm/rendered", "", 200, "jpeg", 128, 128},
		{"CT_small.dcm/rendered", "image/png", 200, "png", 128, 128},
		{"CT_small.dcm/rendered?viewport=64,32", "image/png", 200, "png", 32, 32},
		{"CT_small.dcm/rendered?window=40,400,linear&quality=50", "image/jpeg", 200, "jpeg", 128, 128},
		{"CT_small.dcm/thumbnail", "image/*", 200, "jpeg", 128, 128},
		{"MR_small.dcm/frames/1/rendered?window=600,1600,sigmoid", "image/png", 200, "png", 64, 64},
		{"MR_small_bigendian.dcm/rendered", "image/png", 200, "png", 64, 64},
		{"SC_rgb_jpeg_dcmtk.dcm/rendered", "image/jpeg", 200, "jpeg", 100, 100},
		{"SC_rgb_jpeg_dcmtk.dcm/rendered?viewport=50,50", "image/png", 200, "png", 50, 50},
		{"SC_rgb_jpeg_dcmtk.dcm/thumbnail", "image/jpeg", 200, "jpeg", 128, 128}, // scaled, not the stored JPEG
		{"SC_rgb_small_odd.dcm/rendered", "image/png", 200, "png", 3, 3},
		{"SC_ybr_full_422_uncompressed.dcm/rendered", "image/png", 200, "png", 100, 100},
		{"rtdose.dcm/frames/15/rendered", "image/png", 200, "png", 10, 10},
		{"rtdose.dcm/frames/16/rendered", "image/png", 404, "", 0, 0},
		{"rtdose.dcm/frames/1,2/rendered", "image/png", 400, "", 0, 0},
		{"MR_small_jp2klossless.dcm/rendered", "", 406, "", 0, 0},
		{"MR_small_RLE.dcm/rendered", "", 406, "", 0, 0},
		{"MR_small_jpeg_ls_lossless.dcm/thumbnail", "", 406, "", 0, 0},
		{"CT_small.dcm/rendered", "image/gif", 406, "", 0, 0},
		{"CT_small.dcm/rendered?viewport=0,10", "", 400, "", 0, 0},
		{"CT_small.dcm/rendered?window=1,0", "", 400, "", 0, 0},
	}
	for _, c := range cases {
		t.Run(c.path+"/"+c.accept, func(t *testing.T) {
			name, rest, _ := strings.Cut(c.path, "/")
			resp := fetch(t, instanceURL(srv, uids[name])+"/"+rest, c.accept)
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, b, c.want)
			}
			if c.want != 200 {
				if c.want == 406 && !strings.Contains(resp.Header.Get("Warning"), "not supported") && !strings.Contains(resp.Header.Get("Warning"), "image/jpeg or image/png") {
					t.Errorf("406 without the reason: %q", resp.Header.Get("Warning"))
				}
				return
			}
			img, format, err := image.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if format != c.format || resp.Header.Get("Content-Type") != "image/"+c.format {
				t.Errorf("format %s, Content-Type %s, want %s", format, resp.Header.Get("Content-Type"), c.format)
			}
			if sz := img.Bounds().Size(); sz.X != c.w || sz.Y != c.h {
				t.Errorf("size %v, want %dx%d", sz, c.w, c.h)
			}
		})
	}
	// Study and series: a thumbnail of a representative instance; a
	// rendering of the whole is refused.
	for _, c := range []struct {
		path string
		want int
	}{
		{"/studies/1.2.3/thumbnail", 200},
		{"/studies/1.2.3/series/1.2.3.4/thumbnail?viewport=32,32", 200},
		{"/studies/1.2.3/rendered", 406},
		{"/studies/1.2.3/series/1.2.3.4/rendered", 406},
		{"/studies/9.9/thumbnail", 404},
	} {
		resp := fetch(t, srv.URL+Root+c.path, "")
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d (%s), want %d", c.path, resp.StatusCode, b, c.want)
			continue
		}
		if c.want == 200 {
			if _, _, err := image.Decode(bytes.NewReader(b)); err != nil {
				t.Errorf("%s: %v", c.path, err)
			}
		}
	}
}

// TestRenderGray: the VOI window and rescale are applied as PS3.3
// C.11.2.1.2 says, and MONOCHROME1 is inverted.
func TestRenderGray(t *testing.T) {
	info := &dicom.PixelInfo{Rows: 1, Columns: 4, SamplesPerPixel: 1, BitsAllocated: 16, BitsStored: 12, HighBit: 11, PixelRepresentation: 1,
		NumFrames: 1, Photometric: "MONOCHROME2", RescaleSlope: 2, RescaleIntercept: -100}
	// Stored values -50 (12-bit two's complement), 50, 100, 2047.
	raw := []byte{0xCE, 0x0F, 50, 0, 100, 0, 0xFF, 0x07}
	g := renderGray(info, raw, &voiWindow{center: 0, width: 201, function: "LINEAR"}).(*image.Gray)
	// Modality values -200, 0, 100, 3994.
	if want := []uint8{0, 128, 255, 255}; !bytes.Equal(g.Pix, want) {
		t.Errorf("linear: %v, want %v", g.Pix, want)
	}
	info.Photometric = "MONOCHROME1"
	g = renderGray(info, raw, &voiWindow{center: 0, width: 201, function: "LINEAR"}).(*image.Gray)
	if want := []uint8{255, 127, 0, 0}; !bytes.Equal(g.Pix, want) {
		t.Errorf("inverted: %v, want %v", g.Pix, want)
	}
}

func TestParseFrameList(t *testing.T) {
	if l, err := parseFrameList("1, 3,5"); err != nil || len(l) != 3 || l[2] != 5 {
		t.Errorf("%v %v", l, err)
	}
	for _, bad := range []string{"", "0", "-1", "1,,2", "a", strings.Repeat("1,", maxFrameList) + "1"} {
		if _, err := parseFrameList(bad); err == nil {
			t.Errorf("%q accepted", truncate(bad, 20))
		}
	}
}

// FuzzRender: any data set, in any of a few syntaxes, renders or fails
// with an error, never a panic, within the rendering bounds. Seeds in
// testdata/fuzz/FuzzRender (small pydicom files, TestWriteRenderSeeds).
func FuzzRender(f *testing.F) {
	syntaxes := []string{"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.5"}
	f.Fuzz(func(t *testing.T, data []byte, tsi uint8, png bool) {
		inst := &archive.Instance{
			TransferSyntaxUID: syntaxes[int(tsi)%len(syntaxes)],
			Open:              func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		}
		p := renderParams{format: "image/jpeg", vw: 16, vh: 16, explicit: true}
		if png {
			p.format = "image/png"
		}
		out, err := renderInstance(context.Background(), inst, 1, p)
		if err == nil {
			if _, _, err := image.Decode(bytes.NewReader(out)); err != nil {
				t.Fatalf("rendered an undecodable image: %v", err)
			}
		}
	})
}

// TestWriteRenderSeeds regenerates testdata/fuzz/FuzzRender from small
// pydicom files when WARD_WRITE_FUZZ_SEEDS=1.
func TestWriteRenderSeeds(t *testing.T) {
	if os.Getenv("WARD_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set WARD_WRITE_FUZZ_SEEDS=1 to regenerate")
	}
	syntaxes := []string{"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.5"}
	dir := filepath.Join("testdata", "fuzz", "FuzzRender")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"MR_small.dcm", "MR_small_bigendian.dcm", "rtdose.dcm", "SC_rgb_small_odd.dcm", "SC_rgb_small_odd_jpeg.dcm", "SC_rgb_rle_2frame.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm"} {
		meta, rc, err := dicom.OpenFile(filepath.Join(pydicomFiles, name))
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		idx := -1
		for i, s := range syntaxes {
			if s == meta.TransferSyntaxUID {
				idx = i
			}
		}
		if idx < 0 {
			t.Fatalf("%s: syntax %s", name, meta.TransferSyntaxUID)
		}
		seed := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\nbyte(" + strconv.QuoteRune(rune(idx)) + ")\nbool(" + strconv.FormatBool(idx%2 == 0) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(seed), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
