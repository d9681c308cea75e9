package interop

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/fsblob"
	"github.com/ward-pacs/ward/store/sqlite"
)

// TestBackupAfterKilledCopy: a backup killed while it copied an object
// leaves BACKUP/tmp/KEY.dcm (and, killed while it wrote the folder's
// mark, a temporary file of it). Regression: every later backup into the
// folder then failed with "fsblob: create KEY: store: already exists".
// Here such leftovers are planted for every object the next backup
// copies (sent by DCMTK storescu); the backup runs again to its end, as
// docs/configuration.md promises, and leaves neither behind.
func TestBackupAfterKilledCopy(t *testing.T) {
	requireTool(t, "storescu")
	requireDir(t, pydicomTestFiles)
	w := startWard(t)
	file := func(n string) string { return filepath.Join(pydicomTestFiles, n) }
	if out, err := dcmtk("storescu", "-aec", "WARD", w.host, w.port, file("CT_small.dcm")).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	bk := filepath.Join(t.TempDir(), "backup")
	if o, code := wardCLI(t, "backup", bk, "--data", w.dir); code != 0 || !strings.Contains(o, "1 object copied") {
		t.Fatalf("first backup: %d %s", code, o)
	}
	if out, err := dcmtk("storescu", "-aec", "WARD", w.host, w.port, file("MR_small.dcm"), file("rtplan.dcm")).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	idx, err := sqlite.Open(context.Background(), filepath.Join(w.dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	planted := 0
	err = idx.WalkInstances(context.Background(), func(in *store.Instance) error {
		planted++
		return os.WriteFile(filepath.Join(bk, "tmp", in.BlobKey+".dcm"), []byte("half a copy"), 0o600)
	})
	idx.Close()
	if err != nil || planted != 3 {
		t.Fatalf("planting %d copies: %v", planted, err)
	}
	if err := os.WriteFile(filepath.Join(bk, ".WARD-BACKUP.tmp123"), []byte("This folder"), 0o600); err != nil {
		t.Fatal(err)
	}
	if o, code := wardCLI(t, "backup", bk, "--data", w.dir); code != 0 || !strings.Contains(o, "3 instances, 2 objects copied") {
		t.Fatalf("backup after an interrupted one: %d %s", code, o)
	}
	if left := filesUnder(t, filepath.Join(bk, "tmp")); len(left) != 0 {
		t.Fatalf("leftovers stayed in tmp/: %v", left)
	}
	if _, err := os.Stat(filepath.Join(bk, ".WARD-BACKUP.tmp123")); !os.IsNotExist(err) {
		t.Fatalf("the mark's temporary file stayed: %v", err)
	}
	if o, code := wardCLI(t, "study", "verify", "--data", bk); code != 0 || !strings.Contains(o, "verified 3 instances") {
		t.Fatalf("verify the backup: %d %s", code, o)
	}

	// A new folder whose mark a killed run was writing: only the mark's
	// temporary file is there, and the folder is taken as empty.
	fresh := filepath.Join(t.TempDir(), "fresh")
	if err := os.Mkdir(fresh, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fresh, ".WARD-BACKUP.tmp456"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if o, code := wardCLI(t, "backup", fresh, "--data", w.dir); code != 0 || !strings.Contains(o, "3 objects copied") {
		t.Fatalf("backup into a folder with a half-written mark: %d %s", code, o)
	}
}

// filesUnder lists the regular files below dir.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			out = append(out, p)
		}
		return err
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

// TestBackupFolderRules: a backup holds patient data. A folder owned by
// another user is refused, though empty (regression: the backup went in,
// and that user read its index); so is a backup folder others can read;
// an empty folder of Ward's user is closed (0700); and every file the
// backup writes is 0600, every directory 0700.
func TestBackupFolderRules(t *testing.T) {
	requireTool(t, "storescu")
	requireDir(t, pydicomTestFiles)
	defer syscall.Umask(syscall.Umask(0o022)) // as most shells: the modes must not come from the umask
	w := startWard(t)
	if out, err := dcmtk("storescu", "-aec", "WARD", w.host, w.port, filepath.Join(pydicomTestFiles, "CT_small.dcm")).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	backup := func(dir string) (int, string) {
		var out, errb bytes.Buffer
		code := runCLI([]string{"backup", dir, "--data", w.dir}, &out, &errb)
		return code, out.String() + errb.String()
	}
	if os.Geteuid() == 0 {
		theirs := filepath.Join(t.TempDir(), "theirs")
		if err := os.Mkdir(theirs, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(theirs, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if code, o := backup(theirs); code == 0 || !strings.Contains(o, "choose a folder of your own") {
			t.Fatalf("backup into another user's folder: %d %s", code, o)
		}
		if ents, _ := os.ReadDir(theirs); len(ents) != 0 {
			t.Fatalf("the refused backup wrote %d files into another user's folder", len(ents))
		}
	} else if ci() {
		t.Fatal("another user's folder can only be made as root (required under CI=true)")
	}
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if code, o := backup(open); code != 0 {
		t.Fatalf("backup into an empty folder: %d %s", code, o)
	}
	n := 0
	err := filepath.WalkDir(open, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		} else {
			n++
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil || n < 3 {
		t.Fatalf("%d files in the backup: %v", n, err)
	}
	// Opened up afterwards: the next backup refuses it.
	if err := os.Chmod(filepath.Join(open, "index.db"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, o := backup(open); code == 0 || !strings.Contains(o, "open to other local users") || !strings.Contains(o, "index.db") {
		t.Fatalf("backup into a folder others can read: %d %s", code, o)
	}
}

// TestBackupAuditsInterruptedCopies: objects a killed backup copied (left
// pending in the folder, perhaps never recorded) are recorded as Export
// to the folder by the backup that finishes the job, which does not copy
// them again. Here the pending copy of an object sent by DCMTK storescu
// is planted as the killed run would have left it.
func TestBackupAuditsInterruptedCopies(t *testing.T) {
	requireTool(t, "storescu")
	requireDir(t, pydicomTestFiles)
	ctx := context.Background()
	w := startWard(t)
	file := func(n string) string { return filepath.Join(pydicomTestFiles, n) }
	if out, err := dcmtk("storescu", "-aec", "WARD", w.host, w.port, file("CT_small.dcm")).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	bk := filepath.Join(t.TempDir(), "backup")
	if o, code := wardCLI(t, "backup", bk, "--data", w.dir); code != 0 {
		t.Fatalf("first backup: %d %s", code, o)
	}
	mr := file("MR_small.dcm")
	if out, err := dcmtk("storescu", "-aec", "WARD", w.host, w.port, mr).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	mrStudy := studyOf(t, mr)
	idx, err := sqlite.Open(ctx, filepath.Join(w.dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	var key string
	err = idx.WalkInstances(ctx, func(in *store.Instance) error {
		if in.StudyInstanceUID == mrStudy {
			key = in.BlobKey
		}
		return nil
	})
	idx.Close()
	if err != nil || key == "" {
		t.Fatalf("the MR object's key: %q %v", key, err)
	}
	live, err := fsblob.Open(ctx, w.dir)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := live.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	live.Close()
	if err != nil {
		t.Fatal(err)
	}
	dst, err := fsblob.Open(ctx, bk)
	if err != nil {
		t.Fatal(err)
	}
	bw, err := dst.Create(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	bw.Write(b)
	if err := bw.Commit(); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	if recs := readAudit(t, w.dir, func([]audit.Record) bool { return true }); hasEvent(recs, "export", -1, mrStudy) {
		t.Fatal("the MR study is recorded as exported before any backup copied it")
	}
	if o, code := wardCLI(t, "backup", bk, "--data", w.dir); code != 0 || !strings.Contains(o, "2 instances, 0 objects copied") {
		t.Fatalf("backup after an interrupted one: %d %s", code, o)
	}
	readAudit(t, w.dir, func(r []audit.Record) bool {
		return hasEvent(r, "export", audit.OutcomeSuccess, mrStudy) && hasEvent(r, "export", -1, bk)
	})
}
