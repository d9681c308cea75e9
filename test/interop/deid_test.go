package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/dicom/deid"
	"github.com/ward-pacs/ward/internal/cli"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/policy/identity"
	"github.com/ward-pacs/ward/test/harness"
)

const pixelmedJar = "/usr/share/java/pixelmed.jar"

var numbers = regexp.MustCompile(`[0-9][0-9.]*`)

// flatten lists every element of ds by path (sequence[item]/tag) with its
// value trimmed of padding; a sequence's value is its item count.
func flatten(ds *dicom.DataSet, prefix string, out map[string]string) {
	for _, e := range ds.Elements {
		p := prefix + fmt.Sprintf("%04X,%04X", e.Tag.Group(), e.Tag.Element())
		if e.IsSequence() {
			out[p] = fmt.Sprintf("SQ[%d]", len(e.Items))
			for i, it := range e.Items {
				flatten(it, fmt.Sprintf("%s[%d]/", p, i), out)
			}
			continue
		}
		if e.Fragments != nil {
			out[p] = "pixels"
			continue
		}
		out[p] = string(bytes.TrimRight(e.Value, "\x00 "))
	}
}

func readFlat(t *testing.T, path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	meta, br, err := dicom.ReadFileHeader(bytes.NewReader(b), dicom.DefaultMetaLimit)
	if err != nil {
		return nil, err
	}
	ds, err := dicom.ReadDataSet(br, dicom.LookupTransferSyntax(meta.TransferSyntaxUID), 1<<30)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	flatten(ds, "", out)
	return out, nil
}

// fate is what a de-identifier did with one element of the original.
func fate(orig, out map[string]string, p string) string {
	v, ok := out[p]
	switch {
	case !ok:
		return "removed"
	case v == orig[p]:
		return "kept"
	case v == "" || v == "SQ[0]":
		return "emptied"
	}
	return "replaced"
}

// dciodvfyErrors runs dicom3tools' validator and returns its error lines.
func dciodvfyErrors(t *testing.T, path string) map[string]bool {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "dciodvfy", path).CombinedOutput()
	errs := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Error") {
			// UIDs and values quoted in the message change with
			// de-identification: compare the message without them.
			errs[numbers.ReplaceAllString(strings.TrimSpace(l), "#")] = true
		}
	}
	return errs
}

