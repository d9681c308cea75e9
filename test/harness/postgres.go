package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-pacs/ward/internal/testci"
)

// Postgres is a throwaway PostgreSQL cluster (Debian's postgresql
// package) for tests: initdb'd into a temporary folder, run as the
// postgres user when the tests run as root (initdb refuses root), and
// reachable only on a unix socket in a folder of its own (0700): it
// listens on no TCP address. Durability is traded for speed (fsync=off,
// which still survives a killed server, not a power cut).
//
// Two roles: postgres, the superuser, trusted on the socket (only the
// postgres user and root can reach the socket), and ward, which must
// give its generated password (User, Password) for tests of libpq
// password files and PG* variables.
//
// A test that stops, restarts or kills the server starts its own with
// NewPostgres; StartPostgres shares one per test process.
type Postgres struct {
	// SocketDir is the folder of the unix socket; Port names the socket
	// in it (.s.PGSQL.Port).
	SocketDir string
	Port      int
	// User and Password are the password-authenticated role (CREATEDB).
	User, Password string

	bin, root, data string
	cred            *syscall.Credential
	logPath         string
	seq             atomic.Int64
	durable         bool

	mu   sync.Mutex
	proc *pgProc // nil while stopped
}

type pgProc struct {
	pid  int
	done chan struct{}
	err  error
}

// pgBin is the bin folder of the newest PostgreSQL installed by Debian's
// packages (/usr/lib/postgresql/N/bin), or an error saying it is missing.
func pgBin() (string, error) {
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	slices.SortFunc(found, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(a))))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(b))))
		return va - vb
	})
	if len(found) == 0 {
		return "", errors.New("PostgreSQL not installed (Debian package postgresql: /usr/lib/postgresql/*/bin/initdb)")
	}
	return filepath.Dir(found[len(found)-1]), nil
}

// PostgresMissing says why no PostgreSQL cluster can be started here, or
// is "" when one can. For a test that adds PostgreSQL to others it runs
// anyway (under CI=true it should fail instead: see testci).
func PostgresMissing() string {
	if _, err := pgBin(); err != nil {
		return err.Error()
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			return "no postgres user to run PostgreSQL as (initdb refuses root)"
		}
	}
	return ""
}

var sharedPG struct {
	once sync.Once
	pg   *Postgres
	err  error
}

// StartPostgres returns the test process's shared PostgreSQL cluster,
// started on first use and stopped (its folder removed) by Main, or when
// the process exits. It skips the test (fails it under CI=true) when
// PostgreSQL is not installed. Tests that share it must not stop it:
// they take a database each (NewDatabase).
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	if why := PostgresMissing(); why != "" {
		testci.SkipOrFail(t, "%s", why)
	}
	sharedPG.once.Do(func() {
		sharedPG.pg, sharedPG.err = startCluster()
		if sharedPG.err == nil {
			atExit(func() { sharedPG.pg.remove() })
		}
	})
	if sharedPG.err != nil {
		t.Fatal(sharedPG.err)
	}
	return sharedPG.pg
}

// NewPostgres starts a PostgreSQL cluster of the test's own, which it may
// stop, restart and kill; it is stopped and removed when the test ends.
func NewPostgres(t testing.TB) *Postgres {
	t.Helper()
	return newPostgres(t, startCluster)
}

// NewDurablePostgres is NewPostgres with its folder under dir (on the
// disk to measure: the default temporary folder may be tmpfs) and fsync
// on, as in production: for benchmarks of commits. dir "" is the default
// temporary folder.
func NewDurablePostgres(t testing.TB, dir string) *Postgres {
	t.Helper()
	return newPostgres(t, func() (*Postgres, error) { return startClusterIn(dir, true) })
}

// newPostgres starts a cluster of the test's own with start, and removes
// it when the test ends (printing its log if the test failed).
func newPostgres(t testing.TB, start func() (*Postgres, error)) *Postgres {
	t.Helper()
	if why := PostgresMissing(); why != "" {
		testci.SkipOrFail(t, "%s", why)
	}
	p, err := start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			t.Logf("PostgreSQL log:\n%s", b)
		}
		p.remove()
	})
	return p
}

