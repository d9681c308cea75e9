package interop

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/test/harness"
)

// framesOracle prints, per file, its study, series and SOP instance UIDs
// and the SHA-256 of each frame as pydicom splits them (native frames
// little endian).
const framesOracle = `
import sys, json, hashlib, pydicom, numpy as np
from pydicom.encaps import generate_pixel_data_frame
out = {}
for f in sys.argv[1:]:
    ds = pydicom.dcmread(f)
    n = int(ds.get('NumberOfFrames', 1) or 1)
    ts = ds.file_meta.TransferSyntaxUID
    if ts.is_compressed:
        frames = list(generate_pixel_data_frame(ds.PixelData, n))
    else:
        ba = ds.BitsAllocated
        size = ds.Rows*ds.Columns*ds.SamplesPerPixel*ba//8
        frames = [ds.PixelData[i*size:(i+1)*size] for i in range(n)]
    out[f.split('/')[-1]] = {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID, "sop": ds.SOPInstanceUID,
        "ts": str(ts), "sha": [hashlib.sha256(b).hexdigest() for b in frames]}
print(json.dumps(out))
`

// TestDICOMwebFramesAndRendered: objects stored by DCMTK storescu (native,
// RLE, JPEG baseline, JPEG 2000) come out of a running `ward serve`'s
// WADO-RS frames resource equal to pydicom's reading of the files sent,
// with OHIF's Accept header and with each part labelled with its syntax;
// decompression is a 406 that says why; rendered and thumbnail resources
// decode as PNG and JPEG; a viewer token is needed.
func TestDICOMwebFramesAndRendered(t *testing.T) { framesAndRendered(t, "") }

// TestDICOMwebFramesS3 is TestDICOMwebFramesAndRendered with the objects
// in S3 (versitygw): frames are read by ranged GETs, backwards too.
func TestDICOMwebFramesS3(t *testing.T) {
	s3 := harness.StartS3(t)
	s3.SetEnv(t) // ward serve inherits the credentials
	framesAndRendered(t, "blobs = \""+s3.URL(s3.Bucket(t), "frames")+"\"\n")
}