// TestDeidentifyAgainstPixelMed de-identifies pydicom's test files with
// Ward's Basic Profile and with PixelMed's library (every "keep" option
// off: a strict Basic Profile, run by testdata/PixelmedDeid.java), and
// compares, element by element, what each removed, emptied, replaced or
// kept. Where they differ, Ward must not keep an original value PixelMed
// took out; the other differences must be among pixelmedDifferences, the
// ones docs/deidentification.md justifies (the test logs them).
// dicom3tools' dciodvfy must find no error in Ward's output that it does
// not find in the input.
func TestDeidentifyAgainstPixelMed(t *testing.T) {
	requirePydicom(t)
	for _, c := range []string{"java", "dciodvfy"} {
		if _, err := exec.LookPath(c); err != nil {
			testci.SkipOrFail(t, "%s missing (Debian pixelmed-apps, dicom3tools)", c)
		}
	}
	if _, err := os.Stat(pixelmedJar); err != nil {
		testci.SkipOrFail(t, "PixelMed missing (Debian pixelmed-apps): %v", err)
	}
	inputs, _ := filepath.Glob(filepath.Join(harness.PydicomTestFiles, "*.dcm"))
	charsets, _ := filepath.Glob(filepath.Join(filepath.Dir(harness.PydicomTestFiles), "charset_files", "*.dcm"))
	inputs = append(inputs, charsets...)
	wardDir, pmDir := t.TempDir(), t.TempDir()
	profile, err := deid.ParseProfile("basic")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &deid.Config{Profile: profile, Secret: bytes.Repeat([]byte{7}, 32), AcceptBurnedIn: true}
	var done []string
	for _, in := range inputs {
		// Objects Ward cannot read, or that carry no SOP instance, are
		// refused, with a reason.
		f, err := os.Open(in)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		_, err = deid.Transform(&out, f, cfg)
		f.Close()
		if err != nil {
			if errors.Is(err, deid.ErrBurnedIn) {
				t.Errorf("%s: %v (the risk was accepted)", filepath.Base(in), err)
			}
			continue
		}
		if err := os.WriteFile(filepath.Join(wardDir, filepath.Base(in)), out.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		done = append(done, in)
	}
	// One Java process for every file (the machine is shared).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src := filepath.Join(harness.RepoRoot(), "test", "interop", "testdata", "PixelmedDeid.java")
	cmd := exec.CommandContext(ctx, "java", append([]string{"-cp", pixelmedJar, src, pmDir}, done...)...)
	pmOut, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("PixelMed: %v\n%s", err, pmOut)
	}
	diffs := map[string][]string{} // reason: examples
	compared := 0
	for _, in := range done {
		name := filepath.Base(in)
		orig, err := readFlat(t, in)
		if err != nil {
			continue
		}
		ward, err := readFlat(t, filepath.Join(wardDir, name))
		if err != nil {
			t.Errorf("%s: Ward's output unreadable: %v", name, err)
			continue
		}
		pm, err := readFlat(t, filepath.Join(pmDir, name))
		if err != nil {
			continue // PixelMed could not (compressed pixel data it has no codec for)
		}
		compared++
		for p := range orig {
			if strings.HasPrefix(p, "0002,") || strings.Contains(p, "0000") && strings.HasSuffix(p, ",0000") {
				continue // meta and group lengths: rewritten by both
			}
			fw, fp := fate(orig, ward, p), fate(orig, pm, p)
			if fw == fp {
				continue
			}
			kw := dicom.Keyword(tagOf(p))
			// PixelMed re-encodes pixel data; a sequence's fate is its
			// elements'; an empty value has nothing to keep.
			empty := orig[p] == "" || strings.HasPrefix(orig[p], "SQ[")
			if fw == "kept" && !empty && tagOf(p) != dicom.PixelData {
				t.Errorf("%s %s (%s): Ward kept %q, PixelMed %s it", name, p, kw, orig[p], fp)
				continue
			}
			if empty && fw == "kept" {
				continue
			}
			reason := fmt.Sprintf("Ward %s, PixelMed %s", fw, fp)
			diffs[reason] = append(diffs[reason], kw)
		}
		for p := range ward {
			if _, ok := orig[p]; !ok {
				if _, ok := pm[p]; !ok {
					diffs["added by Ward only"] = append(diffs["added by Ward only"], dicom.Keyword(tagOf(p)))
				}
			}
		}
		// dciodvfy: no new errors.
		before := dciodvfyErrors(t, in)
		for e := range dciodvfyErrors(t, filepath.Join(wardDir, name)) {
			if !before[e] {
				t.Errorf("%s: dciodvfy finds a new error in Ward's output: %s", name, e)
			}
		}
	}
	if compared < 15 {
		t.Errorf("only %d files compared", compared)
	}
	var reasons []string
	for r := range diffs {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		t.Logf("%s: %s", r, uniq(diffs[r]))
		for _, kw := range strings.Fields(uniq(diffs[r])) {
			if !strings.Contains(" "+pixelmedDifferences[r]+" ", " "+kw+" ") {
				t.Errorf("%s: %s, a difference neither listed here nor justified in docs/deidentification.md", r, kw)
			}
		}
	}
	t.Logf("%d files compared", compared)
}

// pixelmedDifferences are the differences from PixelMed that
// docs/deidentification.md ("Compared with PixelMed") justifies, by what
// each did, then the attributes (keywords); any other fails the test.
var pixelmedDifferences = map[string]string{
	// X/Z, X/D, X/Z/D, Z: Ward keeps the attribute without its value;
	// PixelMed removes it.
	"Ward emptied, PixelMed removed":  "AcquisitionDate AcquisitionTime ClinicalTrialCoordinatingCenterName StructureSetDate StructureSetTime TreatmentMachineName VerifyingObserverIdentificationCodeSequence",
	"Ward replaced, PixelMed removed": "AcquisitionDateTime ContrastBolusAgent Date DateTime InstanceCreationDate InstanceCreationTime InstitutionName ObservationDateTime OperatorsName RTPlanDate RTPlanLabel RTPlanTime SeriesDate SeriesTime StationName Time VerificationDateTime VerifyingObserverName VerifyingOrganization",
	// The pseudonym; Content Date/Time are Z/D (a dummy).
	"Ward replaced, PixelMed emptied": "ContentDate ContentTime PatientID PatientName",
	// D in the table; PixelMed keeps SR content (and, nested, these).
	"Ward replaced, PixelMed kept": "ContentDate ContentTime PatientID PatientName PersonName",
	// Acquisition Context Sequence is X/Z: emptied, its items go.
	"Ward emptied, PixelMed kept":     "AcquisitionContextSequence",
	"Ward removed, PixelMed kept":     "CodeMeaning CodeValue CodingSchemeDesignator CodingSchemeVersion ConceptCodeSequence ConceptNameCodeSequence ValueType",
	"Ward emptied, PixelMed replaced": "ROIName",
	// PixelMed re-encodes the pixels.
	"Ward kept, PixelMed replaced": "PixelData",
	// PS3.15 asks for it.
	"added by Ward only": "LongitudinalTemporalInformationModified",
}

func tagOf(p string) dicom.Tag {
	if i := strings.LastIndex(p, "/"); i >= 0 {
		p = p[i+1:]
	}
	var g, e uint16
	fmt.Sscanf(p, "%04X,%04X", &g, &e)
	return dicom.NewTag(g, e)
}

