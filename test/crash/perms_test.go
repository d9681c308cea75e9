package crash

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// asUser runs a shell script as the user u (uid and gid from the
// password database) and returns its output.
func asUser(t *testing.T, u *user.User, script string, args ...string) string {
	t.Helper()
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("running as %s: %v\n%s", u.Username, err, out)
	}
	return string(out)
}

// readableBy lists the paths below (and including) root that u can read:
// files it can open, directories it can list.
func readableBy(t *testing.T, u *user.User, root string) []string {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSocket == 0 {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const script = `for p in "$@"; do
	if [ -d "$p" ]; then ls -- "$p" >/dev/null 2>&1 && echo "$p"
	else head -c 1 -- "$p" >/dev/null 2>&1 && echo "$p"; fi
done; exit 0`
	return strings.Fields(asUser(t, u, script, paths...))
}

// TestDataClosedToOtherUsers: nothing Ward keeps is readable by another
// local user (run as root; the other user is nobody). Regression: a data
// directory that existed with mode 0755 was served, index.db and
// index.db-wal were 0644, and nobody read a patient's name from the WAL
// while Ward served; ward backup went into an empty folder nobody owned.
// ward serve now refuses such a data directory (one holding an open file),
// naming the fix; with
// --fix-permissions it closes it and serves; objects sent by DCMTK
// storescu, the index, its WAL, the audit log, and a backup are then
// closed to nobody, who can still read a file left open beside them.
func TestDataClosedToOtherUsers(t *testing.T) {
	requireTool(t, "storescu")
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root, to act as another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		skipOrFail(t, "no user nobody: %v", err)
	}
	bin := wardBinary(t)
	// The test's folders open to all, as /srv or /var/lib would be, so
	// that only Ward's own modes keep nobody out.
	work := t.TempDir()
	for p := work; p != filepath.Dir(os.TempDir()) && p != "/"; p = filepath.Dir(p) {
		if strings.HasPrefix(p, os.TempDir()+string(filepath.Separator)) {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	control := filepath.Join(work, "control.txt")
	if err := os.WriteFile(control, []byte("open"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readableBy(t, nobody, control); len(got) != 1 {
		t.Fatalf("nobody cannot read a file open to all (%v): the check could not fail", got)
	}
	dir := filepath.Join(work, "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// An index an older Ward left open (0644): a directory whose files are
	// all closed would only be closed, with a warning, and served.
	if err := os.WriteFile(filepath.Join(dir, "index.db"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "index.db"), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "serve", "--data", dir, "--dicom-listen", "127.0.0.1:"+strconv.Itoa(freePort(t)), "--min-free", "16MiB", "--http-listen", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "open to other local users") || !strings.Contains(string(out), dir+" (mode 0755") || !strings.Contains(string(out), "--fix-permissions") {
		t.Fatalf("ward serve on a 0755 data directory: %v\n%s", err, out)
	}

	w := startWard(t, dir, freePort(t), "--fix-permissions")
	var paths []string
	for _, in := range makeInstances(t, filepath.Join(work, "in"), "1.2.826.0.1.3680043.10.543.77", 20) {
		paths = append(paths, in.path)
	}
	s := startStorescu(t, w.Port, paths, nil)
	s.wait(t, 60*time.Second)
	if s.err != nil || len(s.log.ackedFiles()) != len(paths) {
		t.Fatalf("storescu: %v, %d of %d acknowledged\n%s", s.err, len(s.log.ackedFiles()), len(paths), s.log.String())
	}
	for _, f := range []string{"index.db", "index.db-wal", "audit/audit.log"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	if got := readableBy(t, nobody, dir); len(got) != 0 {
		t.Fatalf("nobody can read, while Ward serves: %v", got)
	}
	// Past the data directory: each file on its own is closed too.
	var open []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if fi, err := os.Lstat(p); err == nil && fi.Mode().Perm()&0o077 != 0 {
			open = append(open, p)
		}
		return nil
	})
	if len(open) != 0 {
		t.Fatalf("open to group or others under the data directory: %v", open)
	}

	bk := filepath.Join(work, "backup")
	if out, err := exec.Command(bin, "backup", bk, "--data", dir).CombinedOutput(); err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	if got := readableBy(t, nobody, bk); len(got) != 0 {
		t.Fatalf("nobody can read in the backup: %v", got)
	}
	theirs := filepath.Join(work, "theirs")
	if err := os.Mkdir(theirs, 0o755); err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	if err := os.Chown(theirs, uid, gid); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "backup", theirs, "--data", dir).CombinedOutput(); err == nil || !strings.Contains(string(out), "choose a folder of your own") {
		t.Fatalf("backup into a folder nobody owns: %v\n%s", err, out)
	}
	if got := asUser(t, nobody, `ls -A "$1"`, theirs); got != "" {
		t.Fatalf("the refused backup left files in nobody's folder: %s", got)
	}
}
