package interop

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/test/harness"
)

// metadataOracle prints, for each file named on the command line, its
// UIDs, pydicom's DICOM JSON (bulk data above 1 KiB as "BULK") and the
// SHA-256 of its Pixel Data.
const metadataOracle = `
import sys, json, hashlib, pydicom
out = {}
for p in sys.argv[1:]:
    ds = pydicom.dcmread(p)
    px = ds.get((0x7FE0, 0x0010))
    out[p] = {
        "uids": [ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID],
        "json": ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda e: "BULK"),
        "pixel": hashlib.sha256(px.value).hexdigest() if px is not None and px.value else "",
    }
print(json.dumps(out))
`

type oracleFile struct {
	UIDs  []string       `json:"uids"`
	JSON  map[string]any `json:"json"`
	Pixel string         `json:"pixel"`
}

// TestMetadataMatchesPydicom: objects stored by DCMTK storescu into a real
// ward serve come back from WADO-RS metadata (with a viewer's token) as
// pydicom reads them: every attribute, in sequences too, with non-ASCII
// person names in several character sets; the Pixel Data's BulkDataURI
// leads to the same bytes; an encapsulated object's pixel data is sent to
// frames.
func TestMetadataMatchesPydicom(t *testing.T) {
	requireTool(t, "storescu", "go")
	requirePydicom(t)
	charsets := filepath.Join(filepath.Dir(pydicomTestFiles), "charset_files")
	files := []string{
		filepath.Join(pydicomTestFiles, "CT_small.dcm"),
		filepath.Join(pydicomTestFiles, "MR_small.dcm"),
		filepath.Join(pydicomTestFiles, "SC_rgb_jpeg_dcmtk.dcm"),
		filepath.Join(pydicomTestFiles, "rtplan.dcm"),
		filepath.Join(charsets, "chrGerm.dcm"),
		filepath.Join(charsets, "chrH31.dcm"),
		filepath.Join(charsets, "chrX1.dcm"),
		filepath.Join(charsets, "chrRuss.dcm"),
	}
	out, err := exec.Command("/usr/bin/python3", append([]string{"-c", metadataOracle}, files...)...).Output()
	if err != nil {
		t.Fatalf("pydicom: %v", err)
	}
	var oracle map[string]oracleFile
	if err := json.Unmarshal(out, &oracle); err != nil {
		t.Fatal(err)
	}

	bin, dir, dport, hport := wardServeWeb(t)
	wardCmd := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--data", dir)...)
		cmd.Stdin = strings.NewReader(stdin)
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		if err := cmd.Run(); err != nil {
			t.Fatalf("ward %s: %v\n%s%s", strings.Join(args, " "), err, o.String(), e.String())
		}
		return o.String()
	}
	wardCmd("", "peer", "add", "MOD", "--host", "127.0.0.1", "--allow", "echo,store")
	wardCmd("a viewer's passcode\n", "user", "add", "vera", "--role", "viewer")
	token := strings.TrimSpace(wardCmd("", "token", "issue", "vera"))

	for _, f := range files {
		// One association per file: each proposes its own syntax.
		if out, err := dcmtk("storescu", "-xy", "-to", "20", "-aet", "MOD", "-aec", "WARD", "127.0.0.1", strconv.Itoa(dport), f).CombinedOutput(); err != nil {
			t.Fatalf("storescu %s: %v\n%s", filepath.Base(f), err, out)
		}
	}

	base := "http://127.0.0.1:" + strconv.Itoa(hport)
	get := func(url, accept string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
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
	// Without the token: 401.
	if resp, err := http.Get(base + "/dicom-web/studies/" + oracle[files[0]].UIDs[0] + "/metadata"); err != nil || resp.StatusCode != 401 {
		t.Fatalf("metadata without a token: %v %v", resp.Status, err)
	}

	defer func() {
		// Reading metadata is audited as Instances Accessed by the user.
		readAudit(t, dir, func(r []audit.Record) bool {
			return hasEvent(r, "instances-accessed", audit.OutcomeSuccess, `UserID="vera"`)
		})
	}()
	for _, f := range files {
		o := oracle[f]
		t.Run(filepath.Base(f), func(t *testing.T) {
			inst := "/dicom-web/studies/" + o.UIDs[0] + "/series/" + o.UIDs[1] + "/instances/" + o.UIDs[2]
			// The series' metadata holds the instance (each file is its
			// own series here).
			resp, body := get(base+"/dicom-web/studies/"+o.UIDs[0]+"/series/"+o.UIDs[1]+"/metadata", "application/dicom+json")
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/dicom+json" {
				t.Fatalf("%s: %s", resp.Status, body)
			}
			var arr []map[string]any
			if err := json.Unmarshal(body, &arr); err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(arr, func(m map[string]any) bool {
				return reflect.DeepEqual(m["00080018"].(map[string]any)["Value"], []any{o.UIDs[2]})
			})
			if i < 0 {
				t.Fatalf("the instance is not in its series' metadata")
			}
			got := arr[i]
			var diffs []string
			compareJSON(&diffs, "", o.JSON, got, base+inst+"/bulkdata")
			for _, d := range diffs {
				t.Error(d)
			}

			if o.Pixel == "" {
				return
			}
			px, _ := got["7FE00010"].(map[string]any)
			uri, _ := px["BulkDataURI"].(string)
			if uri == "" {
				t.Fatalf("pixel data: %v", px)
			}
			resp, body = get(uri, `multipart/related; type="application/octet-stream"`)
			if filepath.Base(f) == "SC_rgb_jpeg_dcmtk.dcm" {
				if resp.StatusCode != 406 || !strings.Contains(string(body), "frames") {
					t.Errorf("encapsulated pixel data as bulk data: %s: %s", resp.Status, body)
				}
				return
			}
			if resp.StatusCode != 200 {
				t.Fatalf("bulk data: %s: %s", resp.Status, body)
			}
			_, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
			part, err := multipart.NewReader(bytes.NewReader(body), params["boundary"]).NextPart()
			if err != nil {
				t.Fatal(err)
			}
			value, _ := io.ReadAll(part)
			if sum := sha256.Sum256(value); hex.EncodeToString(sum[:]) != o.Pixel {
				t.Errorf("the pixel data's bulk data (%d bytes) differs from pydicom's", len(value))
			}
		})
	}
}