// DSN is the URL of database db (as the superuser, over the socket).
func (p *Postgres) DSN(db string) string {
	return fmt.Sprintf("postgres:///%s?host=%s&port=%d&user=postgres&sslmode=disable",
		url.PathEscape(db), url.QueryEscape(p.SocketDir), p.Port)
}

// CreateDatabase creates a new, empty database and returns its name.
func (p *Postgres) CreateDatabase() (string, error) {
	name := fmt.Sprintf("t%d_%d", os.Getpid(), p.seq.Add(1))
	return name, p.Exec(context.Background(), "CREATE DATABASE "+name)
}

// NewDatabase creates a new, empty database for the test, dropped when
// the test ends, and returns its DSN.
func (p *Postgres) NewDatabase(t testing.TB) string {
	t.Helper()
	name, err := p.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Best effort: the cluster may be stopped or gone by now.
		_ = p.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return p.DSN(name)
}

// Exec runs one SQL statement as the superuser in the postgres database.
func (p *Postgres) Exec(ctx context.Context, sql string, args ...any) error {
	c, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql, args...)
	return err
}

// Log is what the server has logged so far.
func (p *Postgres) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// Running reports whether the server process is up.
func (p *Postgres) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return false
	}
	select {
	case <-p.proc.done:
		return false
	default:
		return true
	}
}

// Stop shuts the server down (fast shutdown: open sessions are ended,
// transactions rolled back), killing it after 30 s.
func (p *Postgres) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopLocked(syscall.SIGINT, 30*time.Second)
}

// Kill kills the server and all its processes at once (SIGKILL), as a
// crash would: open connections break at once. Start then runs crash
// recovery.
func (p *Postgres) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopLocked(syscall.SIGKILL, 0)
}

// Start starts the stopped (or killed) server again on the same socket.
func (p *Postgres) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil {
		return errors.New("PostgreSQL is running")
	}
	return p.startLocked()
}

// Restart stops the server and starts it again.
func (p *Postgres) Restart() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.stopLocked(syscall.SIGINT, 30*time.Second); err != nil {
		return err
	}
	return p.startLocked()
}

func (p *Postgres) stopLocked(sig syscall.Signal, grace time.Duration) error {
	pr := p.proc
	if pr == nil {
		return nil
	}
	p.proc = nil
	var procs []int
	if sig == syscall.SIGKILL {
		// Each backend leads a process group of its own: stop the
		// postmaster (no more forks), then kill it and its children.
		_ = syscall.Kill(pr.pid, syscall.SIGSTOP)
		procs = append(childrenOf(pr.pid), pr.pid)
		for _, pid := range procs {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	} else {
		_ = syscall.Kill(pr.pid, sig)
	}
	select {
	case <-pr.done:
	case <-time.After(grace):
		_ = syscall.Kill(pr.pid, syscall.SIGKILL)
		<-pr.done
	}
	// Wait until no process of the server is left holding its shared
	// memory (a new postmaster refuses to start otherwise).
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range procs {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// alive reports whether process pid exists and is not a zombie (which
// holds no shared memory; a container's first process may never reap it).
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// childrenOf lists the processes whose parent is pid (from /proc).
func childrenOf(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces; it ends at the last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 2 {
			if ppid, err := strconv.Atoi(f[1]); err == nil && ppid == pid {
				out = append(out, child)
			}
		}
	}
	return out
}

// remove stops the server and removes its folder.
func (p *Postgres) remove() {
	p.mu.Lock()
	_ = p.stopLocked(syscall.SIGQUIT, 10*time.Second)
	p.mu.Unlock()
	_ = os.RemoveAll(p.root)
}

// pgOwnerFile, in a cluster's root folder, holds the PID of the test
// process that made it: a later start removes folders whose owner is gone
// (a test binary killed before its clean-up ran).
const pgOwnerFile = "owner-pid"

func sweepStaleClusters() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "ward-pg-*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, pgOwnerFile))
		if err != nil {
			continue // being made, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			if pm, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
				if line, _, _ := strings.Cut(string(pm), "\n"); line != "" {
					if ppid, err := strconv.Atoi(line); err == nil && ppid > 0 {
						_ = syscall.Kill(ppid, syscall.SIGQUIT)
					}
				}
			}
			_ = os.RemoveAll(d)
		}
	}
}

