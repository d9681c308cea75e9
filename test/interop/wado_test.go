package interop

import (
	"bytes"
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
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/test/harness"
)

// wadoSite is a `ward serve` with its DICOM and HTTP listeners on
// loopback, for DICOMweb tests driven by clients nobody here wrote.
type wadoSite struct {
	bin, dir string
	dicom    int
	base     string // http://127.0.0.1:PORT
}

func startWADOSite(t *testing.T) *wadoSite {
	t.Helper()
	requireTool(t, "go")
	s := &wadoSite{bin: harness.WardBinary(t), dir: harness.DataDir(t), dicom: freePort(t)}
	hport := freePort(t)
	s.base = "http://127.0.0.1:" + strconv.Itoa(hport)
	// storescu under its default AE title: the loopback opt-in admits it.
	conf := "[dicom]\nlisten = \"127.0.0.1:" + strconv.Itoa(s.dicom) + "\"\nloopback_any_ae = true\n[storage]\nmin_free = \"16MiB\"\n"
	if err := os.WriteFile(filepath.Join(s.dir, "ward.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	harness.Start(t, exec.Command(s.bin, "serve", "--data", s.dir, "--http-listen", "127.0.0.1:"+strconv.Itoa(hport)), true)
	waitListen(t, s.dicom)
	waitListen(t, hport)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(s.dir, "admin.sock")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no admin socket")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// ward runs a ward command on the site's data directory (stdin given)
// and returns its standard output.
func (s *wadoSite) ward(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(s.bin, append(args, "--data", s.dir)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("ward %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// get sends GET path with the token (none: no Authorization) and Accept.
func (s *wadoSite) get(t *testing.T, path, token, accept string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rsp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rsp.Body.Close() })
	return rsp
}

// wadoUIDs reads a file's study, series and SOP instance UIDs and its
// transfer syntax.
func wadoUIDs(t *testing.T, path string) (study, series, sop, ts string) {
	t.Helper()
	meta, rc, err := dicom.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tsx := dicom.LookupTransferSyntax(meta.TransferSyntaxUID)
	want := map[dicom.Tag]bool{dicom.StudyInstanceUID: true, dicom.SeriesInstanceUID: true, dicom.SOPInstanceUID: true}
	a, err := dicom.Scan(rc, tsx, func(tg dicom.Tag) bool { return want[tg] }, 1024)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return a.String(dicom.StudyInstanceUID), a.String(dicom.SeriesInstanceUID), a.String(dicom.SOPInstanceUID), meta.TransferSyntaxUID
}

// wadoParts saves the parts of a multipart/related; type=application/dicom
// answer as files and returns them with each part's Content-Type.
func wadoParts(t *testing.T, rsp *http.Response) (files, types []string) {
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
	dir := t.TempDir()
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			return files, types
		}
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, strconv.Itoa(i)+".dcm")
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		files, types = append(files, f), append(types, p.Header.Get("Content-Type"))
	}
}

// fileSyntax is the transfer syntax a Part 10 file's meta names.
func fileSyntax(t *testing.T, path string) string {
	t.Helper()
	meta, rc, err := dicom.OpenFile(path)
	if err != nil {
		t.Fatalf("%s is not a DICOM file: %v", path, err)
	}
	rc.Close()
	return meta.TransferSyntaxUID
}

// TestWADORetrieveDCMTKStored: objects stored by DCMTK storescu (each in
// its own transfer syntax) come back by WADO-RS (Go's net/http and
// mime/multipart as the client) and by WADO-URI (curl) equal to the
// originals (compared with pydicom), as stored or in the PS3.18 default;
// a request without a token, with a bad one or with one whose user lost
// its roles is refused; each retrieve is audited with the user.
func TestWADORetrieveDCMTKStored(t *testing.T) {
	requireTool(t, "storescu", "dcmconv", "curl")
	requirePydicom(t)
	s := startWADOSite(t)
	s.ward(t, "a viewer's passcode\n", "user", "add", "wadoviewer", "--role", "viewer")
	token := strings.TrimSpace(s.ward(t, "", "token", "issue", "wadoviewer", "--ttl", "1h"))
	s.ward(t, "another passcode\n", "user", "add", "wadogone", "--role", "viewer")
	goneToken := strings.TrimSpace(s.ward(t, "", "token", "issue", "wadogone", "--ttl", "1h"))
	s.ward(t, "", "user", "roles", "wadogone", "--role", "")

	type object struct {
		file, study, series, sop, ts string
	}
	var objs []object
	seen := map[string]bool{}
	for _, name := range []string{
		"CT_small.dcm",           // explicit VR little endian
		"rtplan.dcm",             // implicit VR little endian
		"MR_small_bigendian.dcm", // explicit VR big endian
		"image_dfl.dcm",          // deflated
		"SC_rgb_jpeg_dcmtk.dcm",  // JPEG baseline
		"SC_rgb_rle.dcm",         // RLE
		"JPEG2000.dcm",           // JPEG 2000
		"MR_small_jpeg_ls_lossless.dcm",
	} {
		f := filepath.Join(pydicomTestFiles, name)
		study, series, sop, ts := wadoUIDs(t, f)
		if seen[sop] {
			continue
		}
		seen[sop] = true
		args := []string{"-to", "20", "-aec", "WARD", "-aet", "STORESCU"}
		if x := storescuSyntaxFlag[ts]; x != "" {
			args = append(args, x)
		}
		args = append(args, "127.0.0.1", strconv.Itoa(s.dicom), f)
		if out, ok := harness.RunDCMTK(t, "storescu", args...); !ok {
			t.Fatalf("storescu %s:\n%s", name, out)
		}
		objs = append(objs, object{f, study, series, sop, ts})
	}

	for _, o := range objs {
		name := filepath.Base(o.file)
		path := "/dicom-web/studies/" + o.study + "/series/" + o.series + "/instances/" + o.sop
		native := dicom.IsUncompressed(dicom.LookupTransferSyntax(o.ts))
		t.Run(name, func(t *testing.T) {
			// As stored.
			files, types := wadoParts(t, s.get(t, path, token, `multipart/related; type="application/dicom"; transfer-syntax=*`))
			if len(files) != 1 {
				t.Fatalf("%d parts", len(files))
			}
			if ts := fileSyntax(t, files[0]); types[0] != "application/dicom; transfer-syntax="+ts {
				t.Errorf("part Content-Type %q for a file in %s", types[0], ts)
			}
			if eq, why := datasetsEqual(t, o.file, files[0]); !eq {
				t.Errorf("WADO-RS as stored differs from the original:\n%s", why)
			}
			// The PS3.18 default: Explicit VR Little Endian for a native
			// object (transcoded), a compressed one as stored.
			files, _ = wadoParts(t, s.get(t, path, token, `multipart/related; type=application/dicom`))
			wantTS := o.ts
			if native {
				wantTS = dicom.ExplicitVRLittleEndian.UID
			}
			if got := fileSyntax(t, files[0]); got != wantTS {
				t.Errorf("default syntax: got %s, want %s", got, wantTS)
			}
			// Pixel data is compared byte for byte: a native original is
			// compared as DCMTK's dcmconv writes it in Explicit VR Little
			// Endian (big endian pixel data swapped).
			ref := o.file
			if native {
				ref = filepath.Join(t.TempDir(), "ref.dcm")
				if out, ok := harness.RunDCMTK(t, "dcmconv", "+te", o.file, ref); !ok {
					t.Fatalf("dcmconv:\n%s", out)
				}
			}
			if eq, why := datasetsEqual(t, ref, files[0]); !eq {
				t.Errorf("WADO-RS in the default syntax differs from the original:\n%s", why)
			}
			// A compressed object asked for uncompressed: 406, saying why.
			if !native {
				rsp := s.get(t, path, token, `multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1`)
				if b, _ := io.ReadAll(rsp.Body); rsp.StatusCode != http.StatusNotAcceptable || !strings.Contains(string(b), "stored in") {
					t.Errorf("compressed asked as native: %d %s", rsp.StatusCode, b)
				}
			}

			// WADO-URI with curl.
			out := filepath.Join(t.TempDir(), "uri.dcm")
			url := s.base + "/wado?requestType=WADO&studyUID=" + o.study + "&seriesUID=" + o.series + "&objectUID=" + o.sop + "&contentType=application%2Fdicom&transferSyntax=*"
			cmd := exec.Command("curl", "-sS", "--fail-with-body", "-H", "Authorization: Bearer "+token, "-o", out, url)
			if b, err := cmd.CombinedOutput(); err != nil {
				body, _ := os.ReadFile(out)
				t.Fatalf("curl: %v\n%s%s", err, b, body)
			}
			if eq, why := datasetsEqual(t, o.file, out); !eq {
				t.Errorf("WADO-URI differs from the original:\n%s", why)
			}
		})
	}

	// A whole study: every instance of it, one part each.
	st := objs[0].study
	want := 0
	for _, o := range objs {
		if o.study == st {
			want++
		}
	}
	if files, _ := wadoParts(t, s.get(t, "/dicom-web/studies/"+st, token, "*/*")); len(files) != want {
		t.Errorf("study retrieve: %d parts, want %d", len(files), want)
	}

	// Refused: no token (401 with a Bearer challenge), a token nobody
	// issued, a token whose user has no role any more; and nothing is
	// found that is not stored (404).
	study := "/dicom-web/studies/" + objs[0].study
	rsp := s.get(t, study, "", "")
	if rsp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(rsp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("without a token: %d %q", rsp.StatusCode, rsp.Header.Get("WWW-Authenticate"))
	}
	for _, bad := range []string{goneToken, "ward_" + strings.Repeat("x", 40)} {
		if rsp := s.get(t, study, bad, ""); rsp.StatusCode != http.StatusUnauthorized && rsp.StatusCode != http.StatusForbidden {
			t.Errorf("a refused token: %d", rsp.StatusCode)
		}
	}
	uri := "/wado?requestType=WADO&studyUID=" + objs[0].study + "&seriesUID=" + objs[0].series + "&objectUID=" + objs[0].sop + "&contentType=application%2Fdicom"
	if rsp := s.get(t, uri, "", ""); rsp.StatusCode != http.StatusUnauthorized {
		t.Errorf("WADO-URI without a token: %d", rsp.StatusCode)
	}
	if rsp := s.get(t, "/dicom-web/studies/1.2.3.4.5", token, ""); rsp.StatusCode != http.StatusNotFound {
		t.Errorf("a study not stored: %d", rsp.StatusCode)
	}

	// Audited: the instances went to the viewer (DICOM Instances
	// Transferred, by the user's name).
	readAudit(t, s.dir, func(r []audit.Record) bool {
		return hasEvent(r, "instances-transferred", audit.OutcomeSuccess, "wadoviewer")
	})
}
