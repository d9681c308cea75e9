package testci

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A throwaway PostgreSQL cluster for tests (Debian's postgresql
// package): initdb and pg_ctl run as the postgres user (initdb refuses
// root), listening only on a unix socket in a temporary directory, with
// fsync off (tests only). One cluster per test binary, started on first
// use; StopPostgres (from TestMain) stops it. test/harness has the shared
// starter; this one is the registry helper's stopgap until it lands.

var pg struct {
	once     sync.Once
	dir, err string
	ctl      string
	data     string
}

// pgBin finds a PostgreSQL program: on PATH, else in Debian's versioned
// directory.
func pgBin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(m) > 0 {
		return m[len(m)-1]
	}
	return ""
}

func startPostgres() (string, string) {
	initdb, ctl := pgBin("initdb"), pgBin("pg_ctl")
	if initdb == "" || ctl == "" {
		return "", "PostgreSQL (initdb, pg_ctl) not installed"
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return "", "no postgres user"
	}
	if os.Geteuid() != 0 {
		return "", "starting PostgreSQL as the postgres user needs root"
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "ward-pg-")
	if err != nil {
		return "", err.Error()
	}
	_ = os.Chmod(dir, 0o755)
	data := filepath.Join(dir, "data")
	sock := filepath.Join(dir, "sock")
	for _, d := range []string{data, sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return "", err.Error()
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return "", err.Error()
		}
	}
	run := func(name string, args ...string) error {
		cmd := exec.Command(name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", filepath.Base(name), err, out)
		}
		return nil
	}
	if err := run(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"); err != nil {
		return "", err.Error()
	}
	opts := fmt.Sprintf("-k %s -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off", sock)
	if err := run(ctl, "-D", data, "-l", filepath.Join(data, "log"), "-w", "-o", opts, "start"); err != nil {
		return "", err.Error()
	}
	pg.ctl, pg.data = ctl, data
	return sock, ""
}

// Postgres returns the DSN of a new, empty database in the test binary's
// throwaway PostgreSQL cluster (started on first use). It skips (fails
// under CI=true) when PostgreSQL cannot be started here.
func Postgres(t testing.TB) string {
	t.Helper()
	pg.once.Do(func() { pg.dir, pg.err = startPostgres() })
	if pg.err != "" {
		SkipOrFail(t, "PostgreSQL: %s", pg.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := "postgres:///postgres?host=" + pg.dir + "&user=postgres"
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return "postgres:///" + name + "?host=" + pg.dir + "&user=postgres"
}

// StopPostgres stops the cluster Postgres started, if any, and removes
// it (call it from TestMain after m.Run).
func StopPostgres() {
	if pg.ctl == "" {
		return
	}
	cmd := exec.Command(pg.ctl, "-D", pg.data, "-m", "immediate", "stop")
	if u, err := user.Lookup("postgres"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	_ = cmd.Run()
	_ = os.RemoveAll(filepath.Dir(pg.data))
}