func uniq(s []string) string {
	seen := map[string]int{}
	var out []string
	for _, x := range s {
		if seen[x] == 0 {
			out = append(out, x)
		}
		seen[x]++
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// TestStudyExportDeidentified: `ward study export --deidentify` against a
// running ward serve: the study leaves de-identified under new UIDs (paths
// included), with nothing of the patient's name, ID or birth date in any
// file; a second export under the same secret gives the same UIDs; a
// secondary capture without Burned In Annotation is quarantined unless
// the risk is accepted; the secret file must be closed to others; the
// audit trail records an Export marked Anonymized.
func TestStudyExportDeidentified(t *testing.T) {
	requireTool(t, "storescu")
	requireDir(t, pydicomTestFiles)
	w := startWard(t)
	ct, sc := filepath.Join(pydicomTestFiles, "CT_small.dcm"), filepath.Join(pydicomTestFiles, "SC_rgb_small_odd.dcm")
	if out, err := dcmtk("storescu", "-aec", "WARD", w.host, w.port, ct, sc).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ctStudy, scStudy := studyOf(t, ct), studyOf(t, sc)
	secret := filepath.Join(t.TempDir(), "project.secret")
	if o, code := wardCLI(t, "deid", "secret", secret); code != 0 {
		t.Fatalf("deid secret: %s", o)
	}
	if st, err := os.Stat(secret); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v %v", st.Mode(), err)
	}
	if _, code := wardCLI(t, "deid", "secret", secret); code == 0 {
		t.Fatal("an existing secret was replaced")
	}
	exp := t.TempDir()
	export := func(dir string, extra ...string) string {
		args := append([]string{"study", "export", ctStudy, "--out", dir, "--deidentify", "basic,modified-dates", "--deid-secret-file", secret, "--data", w.dir}, extra...)
		o, code := wardCLI(t, args...)
		if code != 0 || !strings.Contains(o, "de-identified as") {
			t.Fatalf("export: %d %s", code, o)
		}
		return o
	}
	o := export(exp)
	files, _ := filepath.Glob(filepath.Join(exp, "*", "*", "*.dcm"))
	if len(files) != 1 || strings.Contains(files[0], ctStudy) || !strings.Contains(files[0], "2.25.") {
		t.Fatalf("exported files: %v (%s)", files, o)
	}
	b, _ := os.ReadFile(files[0])
	for _, s := range []string{"CompressedSamples", "1CT1", ctStudy} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("%q left in the exported object", s)
		}
	}
	if st, _ := os.Stat(files[0]); st.Mode().Perm() != 0o600 {
		t.Errorf("exported file mode %v", st.Mode())
	}
	again := t.TempDir()
	export(again)
	if files2, _ := filepath.Glob(filepath.Join(again, "*", "*", "*.dcm")); len(files2) != 1 || filepath.Base(files2[0]) != filepath.Base(files[0]) {
		t.Errorf("the same secret gave other UIDs: %v %v", files2, files)
	}
	readAudit(t, w.dir, func(r []audit.Record) bool {
		for _, x := range r {
			if x.Event == "export" && strings.Contains(x.XML, ctStudy) && strings.Contains(x.XML, "<Anonymized>true</Anonymized>") {
				return true
			}
		}
		return false
	})
	// Burned-in risk: quarantined, then exported when accepted.
	q := t.TempDir()
	o, code := wardCLI(t, "study", "export", scStudy, "--out", q, "--deidentify", "basic", "--deid-secret-file", secret, "--data", w.dir)
	if code != 0 || !strings.Contains(o, "1 quarantined") {
		t.Fatalf("secondary capture: %d %s", code, o)
	}
	if files, _ := filepath.Glob(filepath.Join(q, "*", "*", "*.dcm")); len(files) != 0 {
		t.Fatalf("quarantined object exported: %v", files)
	}
	if o, code := wardCLI(t, "study", "export", scStudy, "--out", q, "--deidentify", "basic", "--deid-secret-file", secret, "--accept-burned-in", "--data", w.dir); code != 0 || !strings.Contains(o, "0 quarantined") {
		t.Fatalf("accepted risk: %d %s", code, o)
	}
	// Refusals: an option Ward cannot honour, a secret others can read.
	if _, code := wardCLI(t, "study", "export", ctStudy, "--out", q, "--deidentify", "basic,clean-pixel-data", "--deid-secret-file", secret, "--data", w.dir); code == 0 {
		t.Error("clean-pixel-data accepted")
	}
	os.Chmod(secret, 0o644)
	if _, code := wardCLI(t, "study", "export", ctStudy, "--out", q, "--deidentify", "basic", "--deid-secret-file", secret, "--data", w.dir); code == 0 {
		t.Error("a secret other users can read was used")
	}
}