// compareJSON compares pydicom's DICOM JSON of a data set (want) with
// Ward's (got), recording the differences: the same attributes, VRs and
// values (numbers as numbers); bulk data (pydicom's "BULK") as a
// BulkDataURI under bulk followed by the element's path. Pixel Data is
// bulk data at Ward whatever its length.
func compareJSON(diffs *[]string, path string, want, got map[string]any, bulk string) {
	for tag, w := range want {
		if strings.HasPrefix(tag, "0002") || tag == "FFFCFFFC" {
			continue // the file meta information and padding are no attributes
		}
		p := strings.TrimPrefix(path+"/"+tag, "/")
		g, ok := got[tag].(map[string]any)
		if !ok {
			*diffs = append(*diffs, fmt.Sprintf("%s: missing", p))
			continue
		}
		wm := w.(map[string]any)
		if wm["vr"] != g["vr"] {
			*diffs = append(*diffs, fmt.Sprintf("%s: vr %v, pydicom %v", p, g["vr"], wm["vr"]))
		}
		switch {
		case wm["BulkDataURI"] != nil || (tag == "7FE00010" && g["BulkDataURI"] != nil):
			if g["BulkDataURI"] != bulk+"/"+p {
				*diffs = append(*diffs, fmt.Sprintf("%s: BulkDataURI %v, want %s", p, g["BulkDataURI"], bulk+"/"+p))
			}
		case wm["InlineBinary"] != nil:
			if g["InlineBinary"] != wm["InlineBinary"] {
				*diffs = append(*diffs, fmt.Sprintf("%s: InlineBinary differs", p))
			}
		case wm["vr"] == "SQ":
			wi, _ := wm["Value"].([]any)
			gi, _ := g["Value"].([]any)
			if len(wi) != len(gi) {
				*diffs = append(*diffs, fmt.Sprintf("%s: %d items, pydicom %d", p, len(gi), len(wi)))
				continue
			}
			for i := range wi {
				compareJSON(diffs, p+"/"+strconv.Itoa(i), wi[i].(map[string]any), gi[i].(map[string]any), bulk)
			}
		default:
			// An empty value among several is null (PS3.18 F.2.5);
			// pydicom writes "".
			wv, _ := json.Marshal(wm["Value"])
			wv = bytes.ReplaceAll(wv, []byte(`""`), []byte("null"))
			gv, _ := json.Marshal(g["Value"])
			if !bytes.Equal(wv, gv) {
				*diffs = append(*diffs, fmt.Sprintf("%s: Value %s, pydicom %s", p, gv, wv))
			}
		}
	}
	for tag := range got {
		if _, ok := want[tag]; !ok {
			*diffs = append(*diffs, fmt.Sprintf("%s: not in pydicom's", strings.TrimPrefix(path+"/"+tag, "/")))
		}
	}
}

// wardServeWeb is wardServe with the web listener on a known loopback
// port: it returns the binary, the data directory and the DICOM and HTTP
// ports.
func wardServeWeb(t *testing.T) (bin, dir string, dport, hport int) {
	t.Helper()
	bin = harness.WardBinary(t)
	dir = harness.DataDir(t)
	dport, hport = freePort(t), freePort(t)
	conf := "[dicom]\nlisten = \"127.0.0.1:" + strconv.Itoa(dport) + "\"\naccept_compressed = true\n[storage]\nmin_free = \"16MiB\"\n"
	if err := os.WriteFile(filepath.Join(dir, "ward.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	harness.Start(t, exec.Command(bin, "serve", "--data", dir, "--http-listen", "127.0.0.1:"+strconv.Itoa(hport)), true)
	deadline := time.Now().Add(60 * time.Second)
	for {
		c1, err1 := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(dport))
		c2, err2 := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(hport))
		for _, c := range []net.Conn{c1, c2} {
			if c != nil {
				c.Close()
			}
		}
		if err1 == nil && err2 == nil {
			if _, err := os.Stat(filepath.Join(dir, "admin.sock")); err == nil {
				return bin, dir, dport, hport
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("ward serve did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
