package interop

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/test/harness"
)

// QIDO-RS end to end (issue 16): a real `ward serve` with its web
// listener on loopback, objects stored by DCMTK storescu from pydicom's
// test files, a viewer made by `ward user add --role viewer` with a token
// from `ward token issue`, then searched over HTTP with wildcards, PN
// case-insensitivity, names outside ASCII (stored in Latin-1, Cyrillic and
// GB 18030 character sets, asked for in UTF-8), date ranges, UID lists,
// limit and offset, the server's maximum, every scope and gzip.

// qidoFiles are the pydicom files stored: uncompressed, one study each
// (chrFren and chrGerm are Latin-1, chrRuss ISO_IR 144, chrX1 GB 18030).
var qidoFiles = []string{
	"test_files/CT_small.dcm", "test_files/MR_small.dcm", "test_files/rtplan.dcm", "test_files/rtdose.dcm",
	"charset_files/chrFren.dcm", "charset_files/chrGerm.dcm", "charset_files/chrRuss.dcm", "charset_files/chrX1.dcm",
}

// qidoSite is `ward serve` holding qidoFiles, and a viewer's token.
type qidoSite struct {
	base  string // http://127.0.0.1:PORT/dicom-web
	token string
	// studies maps each file to its Study Instance UID.
	studies map[string]string
}

func startQIDOSite(t *testing.T) *qidoSite {
	t.Helper()
	requireTool(t, "go", "storescu", "dcmdump")
	requireDir(t, pydicomTestFiles)
	bin := harness.WardBinary(t)
	dir := harness.DataDir(t)
	port, httpPort := freePort(t), freePort(t)
	conf := "[dicom]\nlisten = \"127.0.0.1:" + strconv.Itoa(port) + "\"\nloopback_any_ae = true\nlockout_after = -1\n" +
		"[storage]\nmin_free = \"16MiB\"\n[web]\nmax_results = 6\n"
	if err := os.WriteFile(filepath.Join(dir, "ward.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ward := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--data", dir)...)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("ward %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
		}
		return out.String()
	}
	ward("a long passcode\n", "user", "add", "vera", "--role", "viewer")
	tok := strings.TrimSpace(ward("", "token", "issue", "vera", "--ttl", "1h"))
	p := harness.Start(t, exec.Command(bin, "serve", "--data", dir, "--http-listen", "127.0.0.1:"+strconv.Itoa(httpPort)), true)
	p.WaitServing(t)
	waitListen(t, httpPort)

	src := filepath.Dir(pydicomTestFiles)
	in := t.TempDir()
	site := &qidoSite{base: "http://127.0.0.1:" + strconv.Itoa(httpPort) + "/dicom-web", token: tok, studies: map[string]string{}}
	for _, f := range qidoFiles {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(in, filepath.Base(f))
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := dcmtk("dcmdump", "-q", "+P", "0020,000d", dst).Output()
		if err != nil {
			t.Fatalf("dcmdump %s: %v", f, err)
		}
		l, r := strings.Index(string(out), "["), strings.Index(string(out), "]")
		if l < 0 || r < l {
			t.Fatalf("%s: no Study Instance UID in %q", f, out)
		}
		site.studies[filepath.Base(f)] = string(out[l+1 : r])
	}
	if out, err := dcmtk("storescu", "-aet", "MODALITY", "-aec", "WARD", "+sd", "127.0.0.1", strconv.Itoa(port), in).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	return site
}