// TestPeerDeidentified: a peer registered with deidentify gets, with
// DCMTK's getscu, the objects de-identified (new SOP Instance UID from the
// secret, no patient name or ID, Patient Identity Removed); a secondary
// capture without Burned In Annotation fails its sub-operation
// (quarantined); the peer's findscu is refused; the transfer is audited
// with the study marked Anonymized.
func TestPeerDeidentified(t *testing.T) {
	requireTool(t, "storescu", "getscu", "findscu", "movescu")
	requireDir(t, pydicomTestFiles)
	destPort, destDir := startStorescp(t)
	secretFile := newDeidSecret(t)
	secret, err := deid.ReadSecret(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	w := startWard(t, func(c *config.Config) {
		c.Peers = append(c.Peers, config.Peer{AETitle: "RESEARCH", Host: "127.0.0.1", Allow: []string{"echo", "find", "get", "move"}, Deidentify: "basic,modified-dates"},
			config.Peer{AETitle: "STORESCP", Host: "127.0.0.1", Port: destPort, Allow: []string{config.MoveDestination}})
		c.Deidentify.SecretFile = secretFile
	})
	ct, sc := filepath.Join(pydicomTestFiles, "CT_small.dcm"), filepath.Join(pydicomTestFiles, "SC_rgb_small_odd.dcm")
	if out, err := dcmtk("storescu", "-aec", "WARD", w.host, w.port, ct, sc).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ctStudy, scStudy := studyOf(t, ct), studyOf(t, sc)
	dir := t.TempDir()
	if out, err := dcmtk("getscu", "-S", "-aet", "RESEARCH", "-aec", "WARD", "-od", dir, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+ctStudy, w.host, w.port).CombinedOutput(); err != nil {
		t.Fatalf("getscu: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 1 {
		t.Fatalf("received %v", files)
	}
	b, _ := os.ReadFile(files[0])
	for _, s := range []string{"CompressedSamples", "1CT1"} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("%q in the object RESEARCH received", s)
		}
	}
	got, err := readFlat(t, files[0])
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := readFlat(t, ct)
	if want := deid.UIDFor(secret, orig["0008,0018"]); got["0008,0018"] != want {
		t.Errorf("SOP Instance UID %q, want %q", got["0008,0018"], want)
	}
	if got["0012,0062"] != "YES" || got["0028,0303"] != "MODIFIED" {
		t.Errorf("Patient Identity Removed %q, Longitudinal Temporal Information Modified %q", got["0012,0062"], got["0028,0303"])
	}
	// C-MOVE asked by the de-identified peer: what reaches the
	// destination is de-identified too.
	if out, err := dcmtk("movescu", "-S", "-aet", "RESEARCH", "-aec", "WARD", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+ctStudy, w.host, w.port).CombinedOutput(); err != nil {
		t.Fatalf("movescu: %v\n%s", err, out)
	}
	moved, _ := filepath.Glob(filepath.Join(destDir, "*"))
	if len(moved) != 1 {
		t.Fatalf("moved %v", moved)
	}
	if m, err := readFlat(t, moved[0]); err != nil || m["0008,0018"] != got["0008,0018"] || m["0012,0062"] != "YES" {
		t.Errorf("the moved object is not de-identified: %v %q", err, m["0008,0018"])
	}
	// Quarantined: the secondary capture's sub-operation fails.
	qdir := t.TempDir()
	out, _ := dcmtk("getscu", "-S", "-aet", "RESEARCH", "-aec", "WARD", "-od", qdir, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+scStudy, w.host, w.port).CombinedOutput()
	if files, _ := filepath.Glob(filepath.Join(qdir, "*")); len(files) != 0 {
		t.Errorf("a quarantined object reached the peer: %v\n%s", files, out)
	}
	// No queries: their answers would show identity.
	out, _ = dcmtk("findscu", "-v", "-S", "-aet", "RESEARCH", "-aec", "WARD", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+ctStudy, "-k", "PatientName", w.host, w.port).CombinedOutput()
	// Refused: Not Authorized (0x0124).
	if strings.Contains(string(out), "CompressedSamples") || !strings.Contains(string(out), "0x124") {
		t.Errorf("findscu from the de-identified peer:\n%s", out)
	}
	readAudit(t, w.dir, func(r []audit.Record) bool {
		for _, x := range r {
			if x.Event == "instances-transferred" && strings.Contains(x.XML, ctStudy) && strings.Contains(x.XML, "<Anonymized>true</Anonymized>") {
				return true
			}
		}
		return false
	})
}

