package interop

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/test/harness"
)

// migrationConfig writes a ward.toml naming dir as the data directory and
// the store's [storage] lines (none: the embedded default, SQLite and
// files in dir), and returns its path.
func migrationConfig(t *testing.T, dir, storage string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ward.toml")
	text := "data = \"" + dir + "\"\n[storage]\nmin_free = \"16MiB\"\n" + storage
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// getStudy retrieves a study with DCMTK getscu from a Ward and returns the
// files received, by name.
func getStudy(t *testing.T, w *ward, study string) map[string][]byte {
	t.Helper()
	out := t.TempDir()
	if o, err := dcmtk("getscu", "-S", "-aec", "WARD", "-od", out, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+study, w.host, w.port).CombinedOutput(); err != nil {
		t.Fatalf("getscu: %v\n%s", err, o)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*"))
	got := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got[filepath.Base(f)] = b
	}
	return got
}

// migrateAndServe sends objects to a Ward with DCMTK storescu, stops it,
// migrates its archive with ward migrate into the store storage
// configures (data directory dst), serves both with Ward, and checks
// that getscu retrieves every study from the destination byte for byte
// as from the source. It returns the source Ward (stopped), the objects
// sent and the destination's configuration file.
func migrateAndServe(t *testing.T, dst, storage string) (*ward, []string, string) {
	t.Helper()
	requireTool(t, "storescu", "getscu")
	requireDir(t, pydicomTestFiles)
	w := startWard(t)
	file := func(n string) string { return filepath.Join(pydicomTestFiles, n) }
	sent := []string{file("CT_small.dcm"), file("MR_small.dcm"), file("rtplan.dcm"), file("ExplVR_BigEnd.dcm")}
	if out, err := dcmtk("storescu", append([]string{"-aec", "WARD", w.host, w.port}, sent...)...).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	to := migrationConfig(t, dst, storage)

	// Not while Ward serves the archive.
	var out, errb bytes.Buffer
	if code := runCLI([]string{"migrate", "--to", to, "--data", w.dir}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "ward serve is running") {
		t.Fatalf("migrate of a serving Ward: %d %s %s", code, out.String(), errb.String())
	}
	w.stop()
	o, code := wardCLI(t, "migrate", "--to", to, "--data", w.dir)
	if code != 0 || !strings.Contains(o, "4 instances, 4 objects copied") || !strings.Contains(o, "instances source 4, destination 4") {
		t.Fatalf("migrate: %d %s", code, o)
	}
	t.Logf("ward migrate:\n%s", o)
	for _, s := range sent {
		if strings.Contains(o, studyOf(t, s)) {
			t.Fatalf("ward migrate printed a Study Instance UID:\n%s", o)
		}
	}
	// Recorded in the source's audit trail, as Export by ward migrate.
	ct := studyOf(t, sent[0])
	readAudit(t, w.dir, func(r []audit.Record) bool {
		return hasEvent(r, "export", audit.OutcomeSuccess, ct) && hasEvent(r, "export", -1, "ward migrate")
	})

	// Both served: every study retrieves the same bytes from either.
	src := startWard(t, func(c *config.Config) { c.DataDir = w.dir })
	c, err := config.Load(to, false)
	if err != nil {
		t.Fatal(err)
	}
	to2 := startWard(t, func(d *config.Config) { d.DataDir, d.Storage = c.DataDir, c.Storage })
	for _, s := range sent {
		study := studyOf(t, s)
		a, b := getStudy(t, src, study), getStudy(t, to2, study)
		if len(a) == 0 || len(a) != len(b) {
			t.Fatalf("retrieved %d objects from the source, %d from the destination", len(a), len(b))
		}
		for name, data := range a {
			if !bytes.Equal(data, b[name]) {
				t.Fatalf("the object %s retrieved from the destination differs from the source's", name)
			}
		}
	}
	if ok, diff := datasetsEqual(t, sent[0], func() string {
		got := t.TempDir()
		if o, err := dcmtk("getscu", "-S", "-aec", "WARD", "-od", got, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+ct, to2.host, to2.port).CombinedOutput(); err != nil {
			t.Fatalf("getscu: %v\n%s", err, o)
		}
		files, _ := filepath.Glob(filepath.Join(got, "*"))
		return files[0]
	}()); !ok {
		t.Fatalf("the object retrieved from the destination differs from the one sent:\n%s", diff)
	}
	src.stop()
	to2.stop()
	return w, sent, to
}

// TestMigrateEmbedded: ward migrate of a Ward holding objects sent by
// DCMTK storescu into another SQLite and files store (another data
// directory): refused while the source serves; then every object copied,
// audited, and retrieved by getscu from a Ward serving the destination
// byte for byte as from the source. A rerun after a new object copies
// only that one; --verify-only passes, then, once a destination object is
// altered, fails, naming its SOP Instance UID only in a 0600 report file.
func TestMigrateEmbedded(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "new")
	w, _, to := migrateAndServe(t, dst, "")

	// A new object, then a rerun: only it is copied.
	src := startWard(t, func(c *config.Config) { c.DataDir = w.dir })
	extra := filepath.Join(pydicomTestFiles, "waveform_ecg.dcm")
	if out, err := dcmtk("storescu", "-aec", "WARD", src.host, src.port, extra).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	src.stop()
	if o, code := wardCLI(t, "migrate", "--to", to, "--data", w.dir); code != 0 || !strings.Contains(o, "5 instances, 1 object copied") || !strings.Contains(o, "4 instances there already") {
		t.Fatalf("rerun: %d %s", code, o)
	}
	if o, code := wardCLI(t, "migrate", "--to", to, "--verify-only", "--data", w.dir); code != 0 || !strings.Contains(o, "5 instances verified") {
		t.Fatalf("verify-only: %d %s", code, o)
	}

	// Alter one object of the destination.
	var victim string
	filepath.WalkDir(filepath.Join(dst, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || victim != "" {
			return err
		}
		victim = p
		return nil
	})
	b, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0x5a
	if err := os.WriteFile(victim, b, 0o600); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "report.txt")
	var out, errb bytes.Buffer
	code := runCLI([]string{"migrate", "--to", to, "--verify-only", "--report", report, "--data", w.dir}, &out, &errb)
	if code != 1 || !strings.Contains(out.String(), "1 with problems") || !strings.Contains(errb.String(), report) {
		t.Fatalf("verify-only of an altered destination: %d %s %s", code, out.String(), errb.String())
	}
	fi, err := os.Stat(report)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("report file: %v %v", fi, err)
	}
	rb, _ := os.ReadFile(report)
	uid := sopInstanceOfObject(t, b)
	if !strings.Contains(string(rb), uid) || !strings.Contains(string(rb), "reads back") {
		t.Fatalf("the report does not name the altered instance %s:\n%s", uid, rb)
	}
	if strings.Contains(out.String()+errb.String(), uid) {
		t.Fatalf("a SOP Instance UID reached the terminal:\n%s\n%s", out.String(), errb.String())
	}
}

