package interop

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/config"
)

// studyUIDRE finds the Study Instance UIDs in findscu's output.
var studyUIDRE = regexp.MustCompile(`\(0020,000d\) UI \[[0-9.]+\]`)

// TestBackup: `ward backup` of a serving Ward holding objects sent by DCMTK
// storescu; the backup folder, served by a second Ward, answers findscu and
// getscu with the same objects; a later backup into the same folder copies
// only the new object, removes the deleted study's, and the folder
// verifies clean; so does a backup of the stopped Ward.
func TestBackup(t *testing.T) {
	requireTool(t, "storescu", "findscu", "getscu")
	requireDir(t, pydicomTestFiles)
	w := startWard(t)
	file := func(n string) string { return filepath.Join(pydicomTestFiles, n) }
	sent := []string{file("CT_small.dcm"), file("MR_small.dcm"), file("rtplan.dcm"), file("ExplVR_BigEnd.dcm")}
	if out, err := dcmtk("storescu", append([]string{"-aec", "WARD", w.host, w.port}, sent...)...).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// The data directory's configuration goes with the backup (this
	// in-process Ward has its configuration in memory; the file is a
	// stand-in).
	toml := "[storage]\nmin_free = \"16MiB\"\n"
	if err := os.WriteFile(filepath.Join(w.dir, "ward.toml"), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "backup")
	if o, code := wardCLI(t, "backup", dir, "--data", w.dir); code != 0 || !strings.Contains(o, "4 instances, 4 objects copied") {
		t.Fatalf("backup: %d %s", code, o)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "ward.toml")); err != nil || string(b) != toml {
		t.Fatalf("the configuration in the backup: %q %v", b, err)
	}
	// The API tokens too (their hashes, revocations included), 0600; and a
	// token file the data directory no longer has leaves the backup.
	// (A stand-in again: this in-process Ward cannot reload, which ward
	// token issue asks of a running one.)
	want := []byte(`{"tokens":[]}` + "\n")
	if err := os.WriteFile(filepath.Join(w.dir, "tokens.json"), want, 0o600); err != nil {
		t.Fatal(err)
	}
	if o, code := wardCLI(t, "backup", dir, "--data", w.dir); code != 0 {
		t.Fatalf("backup: %d %s", code, o)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "tokens.json")); err != nil || string(b) != string(want) {
		t.Fatalf("the tokens in the backup: %q %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tokens.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the tokens' mode in the backup: %v %v", fi.Mode(), err)
	}
	if err := os.Remove(filepath.Join(w.dir, "tokens.json")); err != nil {
		t.Fatal(err)
	}
	if o, code := wardCLI(t, "backup", dir, "--data", w.dir); code != 0 {
		t.Fatalf("backup: %d %s", code, o)
	}
	if _, err := os.Stat(filepath.Join(dir, "tokens.json")); !os.IsNotExist(err) {
		t.Fatalf("a token file the data directory no longer has is still in the backup: %v", err)
	}
	if err := os.WriteFile(filepath.Join(w.dir, "ward.toml"), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the backup folder's mode: %v %v", fi.Mode(), err)
	}

	// Each study copied is audited as Export to the folder.
	ct := studyOf(t, sent[0])
	readAudit(t, w.dir, func(r []audit.Record) bool {
		return hasEvent(r, "export", audit.OutcomeSuccess, ct) && hasEvent(r, "export", -1, dir) && hasEvent(r, "export", -1, "ward backup")
	})

	// The backup, served: the same studies, the same objects.
	b := startWard(t, func(c *config.Config) { c.DataDir = dir })
	studies := func(host, port string) string {
		o, err := dcmtk("findscu", "-S", "-aec", "WARD", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", host, port).CombinedOutput()
		if err != nil {
			t.Fatalf("findscu: %v\n%s", err, o)
		}
		uids := studyUIDRE.FindAllString(string(o), -1)
		sort.Strings(uids)
		return strings.Join(uids, " ")
	}
	if live, backed := studies(w.host, w.port), studies(b.host, b.port); live != backed || live == "" {
		t.Fatalf("studies live %q, in the backup %q", live, backed)
	}
	got := t.TempDir()
	if o, err := dcmtk("getscu", "-S", "-aec", "WARD", "-od", got, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+ct, b.host, b.port).CombinedOutput(); err != nil {
		t.Fatalf("getscu from the backup: %v\n%s", err, o)
	}
	files, _ := filepath.Glob(filepath.Join(got, "*"))
	if len(files) != 1 {
		t.Fatalf("retrieved from the backup: %v", files)
	}
	if ok, diff := datasetsEqual(t, sent[0], files[0]); !ok {
		t.Fatalf("the object retrieved from the backup differs from the one sent:\n%s", diff)
	}
	b.stop()

	// Later: one study deleted, one object stored; the next backup copies
	// the new one and removes the deleted one's.
	if o, code := wardCLI(t, "study", "delete", studyOf(t, sent[1]), "--reason", "test", "--data", w.dir); code != 0 {
		t.Fatalf("delete: %d %s", code, o)
	}
	if out, err := dcmtk("storescu", "-aec", "WARD", w.host, w.port, file("waveform_ecg.dcm")).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if o, code := wardCLI(t, "backup", dir, "--max-rate", "100", "--data", w.dir); code != 0 || !strings.Contains(o, "4 instances, 1 object copied") || !strings.Contains(o, "1 object removed") {
		t.Fatalf("second backup: %d %s", code, o)
	}
	if o, code := wardCLI(t, "study", "verify", "--data", dir); code != 0 || !strings.Contains(o, "verified 4 instances") {
		t.Fatalf("verify the backup: %d %s", code, o)
	}
	// With ward serve stopped, the command opens the data directory itself.
	w.stop()
	if o, code := wardCLI(t, "backup", dir, "--data", w.dir); code != 0 || !strings.Contains(o, "4 instances, 0 objects copied") {
		t.Fatalf("backup of a stopped Ward: %d %s", code, o)
	}
	// A folder that holds something else is not backed up into.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := runCLI([]string{"backup", other, "--data", w.dir}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "holds no backup") {
		t.Fatalf("backup into a folder of other files: %d %s %s", code, out.String(), errb.String())
	}
	if _, err := os.Stat(filepath.Join(other, "notes.txt")); err != nil {
		t.Fatal(err)
	}
	// A backup into the data directory is refused.
	out.Reset()
	errb.Reset()
	if code := runCLI([]string{"backup", filepath.Join(w.dir, "backup"), "--data", w.dir}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "in the data directory") || out.Len() != 0 {
		t.Fatalf("backup into the data directory: %d %s %s", code, out.String(), errb.String())
	}
}