// TestDICOMwebUserDeidentified: a user with deidentify gets WADO-RS
// instances de-identified (its UIDs remapped, no patient name or ID), its
// QIDO-RS searches and metadata requests refused, while a user without
// the profile gets the object as stored.
func TestDICOMwebUserDeidentified(t *testing.T) {
	requireTool(t, "storescu")
	requireDir(t, pydicomTestFiles)
	secretFile := newDeidSecret(t)
	w := startWebWard(t, "[deidentify]\nsecret_file = \""+secretFile+"\"\n", nil)
	w.cli(t, "a long passcode for the researcher\n", "user", "add", "researcher", "--role", "viewer", "--deidentify", "basic")
	w.user(t, "clinician", "viewer")
	research, clinic := w.token(t, "researcher", "read"), w.token(t, "clinician", "read")
	ct := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	if out, ok := harness.RunDCMTK(t, "storescu", "-aec", "WARD", "127.0.0.1", strconv.Itoa(w.dicomPort), ct); !ok {
		t.Fatalf("storescu:\n%s", out)
	}
	study, series, sop := uidsOfFile(t, ct)
	path := "/dicom-web/studies/" + study + "/series/" + series + "/instances/" + sop
	accept := `multipart/related; type="application/dicom"; transfer-syntax=*`
	rsp, body := w.do(t, "GET", path, research, nil, "Accept", accept)
	if rsp.StatusCode != 200 || bytes.Contains(body, []byte("CompressedSamples")) || bytes.Contains(body, []byte(sop)) || !bytes.Contains(body, []byte("2.25.")) {
		t.Errorf("WADO-RS for the de-identified user: %d, %d bytes", rsp.StatusCode, len(body))
	}
	if rsp, body := w.do(t, "GET", path, clinic, nil, "Accept", accept); rsp.StatusCode != 200 || !bytes.Contains(body, []byte("CompressedSamples")) {
		t.Errorf("WADO-RS for the clinician: %d", rsp.StatusCode)
	}
	for _, p := range []string{"/dicom-web/studies?StudyInstanceUID=" + study, path + "/metadata"} {
		if rsp, body := w.do(t, "GET", p, research, nil); rsp.StatusCode != 403 || bytes.Contains(body, []byte("CompressedSamples")) {
			t.Errorf("%s for the de-identified user: %d %s", p, rsp.StatusCode, body)
		}
	}
}

// TestMoveDeidentifiedForDestination: the data a C-MOVE sends leaves
// de-identified under the profile of whoever requests or receives it
// (DCMTK movescu as the requesters, two DCMTK storescp as destinations):
// a requester without a profile moving to a destination with one sends
// de-identified objects (regression: the profile followed the requester
// only, and the destination received identified data); requester and
// destination with the same profile (options in another order) send
// de-identified; with different profiles the C-MOVE is refused (0xC001,
// a comment saying why) and audited as a Security Alert; neither: the
// objects go as stored. Each transfer's audit record marks the study
// Anonymized when it left de-identified.
func TestMoveDeidentifiedForDestination(t *testing.T) {
	requireTool(t, "storescu", "movescu")
	requireDir(t, pydicomTestFiles)
	deidPort, deidDir := startStorescp(t)
	plainPort, plainDir := startStorescp(t)
	secretFile := newDeidSecret(t)
	w := startWard(t, func(c *config.Config) {
		c.DICOM.LoopbackAnyAE = false
		c.Peers = append(c.Peers,
			config.Peer{AETitle: "MOD", Host: "127.0.0.1", Allow: []string{"echo", "store"}},
			config.Peer{AETitle: "CLINIC", Host: "127.0.0.1", Allow: []string{"echo", "find", "move"}},
			config.Peer{AETitle: "SAMEPROF", Host: "127.0.0.1", Allow: []string{"echo", "move"}, Deidentify: "basic,patient-characteristics,modified-dates"},
			config.Peer{AETitle: "OTHERPROF", Host: "127.0.0.1", Allow: []string{"echo", "move"}, Deidentify: "basic"},
			config.Peer{AETitle: "RESEARCH", Host: "127.0.0.1", Port: deidPort, Allow: []string{config.MoveDestination}, Deidentify: "basic,modified-dates,patient-characteristics"},
			config.Peer{AETitle: "WORKSTATION", Host: "127.0.0.1", Port: plainPort, Allow: []string{config.MoveDestination}})
		c.Deidentify.SecretFile = secretFile
	})
	ct := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	if out, err := dcmtk("storescu", "-aet", "MOD", "-aec", "WARD", w.host, w.port, ct).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	study := studyOf(t, ct)
	move := func(from, to string, verbosity ...string) (string, error) {
		if len(verbosity) == 0 {
			verbosity = []string{"-v"}
		}
		out, err := dcmtk("movescu", append(verbosity, "-S", "-aet", from, "-aec", "WARD", "-aem", to, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+study, w.host, w.port)...).CombinedOutput()
		return string(out), err
	}
	// received checks the one new object in dir since the last call,
	// de-identified or not, and removes it.
	received := func(dir string, deidentified bool) {
		t.Helper()
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		if len(files) != 1 {
			t.Fatalf("%s received %v", dir, files)
		}
		b, _ := os.ReadFile(files[0])
		identity := bytes.Contains(b, []byte("CompressedSamples")) || bytes.Contains(b, []byte("1CT1"))
		m, err := readFlat(t, files[0])
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case deidentified && (identity || m["0012,0062"] != "YES"):
			t.Errorf("identified data reached a de-identifying destination (Patient Identity Removed %q)", m["0012,0062"])
		case !deidentified && (!identity || m["0012,0062"] == "YES"):
			t.Errorf("the object was de-identified for a requester and destination without a profile")
		}
		os.Remove(files[0])
	}

	for _, c := range []struct {
		from, to     string
		dir          string
		deidentified bool
	}{
		{"CLINIC", "RESEARCH", deidDir, true},        // no profile to a profile: de-identified
		{"SAMEPROF", "RESEARCH", deidDir, true},      // the same profile on both sides (options in another order)
		{"OTHERPROF", "WORKSTATION", plainDir, true}, // the requester's profile alone, as before
		{"CLINIC", "WORKSTATION", plainDir, false},   // neither: as stored
	} {
		if out, err := move(c.from, c.to); err != nil {
			t.Fatalf("movescu %s to %s: %v\n%s", c.from, c.to, err, out)
		}
		received(c.dir, c.deidentified)
	}
	// Different profiles: refused, nothing sent.
	// (movescu -d prints the response's Error Comment.)
	out, err := move("OTHERPROF", "RESEARCH", "-d")
	if err == nil || !strings.Contains(out, "0xc001") || !strings.Contains(out, "requester and destination de-identify differently") {
		t.Errorf("movescu OTHERPROF to RESEARCH, different profiles: %v\n%s", err, out)
	}
	if files, _ := filepath.Glob(filepath.Join(deidDir, "*")); len(files) != 0 {
		t.Errorf("sent despite different profiles: %v", files)
	}
	readAudit(t, w.dir, func(r []audit.Record) bool {
		var anonymizedToResearch, plainToWorkstation, alert, begun int
		for _, x := range r {
			switch {
			case x.Event == "begin-transferring" && strings.Contains(x.XML, "RESEARCH") && strings.Contains(x.XML, "<Anonymized>true</Anonymized>"):
				begun++
			case x.Event == "instances-transferred" && strings.Contains(x.XML, "RESEARCH") && strings.Contains(x.XML, "<Anonymized>true</Anonymized>"):
				anonymizedToResearch++
			case x.Event == "instances-transferred" && strings.Contains(x.XML, "WORKSTATION") && !strings.Contains(x.XML, "<Anonymized>true</Anonymized>"):
				plainToWorkstation++
			case x.Event == "security-alert" && strings.Contains(x.XML, "RESEARCH") && strings.Contains(x.XML, "de-identify differently"):
				alert++
			}
		}
		return anonymizedToResearch == 2 && begun == 2 && plainToWorkstation == 1 && alert == 1
	})
}