// framesAndRendered runs the frames test with storage added to the
// [storage] table of ward.toml.
func framesAndRendered(t *testing.T, storage string) {
	requireTool(t, "storescu", "go")
	requirePydicom(t)
	files := map[string]string{ // file: storescu's syntax option
		"CT_small.dcm":              "",
		"rtdose.dcm":                "",
		"SC_rgb_rle_2frame.dcm":     "-xr",
		"SC_rgb_jpeg_dcmtk.dcm":     "-xy",
		"MR_small_jp2klossless.dcm": "-xv",
	}
	var paths []string
	for f := range files {
		paths = append(paths, filepath.Join(pydicomTestFiles, f))
	}
	out, err := exec.Command("/usr/bin/python3", append([]string{"-c", framesOracle}, paths...)...).Output()
	if err != nil {
		requirePydicom(t)
		t.Fatalf("pydicom oracle: %v", err)
	}
	var want map[string]struct {
		Study, Series, Sop, TS string
		SHA                    []string
	}
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}

	bin := harness.WardBinary(t)
	dir := harness.DataDir(t)
	dport, hport := freePort(t), freePort(t)
	conf := "[dicom]\nlisten = \"127.0.0.1:" + strconv.Itoa(dport) + "\"\n[storage]\nmin_free = \"16MiB\"\n" + storage
	if err := os.WriteFile(filepath.Join(dir, "ward.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	harness.Start(t, exec.Command(bin, "serve", "--data", dir, "--http-listen", "127.0.0.1:"+strconv.Itoa(hport)), true)
	waitListen(t, dport)
	waitListen(t, hport)
	for {
		if _, err := os.Stat(filepath.Join(dir, "admin.sock")); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	wardCmd := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--data", dir)...)
		cmd.Stdin = strings.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("ward %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	wardCmd("", "peer", "add", "STORESCU", "--host", "127.0.0.1", "--allow", "store")
	for f, opt := range files {
		args := []string{"-aet", "STORESCU", "-aec", "WARD"}
		if opt != "" {
			args = append(args, opt)
		}
		args = append(args, "127.0.0.1", strconv.Itoa(dport), filepath.Join(pydicomTestFiles, f))
		if out, err := dcmtk("storescu", args...).CombinedOutput(); err != nil {
			t.Fatalf("storescu %s: %v\n%s", f, err, out)
		}
	}
	wardCmd("a viewer's passcode\n", "user", "add", "reader", "--role", "viewer")
	token := strings.TrimSpace(wardCmd("", "token", "issue", "reader"))

	base := "http://127.0.0.1:" + strconv.Itoa(hport) + "/dicom-web"
	get := func(path, accept string, auth bool) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		if auth {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		ct := resp.Header.Get("Content-Type")
		if strings.HasPrefix(ct, "multipart/") {
			return resp, nil
		}
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	instPath := func(f string) string {
		w := want[f]
		return "/studies/" + w.Study + "/series/" + w.Series + "/instances/" + w.Sop
	}
	const ohif = "multipart/related; type=application/octet-stream; transfer-syntax=*"

	if resp, _ := get(instPath("CT_small.dcm")+"/frames/1", ohif, false); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("frames without a token: %d", resp.StatusCode)
	}
	for _, c := range []struct {
		file, frames, accept, partType string
	}{
		{"CT_small.dcm", "1", ohif, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"},
		{"rtdose.dcm", "15,2,7", `multipart/related; type="application/octet-stream"`, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"},
		{"SC_rgb_rle_2frame.dcm", "1,2", ohif, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.5"},
		{"SC_rgb_jpeg_dcmtk.dcm", "1", `multipart/related; type="image/jpeg"; transfer-syntax=*`, "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"},
		{"MR_small_jp2klossless.dcm", "1", ohif, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.90"},
	} {
		req, _ := http.NewRequest(http.MethodGet, base+instPath(c.file)+"/frames/"+c.frames, nil)
		req.Header.Set("Accept", c.accept)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if resp.StatusCode != 200 || mt != "multipart/related" {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Fatalf("%s frames %s: %d %s", c.file, c.frames, resp.StatusCode, b)
		}
		mr := multipart.NewReader(resp.Body, params["boundary"])
		for i, fs := range strings.Split(c.frames, ",") {
			p, err := mr.NextPart()
			if err != nil {
				t.Fatalf("%s part %d: %v", c.file, i, err)
			}
			b, _ := io.ReadAll(p)
			n, _ := strconv.Atoi(fs)
			s := sha256.Sum256(b)
			if hex.EncodeToString(s[:]) != want[c.file].SHA[n-1] {
				t.Errorf("%s frame %d differs from pydicom's reading of the file sent", c.file, n)
			}
			if got := p.Header.Get("Content-Type"); got != c.partType {
				t.Errorf("%s part %d: Content-Type %q, want %q", c.file, i, got, c.partType)
			}
		}
		if _, err := mr.NextPart(); err != io.EOF {
			t.Errorf("%s: more parts or a broken end: %v", c.file, err)
		}
		resp.Body.Close()
	}
	// What Ward cannot give: decompressed frames, rendered JPEG 2000.
	for _, c := range []struct{ path, accept, says string }{
		{instPath("SC_rgb_jpeg_dcmtk.dcm") + "/frames/1", `multipart/related; type="application/octet-stream"`, "does not decompress"},
		{instPath("MR_small_jp2klossless.dcm") + "/rendered", "image/jpeg", "JPEG 2000"},
	} {
		resp, _ := get(c.path, c.accept, true)
		if resp.StatusCode != http.StatusNotAcceptable || !strings.Contains(resp.Header.Get("Warning"), c.says) {
			t.Errorf("%s: %d %q, want 406 saying %q", c.path, resp.StatusCode, resp.Header.Get("Warning"), c.says)
		}
	}
	if resp, _ := get(instPath("CT_small.dcm")+"/frames/2", ohif, true); resp.StatusCode != http.StatusNotFound {
		t.Errorf("frame 2 of a single frame: %d", resp.StatusCode)
	}
	// Rendered and thumbnails.
	for _, c := range []struct {
		path, accept, format string
		side                 int
	}{
		{instPath("CT_small.dcm") + "/rendered", "image/png", "png", 128},
		{instPath("rtdose.dcm") + "/frames/3/rendered?viewport=40,40", "image/jpeg", "jpeg", 40},
		{instPath("SC_rgb_jpeg_dcmtk.dcm") + "/rendered", "image/jpeg", "jpeg", 100},
		{instPath("SC_rgb_rle_2frame.dcm") + "/thumbnail", "image/png", "", 0}, // RLE: 406
		{"/studies/" + want["CT_small.dcm"].Study + "/thumbnail", "image/jpeg", "jpeg", 128},
		{"/studies/" + want["CT_small.dcm"].Study + "/series/" + want["CT_small.dcm"].Series + "/thumbnail?viewport=64,64", "", "jpeg", 64},
	} {
		resp, b := get(c.path, c.accept, true)
		if c.format == "" {
			if resp.StatusCode != http.StatusNotAcceptable {
				t.Errorf("%s: %d, want 406", c.path, resp.StatusCode)
			}
			continue
		}
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", c.path, resp.StatusCode, b)
			continue
		}
		img, format, err := image.Decode(bytes.NewReader(b))
		if err != nil || format != c.format {
			t.Errorf("%s: %s %v", c.path, format, err)
			continue
		}
		if sz := img.Bounds().Size(); max(sz.X, sz.Y) != c.side {
			t.Errorf("%s: size %v, want the longer side %d", c.path, sz, c.side)
		}
	}
	// The audit trail names the user for what was sent.
	readAudit(t, dir, func(recs []audit.Record) bool {
		for _, r := range recs {
			if r.Event == "instances-transferred" && r.Outcome == 0 &&
				strings.Contains(r.XML, "reader") && strings.Contains(r.XML, want["rtdose.dcm"].Study) {
				return true
			}
		}
		return false
	})
}