// sopInstanceOfObject reads the Media Storage SOP Instance UID of a Part
// 10 file's bytes.
func sopInstanceOfObject(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "obj.dcm")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	uid, _ := sopInstanceOf(t, p)
	return uid
}

// TestMigrateToPostgresS3: ward migrate of a Ward holding objects sent by
// DCMTK storescu into PostgreSQL (a throwaway cluster) and S3
// (versitygw): every object copied and audited; a Ward serving the
// destination answers getscu with every study byte for byte as the
// source does; a rerun copies nothing; --verify-only passes, and fails
// once an object in the bucket is altered, naming it only in the report.
func TestMigrateToPostgresS3(t *testing.T) {
	pg := harness.StartPostgres(t)
	s3 := harness.StartS3(t)
	s3.SetEnv(t)
	bucket := s3.Bucket(t)
	storage := fmt.Sprintf("index = \"postgres\"\nindex_dsn = %q\nblobs = \"s3\"\nblobs_dsn = %q\n", pg.NewDatabase(t), s3.URL(bucket, "ward"))
	w, _, to := migrateAndServe(t, filepath.Join(t.TempDir(), "node1"), storage)
	if o, code := wardCLI(t, "migrate", "--to", to, "--data", w.dir); code != 0 || !strings.Contains(o, "4 instances, 0 objects copied") || !strings.Contains(o, "4 instances there already") {
		t.Fatalf("rerun: %d %s", code, o)
	}
	if o, code := wardCLI(t, "migrate", "--to", to, "--verify-only", "--data", w.dir); code != 0 || !strings.Contains(o, "4 instances verified") {
		t.Fatalf("verify-only: %d %s", code, o)
	}
	// An object altered in the bucket (versitygw keeps each as a file).
	var victim string
	filepath.WalkDir(filepath.Join(s3.Dir, bucket), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".dcm") && victim == "" {
			victim = p
		}
		return err
	})
	b, err := os.ReadFile(victim)
	if err != nil {
		t.Fatalf("no object in the bucket's folder: %v", err)
	}
	b[len(b)-1] ^= 0x5a
	if err := os.WriteFile(victim, b, 0o600); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "report.txt")
	var out, errb bytes.Buffer
	if code := runCLI([]string{"migrate", "--to", to, "--verify-only", "--report", report, "--data", w.dir}, &out, &errb); code != 1 || !strings.Contains(out.String(), "1 with problems") {
		t.Fatalf("verify-only of an altered object in S3: %d %s %s", code, out.String(), errb.String())
	}
	uid := sopInstanceOfObject(t, b)
	if rb, _ := os.ReadFile(report); !strings.Contains(string(rb), uid) {
		t.Fatalf("the report does not name the altered instance %s:\n%s", uid, rb)
	}
	if strings.Contains(out.String()+errb.String(), uid) {
		t.Fatalf("a SOP Instance UID reached the terminal:\n%s\n%s", out.String(), errb.String())
	}
}