// TestDeidentifyTakesEffectAtOnce: a de-identification profile given to a
// peer of a running ward serve, with the [deidentify] secret the same
// reload brings, takes effect for its next retrieve without a restart,
// and so does its removal (DCMTK getscu and movescu to a DCMTK storescp;
// ward peer add over the admin socket, then SIGHUP after an edit of the
// file). Regression: the secret was read at start only, so that such a
// peer was refused until a restart. The reload that brought the secret
// is audited (Security Configuration, naming no secret); a secret others
// could read refuses a reload, the previous profile staying in effect;
// each transfer's record marks the study Anonymized when it left
// de-identified.
func TestDeidentifyTakesEffectAtOnce(t *testing.T) {
	requireTool(t, "storescu", "getscu", "movescu")
	requireDir(t, pydicomTestFiles)
	destPort, destDir := startStorescp(t)
	bin, dir, port, proc := wardServeProc(t, "")
	ward := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append(args, "--data", dir)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ward %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	ward("peer", "add", "MOD", "--host", "127.0.0.1", "--allow", "store")
	ward("peer", "add", "STORESCP", "--host", "127.0.0.1", "--port", strconv.Itoa(destPort), "--allow", "move-destination")
	research := []string{"peer", "add", "RESEARCH", "--host", "127.0.0.1", "--allow", "echo,get,move"}
	ward(research...)
	ct := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	if out, err := dcmtk("storescu", "-aet", "MOD", "-aec", "WARD", "127.0.0.1", strconv.Itoa(port), ct).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	study := studyOf(t, ct)
	// retrieve gets the study as RESEARCH, by C-GET and by C-MOVE to
	// storescp, and says for each whether it came de-identified.
	retrieve := func() (got, moved bool) {
		t.Helper()
		check := func(dir string) bool {
			files, _ := filepath.Glob(filepath.Join(dir, "*"))
			if len(files) != 1 {
				t.Fatalf("%s received %v", dir, files)
			}
			defer os.Remove(files[0])
			b, _ := os.ReadFile(files[0])
			identity := bytes.Contains(b, []byte("CompressedSamples")) || bytes.Contains(b, []byte("1CT1"))
			m, err := readFlat(t, files[0])
			if err != nil {
				t.Fatal(err)
			}
			if removed := m["0012,0062"] == "YES"; removed == identity {
				t.Fatalf("Patient Identity Removed %q, patient name or ID in the bytes: %v", m["0012,0062"], identity)
			}
			return !identity
		}
		gdir := t.TempDir()
		if out, err := dcmtk("getscu", "-S", "-aet", "RESEARCH", "-aec", "WARD", "-od", gdir, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+study, "127.0.0.1", strconv.Itoa(port)).CombinedOutput(); err != nil {
			t.Fatalf("getscu: %v\n%s", err, out)
		}
		if out, err := dcmtk("movescu", "-S", "-aet", "RESEARCH", "-aec", "WARD", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+study, "127.0.0.1", strconv.Itoa(port)).CombinedOutput(); err != nil {
			t.Fatalf("movescu: %v\n%s", err, out)
		}
		return check(gdir), check(destDir)
	}
	if got, moved := retrieve(); got || moved {
		t.Fatalf("de-identified before any profile: C-GET %v, C-MOVE %v", got, moved)
	}

	// The secret and the profile, by ward peer add on the running server.
	secret := filepath.Join(t.TempDir(), "project.secret")
	if out, err := exec.Command(bin, "deid", "secret", secret).CombinedOutput(); err != nil {
		t.Fatalf("ward deid secret: %v\n%s", err, out)
	}
	conf := filepath.Join(dir, "ward.toml")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, append([]byte("[deidentify]\nsecret_file = \""+secret+"\"\n"), b...), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := ward(append(research, "--deidentify", "basic")...); !strings.Contains(out, "in effect in the running ward serve") {
		t.Fatalf("ward peer add --deidentify did not reach the running ward serve:\n%s", out)
	}
	if got, moved := retrieve(); !got || !moved {
		t.Fatalf("not de-identified after the profile was added: C-GET %v, C-MOVE %v", got, moved)
	}
	// Removed: identified again.
	ward(research...)
	if got, moved := retrieve(); got || moved {
		t.Fatalf("still de-identified after the profile was removed: C-GET %v, C-MOVE %v", got, moved)
	}
	// Given again by an edit of the file and SIGHUP.
	if err := config.EditPeers(conf, func(ps []config.Peer) ([]config.Peer, error) {
		for i := range ps {
			if ps[i].AETitle == "RESEARCH" {
				ps[i].Deidentify = "basic,modified-dates"
			}
		}
		return ps, nil
	}); err != nil {
		t.Fatal(err)
	}
	reloads := strings.Count(proc.Log.String(), "configuration reloaded")
	if err := proc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); strings.Count(proc.Log.String(), "configuration reloaded") == reloads; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP: no reload")
		}
	}
	if got, moved := retrieve(); !got || !moved {
		t.Fatalf("not de-identified after SIGHUP: C-GET %v, C-MOVE %v", got, moved)
	}
	// A secret others could read refuses the reload: the previous
	// configuration (profile and secret) stays in effect.
	if err := os.Chmod(secret, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, append(research, "--data", dir)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "did not take it") || !strings.Contains(string(out), "chmod 600") {
		t.Fatalf("a reload with a secret others can read: %v\n%s", err, out)
	}
	if got, moved := retrieve(); !got || !moved {
		t.Fatalf("not de-identified after a refused reload: C-GET %v, C-MOVE %v", got, moved)
	}
	readAudit(t, dir, func(r []audit.Record) bool {
		var secretSet, anonymized, plain int
		for _, x := range r {
			switch {
			case x.Event == "security-alert" && strings.Contains(x.XML, "de-identification secret set"):
				secretSet++
			case x.Event == "instances-transferred" && strings.Contains(x.XML, "<Anonymized>true</Anonymized>"):
				anonymized++
			case x.Event == "instances-transferred" && strings.Contains(x.XML, "RESEARCH"):
				plain++
			}
		}
		// 5 rounds of a C-GET and a C-MOVE: identified, de-identified,
		// identified, de-identified, de-identified (MOD's store aside).
		return secretSet == 1 && anonymized == 6 && plain == 4
	})
}

