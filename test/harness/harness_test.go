package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-pacs/ward/audit"
)

// TestProc: a child's output is kept, WaitLog sees it, Stop returns the
// exit, and WaitLog fails at once (not at its deadline) on a child that
// exited without saying it.
func TestProc(t *testing.T) {
	p := Start(t, exec.Command("sh", "-c", "echo ready; exec sleep 60"), false)
	p.WaitLog(t, "ready", 10*time.Second)
	if p.Exited() {
		t.Fatal("exited early")
	}
	err, _ := p.Stop(t, syscall.SIGTERM, 10*time.Second)
	if err == nil || !p.Exited() {
		t.Fatalf("after SIGTERM: %v, exited %v", err, p.Exited())
	}

	q := Start(t, exec.Command("sh", "-c", "echo bye"), false)
	start := time.Now()
	ft := &fatalT{TB: t}
	func() {
		defer func() { _ = recover() }()
		q.WaitLog(ft, "never", time.Minute)
	}()
	if !ft.failed || time.Since(start) > 30*time.Second || !strings.Contains(ft.msg, "exited before logging") {
		t.Errorf("WaitLog on an exited child: failed %v after %s: %s", ft.failed, time.Since(start), ft.msg)
	}
}

// fatalT records a Fatalf instead of ending the test.
type fatalT struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fatalT) Helper() {}

func (f *fatalT) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = strings.TrimSpace(strings.SplitN(fmt.Sprintf(format, args...), "\n", 2)[0])
	panic("fatal")
}

// TestDataDir: the data directory is closed to other users, as ward serve
// requires.
func TestDataDir(t *testing.T) {
	fi, err := os.Stat(DataDir(t))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v", fi.Mode(), err)
	}
}

// TestAuditRecordsMissingLog: no log yet is no records, not an error.
func TestAuditRecordsMissingLog(t *testing.T) {
	if recs := AuditRecords(t.TempDir()); len(recs) != 0 {
		t.Fatalf("%d records", len(recs))
	}
	if _, ok := PollAudit(t.TempDir(), 0, func([]audit.Record) bool { return false }); ok {
		t.Fatal("want not satisfied, yet ok")
	}
}

// TestPostgres: a cluster of the test's own starts as the postgres user
// on a socket only, gives each caller a database, takes the password
// role, and comes back after a stop and after a kill with what was
// committed.
func TestPostgres(t *testing.T) {
	ctx := context.Background()
	p := NewPostgres(t)
	dsn := p.NewDatabase(t)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var addrs string
	if err := c.QueryRow(ctx, "SHOW listen_addresses").Scan(&addrs); err != nil || addrs != "" {
		t.Errorf("listen_addresses = %q, %v: want none", addrs, err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE x (n int); INSERT INTO x VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	// The password role: refused without its password, admitted with it.
	noPW := strings.Replace(dsn, "user=postgres", "user="+p.User, 1)
	if c, err := pgx.Connect(ctx, noPW); err == nil {
		c.Close(ctx)
		t.Error("the ward role was admitted without a password")
	}
	if c, err := pgx.Connect(ctx, noPW+"&password="+p.Password); err != nil {
		t.Errorf("the ward role with its password: %v", err)
	} else {
		c.Close(ctx)
	}
	count := func() int {
		t.Helper()
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM x").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Errorf("after a restart: %d rows", n)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Error("running after Kill")
	}
	if c, err := pgx.Connect(ctx, dsn); err == nil {
		c.Close(ctx)
		t.Fatal("connected to a killed server")
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Errorf("after a kill: %d rows", n)
	}
	if shared := StartPostgres(t); shared == p || shared != StartPostgres(t) {
		t.Error("StartPostgres is not one shared cluster apart from NewPostgres's")
	}
}