func startCluster() (*Postgres, error) { return startClusterIn("", false) }

func startClusterIn(dir string, durable bool) (*Postgres, error) {
	sweepStaleClusters()
	bin, err := pgBin()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp(dir, "ward-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{bin: bin, durable: durable, root: root, data: filepath.Join(root, "data"), SocketDir: filepath.Join(root, "sock"),
		Port: 5432, User: "ward", Password: randomHex(16), logPath: filepath.Join(root, "postgres.log")}
	fail := func(err error) (*Postgres, error) {
		_ = os.RemoveAll(root)
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(root, pgOwnerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return fail(err)
	}
	if err := os.Mkdir(p.SocketDir, 0o700); err != nil {
		return fail(err)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fail(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
		for _, d := range []string{root, p.SocketDir} {
			if err := os.Chown(d, uid, gid); err != nil {
				return fail(err)
			}
		}
		if err := os.Chmod(root, 0o700); err != nil {
			return fail(err)
		}
	}
	cmd := exec.Command(filepath.Join(bin, "initdb"), "-D", p.data, "-U", "postgres", "-E", "UTF8",
		"--no-locale", "--no-sync", "--auth-local=trust", "--auth-host=reject")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %v\n%s", err, out))
	}
	// The superuser is trusted on the socket; everyone else gives a
	// password. No TCP at all (listen_addresses is empty).
	hba := "local all postgres trust\nlocal all all scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(p.data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fail(err)
	}
	p.mu.Lock()
	err = p.startLocked()
	p.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Exec(ctx, "CREATE ROLE "+p.User+" LOGIN CREATEDB PASSWORD '"+p.Password+"'"); err != nil {
		p.remove()
		return nil, fmt.Errorf("creating role %s: %w", p.User, err)
	}
	return p, nil
}

// startLocked runs the postmaster as a child of a thread that stays alive
// as long as it runs: the child gets SIGQUIT (immediate shutdown) if the
// test process dies without stopping it.
func (p *Postgres) startLocked() error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	fsync := "fsync=off"
	if p.durable {
		fsync = "fsync=on"
	}
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), "-D", p.data, "-k", p.SocketDir, "-p", strconv.Itoa(p.Port),
		"-c", "listen_addresses=",
		"-c", "unix_socket_permissions=0700",
		"-c", fsync,
		"-c", "shared_buffers=32MB",
		"-c", "max_connections=300",
		"-c", "logging_collector=off",
		"-c", "log_min_messages=warning",
		"-c", "log_statement=none",
	)
	cmd.Dir = p.root
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
	pr := &pgProc{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig follows the thread that forked: keep it for good.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		pr.pid = cmd.Process.Pid
		started <- nil
		pr.err = cmd.Wait()
		close(pr.done)
	}()
	if err := <-started; err != nil {
		return err
	}
	p.proc = pr
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := pgx.Connect(ctx, p.DSN("postgres"))
		if err == nil {
			err = c.Ping(ctx)
			c.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-pr.done:
			p.proc = nil
			b, _ := os.ReadFile(p.logPath)
			return fmt.Errorf("postgres exited (%v):\n%s", pr.err, b)
		default:
		}
		if time.Now().After(deadline) {
			_ = p.stopLocked(syscall.SIGKILL, 0)
			b, _ := os.ReadFile(p.logPath)
			return fmt.Errorf("postgres did not accept connections: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