// TestDIMSEUserDeidentified: a user registered with deidentify who
// authenticates on a DIMSE association (user identity, passcode) gets
// what the peer retrieves for it de-identified, as through DICOMweb
// (regression: the user's profile applied to DICOMweb only, and a
// researcher on a workstation's association got identified data): ward
// move --user to a DCMTK storescp and ward get --user receive
// de-identified objects and ward find --user is refused; the same peer
// without the user identity retrieves as stored; a user whose profile
// differs from its peer's is refused (0xC001).
func TestDIMSEUserDeidentified(t *testing.T) {
	requireTool(t, "storescu")
	requireDir(t, pydicomTestFiles)
	destPort, destDir := startStorescp(t)
	secretFile := newDeidSecret(t)
	const passcode = "a long passcode for the researcher"
	hash, err := identity.HashPasscode(passcode)
	if err != nil {
		t.Fatal(err)
	}
	w := startWard(t, func(c *config.Config) {
		c.DICOM.LoopbackAnyAE = false
		c.Users = []config.User{{Name: "researcher", Hash: hash, Deidentify: "basic"}}
		c.Peers = append(c.Peers,
			config.Peer{AETitle: "MOD", Host: "127.0.0.1", Allow: []string{"echo", "store"}},
			config.Peer{AETitle: "WS", Host: "127.0.0.1", Allow: []string{"echo", "find", "get", "move"}},
			config.Peer{AETitle: "OTHERPROF", Host: "127.0.0.1", Allow: []string{"echo", "get"}, Deidentify: "basic,modified-dates"},
			config.Peer{AETitle: "STORESCP", Host: "127.0.0.1", Port: destPort, Allow: []string{config.MoveDestination}})
		c.Deidentify.SecretFile = secretFile
	})
	ct := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	if out, err := dcmtk("storescu", "-aet", "MOD", "-aec", "WARD", w.host, w.port, ct).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	study := studyOf(t, ct)
	t.Setenv("WARD_PASSCODE", passcode)
	// one checks the one object in dir, and removes it.
	one := func(dir string) (identified bool) {
		t.Helper()
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		if len(files) != 1 {
			t.Fatalf("%s holds %v", dir, files)
		}
		defer os.Remove(files[0])
		b, _ := os.ReadFile(files[0])
		return bytes.Contains(b, []byte("CompressedSamples")) || bytes.Contains(b, []byte("1CT1"))
	}
	keys := []string{"-S", "--level", "STUDY", "-k", "StudyInstanceUID=" + study}
	move := append([]string{"move", "--aec", "WARD", "--aet", "WS", "--dest", "STORESCP"}, keys...)
	if _, code := wardCLI(t, append(move, "--user", "researcher", w.addr)...); code != 0 {
		t.Fatal("ward move --user researcher failed")
	}
	if one(destDir) {
		t.Error("C-MOVE for the user with a profile: identified data reached the destination")
	}
	gdir := t.TempDir()
	if _, code := wardCLI(t, "get", "--aec", "WARD", "--aet", "WS", "--user", "researcher", "--out", gdir, "-S", "--level", "STUDY", "-k", "StudyInstanceUID="+study, w.addr); code != 0 {
		t.Fatal("ward get --user researcher failed")
	}
	if files, _ := filepath.Glob(filepath.Join(gdir, "*.dcm")); len(files) != 1 {
		t.Fatalf("ward get wrote %v", files)
	} else if b, _ := os.ReadFile(files[0]); bytes.Contains(b, []byte("CompressedSamples")) {
		t.Error("C-GET for the user with a profile: identified")
	}
	if out, code := wardCLI(t, "find", "--aec", "WARD", "--aet", "WS", "--user", "researcher", "-S", "--level", "STUDY", "-k", "StudyInstanceUID="+study, "-k", "PatientName", w.addr); code == 0 || strings.Contains(out, "CompressedSamples") {
		t.Errorf("C-FIND for the user with a profile answered: %d %s", code, out)
	}
	// The same peer without the user: as stored.
	if _, code := wardCLI(t, append(move, w.addr)...); code != 0 {
		t.Fatal("ward move failed")
	}
	if !one(destDir) {
		t.Error("C-MOVE without the user: de-identified")
	}
	// A peer whose profile differs from the user's: refused.
	var out, errb bytes.Buffer
	code := cli.Run([]string{"get", "--aec", "WARD", "--aet", "OTHERPROF", "--user", "researcher", "--out", t.TempDir(), "-S", "--level", "STUDY", "-k", "StudyInstanceUID=" + study, w.addr}, &out, &errb)
	if code == 0 || !strings.Contains(out.String()+errb.String(), "peer and user de-identify differently") {
		t.Errorf("C-GET with different peer and user profiles: %d\n%s\n%s", code, out.String(), errb.String())
	}
	readAudit(t, w.dir, func(r []audit.Record) bool {
		var anonymized, alert int
		for _, x := range r {
			switch {
			case x.Event == "instances-transferred" && strings.Contains(x.XML, "researcher") && strings.Contains(x.XML, "<Anonymized>true</Anonymized>"):
				anonymized++
			case x.Event == "security-alert" && strings.Contains(x.XML, "peer and user de-identify differently"):
				alert++
			}
		}
		return anonymized == 2 && alert == 1
	})
}

// newDeidSecret writes a new project secret (0600) in a folder of the
// test's and returns its path.
func newDeidSecret(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "project.secret")
	s, err := deid.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