// get sends a QIDO-RS request with the viewer's token.
func (s *qidoSite) get(t *testing.T, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	rq, err := http.NewRequest(http.MethodGet, s.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	rq.Header.Set("Authorization", "Bearer "+s.token)
	for i := 0; i+1 < len(hdr); i += 2 {
		rq.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(rq)
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

type qidoMatch map[string]struct {
	VR    string            `json:"vr"`
	Value []json.RawMessage `json:"Value"`
}

func (m qidoMatch) first(tag string) string {
	a := m[tag]
	if len(a.Value) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(a.Value[0], &s) == nil {
		return s
	}
	var pn struct{ Alphabetic string }
	if json.Unmarshal(a.Value[0], &pn) == nil {
		return pn.Alphabetic
	}
	return string(a.Value[0])
}

// search runs a search that must answer 200 with DICOM JSON.
func (s *qidoSite) search(t *testing.T, path string) ([]qidoMatch, http.Header) {
	t.Helper()
	resp, b := s.get(t, path)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/dicom+json" {
		t.Fatalf("GET %s: %d %s %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	var ms []qidoMatch
	if err := json.Unmarshal(b, &ms); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, b)
	}
	return ms, resp.Header
}

// studiesOf are the files whose studies matched, sorted.
func (s *qidoSite) studiesOf(ms []qidoMatch) []string {
	var out []string
	for _, m := range ms {
		uid := m.first("0020000D")
		for f, u := range s.studies {
			if u == uid {
				out = append(out, f)
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestQIDOFromStorescu(t *testing.T) {
	s := startQIDOSite(t)
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"PatientName=compressedsamples*", []string{"CT_small.dcm", "MR_small.dcm"}},
		{"PatientName=COMPRESSEDSAMPLES%5Ect1", []string{"CT_small.dcm"}},
		{"PatientName=compressed%2A%5EMR?", []string{"MR_small.dcm"}},
		{"PatientName=last*", []string{"rtdose.dcm", "rtplan.dcm"}},
		{"PatientName=buc%5Ej%C3%A9r%C3%B4me", []string{"chrFren.dcm"}},
		{"PatientName=%C3%84neas*", []string{"chrGerm.dcm"}},
		{"PatientName=%D0%9B%D1%8E%D0%BA*", []string{"chrRuss.dcm"}},
		{"PatientName=wang*", []string{"chrX1.dcm"}},
		{"StudyDate=20040101-20041231", []string{"CT_small.dcm", "MR_small.dcm"}},
		{"StudyDate=-20031231", []string{"rtdose.dcm", "rtplan.dcm"}},
		{"StudyDate=20040826", []string{"MR_small.dcm"}},
		{"StudyInstanceUID=" + s.studies["CT_small.dcm"] + "," + s.studies["chrRuss.dcm"], []string{"CT_small.dcm", "chrRuss.dcm"}},
		{"ModalitiesInStudy=MR&PatientID=4MR1", []string{"MR_small.dcm"}},
		{"PatientID=nobody", nil},
	} {
		ms, _ := s.search(t, "/studies?"+c.query)
		if got := s.studiesOf(ms); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.query, got, c.want)
		}
	}
	// Names outside ASCII come back in UTF-8 whatever they were stored in.
	for q, want := range map[string]string{
		"PatientID=SCSFREN": "Buc^Jérôme", "PatientID=SCSGERM": "Äneas^Rüdiger", "PatientID=SCSRUSS": "Люкceмбypг",
	} {
		ms, _ := s.search(t, "/studies?"+q)
		if len(ms) != 1 || ms[0].first("00100010") != want {
			t.Errorf("%s: %v", q, ms)
		}
	}

	// The study-level attributes from the index, the RetrieveURL.
	ms, _ := s.search(t, "/studies?PatientID=1CT1")
	ct := s.studies["CT_small.dcm"]
	if len(ms) != 1 || ms[0].first("00080061") != "CT" || ms[0].first("00201206") != "1" || ms[0].first("00201208") != "1" ||
		ms[0].first("00081190") != s.base+"/studies/"+ct {
		t.Errorf("study attributes: %v", ms)
	}
	// Series and instances, at every scope.
	ms, _ = s.search(t, "/studies/"+ct+"/series")
	if len(ms) != 1 || ms[0].first("00080060") != "CT" {
		t.Fatalf("series of the CT study: %v", ms)
	}
	series := ms[0].first("0020000E")
	for _, path := range []string{
		"/studies/" + ct + "/series/" + series + "/instances",
		"/studies/" + ct + "/instances",
		"/instances?PatientID=1CT1",
		"/instances?SeriesInstanceUID=" + series,
	} {
		ms, _ := s.search(t, path)
		if len(ms) != 1 || ms[0].first("00080016") != "1.2.840.10008.5.1.4.1.1.2" || ms[0].first("00280010") != "128" {
			t.Errorf("%s: %v", path, ms)
		}
	}
	if ms, _ := s.search(t, "/series?Modality=MR"); len(s.studiesOf(ms)) != 1 {
		t.Errorf("/series?Modality=MR: %v", ms)
	}

	// limit and offset page through every study exactly once; the
	// Warning says when more remain.
	var all []string
	for off := 0; off < 10; off += 2 {
		ms, hd := s.search(t, "/studies?limit=2&offset="+strconv.Itoa(off))
		all = append(all, s.studiesOf(ms)...)
		if more := off+len(ms) < len(qidoFiles); more != (hd.Get("Warning") != "") {
			t.Errorf("offset %d: %d matches, Warning %q", off, len(ms), hd.Get("Warning"))
		}
	}
	slices.Sort(all)
	want := make([]string, 0, len(qidoFiles))
	for _, f := range qidoFiles {
		want = append(want, filepath.Base(f))
	}
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Errorf("pages listed %v, want %v", all, want)
	}
	// The server's maximum ([web] max_results = 6) cuts a viewer's
	// universal study list, with a Warning.
	ms, hd := s.search(t, "/studies")
	if len(ms) != 6 || !strings.Contains(hd.Get("Warning"), "maximum") {
		t.Errorf("universal study list: %d matches, Warning %q", len(ms), hd.Get("Warning"))
	}

	// Accept: */* is JSON; XML is served; application/dicom is 406; no token is 401; a bad parameter
	// is 400 with a message.
	for _, c := range []struct {
		path string
		hdr  []string
		code int
	}{
		{"/studies?PatientID=1CT1", []string{"Accept", "*/*"}, 200},
		{"/studies?PatientID=1CT1", []string{"Accept", `multipart/related; type="application/dicom+xml"`}, 200},
		{"/studies?PatientID=1CT1", []string{"Accept", `application/dicom`}, 406},
		{"/studies?PatientID=1CT1", []string{"Authorization", ""}, 401},
		{"/studies?color=blue", nil, 400},
		{"/studies?StudyDate=2004*", nil, 400},
	} {
		resp, b := s.get(t, c.path, c.hdr...)
		if resp.StatusCode != c.code {
			t.Errorf("%s %v: %d, want %d: %s", c.path, c.hdr, resp.StatusCode, c.code, b)
		}
	}
	// XML (PS3.19 Native DICOM Model) carries the same decoded name.
	if resp, b := s.get(t, "/studies?PatientID=SCSRUSS", "Accept", `multipart/related; type="application/dicom+xml"`); resp.StatusCode != 200 ||
		!strings.Contains(string(b), "<FamilyName>Люкceмбypг</FamilyName>") {
		t.Errorf("XML: %d %s", resp.StatusCode, b)
	}
	// gzip when asked (Go's client asks and unpacks by itself).
	resp, b := s.get(t, "/studies?limit=3")
	if !resp.Uncompressed || !json.Valid(b) {
		t.Errorf("gzip: Uncompressed %v", resp.Uncompressed)
	}
}
