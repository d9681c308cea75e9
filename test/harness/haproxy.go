package harness

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/testci"
)

// Backend names in the configuration HAProxy is given: one TCP-mode
// backend for DIMSE and one HTTP-mode backend for DICOMweb, each holding
// every node under the node's name.
const (
	HAProxyDIMSE = "ward_dimse"
	HAProxyWeb   = "ward_web"
)

// LBServer is one Ward node as HAProxy sees it: its name (the server's
// name in both backends) and its loopback DIMSE and web ports.
type LBServer struct {
	Name      string
	DICOMPort int
	WebPort   int
}

// HAProxyOptions shape the generated configuration.
type HAProxyOptions struct {
	// Balance is the DIMSE backend's algorithm: "leastconn" (the default,
	// for long associations) or "roundrobin".
	Balance string
	// HealthPath, when set (e.g. "/readyz"), makes every check of both
	// backends an HTTP GET of that path on the node's web port, healthy on
	// 200 only (option httpchk). Empty: a plain TCP connect to the port
	// being balanced.
	HealthPath string
	// Inter is the interval between checks (default 300ms); a server is
	// taken out after Fall failed checks in a row and back in after Rise
	// good ones (default 2 each).
	Inter      time.Duration
	Fall, Rise int
}

// HAProxy is Debian's haproxy running in master-worker mode on loopback
// with a configuration generated from a list of nodes: a TCP-mode
// frontend on DIMSEPort, an HTTP-mode frontend on HTTPPort, and an admin
// stats socket the test reads server states from.
type HAProxy struct {
	DIMSEPort int
	HTTPPort  int
	Socket    string // the stats socket (unix, admin level)
	opts      HAProxyOptions
	dir       string
	cfg       string
	proc      *Proc
}

// RequireHAProxy skips (fails under CI=true) unless haproxy is installed.
func RequireHAProxy(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"haproxy", "/usr/sbin/haproxy"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	testci.SkipOrFail(t, "haproxy not installed")
	return ""
}

// StartHAProxy runs haproxy in front of servers until the test ends and
// waits until both frontends listen. It does not wait for the servers to
// be healthy (WaitState does).
func StartHAProxy(t testing.TB, servers []LBServer, opts HAProxyOptions) *HAProxy {
	t.Helper()
	bin := RequireHAProxy(t)
	if opts.Balance == "" {
		opts.Balance = "leastconn"
	}
	if opts.Inter <= 0 {
		opts.Inter = 300 * time.Millisecond
	}
	if opts.Fall <= 0 {
		opts.Fall = 2
	}
	if opts.Rise <= 0 {
		opts.Rise = 2
	}
	// A unix socket's path must fit in 108 bytes: t.TempDir's may not.
	dir, err := os.MkdirTemp("", "hap")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &HAProxy{DIMSEPort: FreePort(t), HTTPPort: FreePort(t), Socket: filepath.Join(dir, "admin.sock"),
		opts: opts, dir: dir, cfg: filepath.Join(dir, "haproxy.cfg")}
	h.write(t, servers)
	if out, err := exec.Command(bin, "-c", "-f", h.cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, h.config(servers))
	}
	// -W: master-worker, so that SIGUSR2 reloads the configuration file;
	// -db: in the foreground, its log on stderr.
	h.proc = Start(t, exec.Command(bin, "-W", "-db", "-f", h.cfg), true)
	WaitListen(t, h.DIMSEPort)
	WaitListen(t, h.HTTPPort)
	AssertLoopbackOnly(t, h.DIMSEPort)
	AssertLoopbackOnly(t, h.HTTPPort)
	h.waitSocket(t)
	return h
}

// Log is what haproxy has written so far (its own messages and one line
// per connection and request).
func (h *HAProxy) Log() string { return h.proc.Log.String() }

// config is the configuration for servers.
func (h *HAProxy) config(servers []LBServer) string {
	var b strings.Builder
	ms := h.opts.Inter.Milliseconds()
	fmt.Fprintf(&b, `global
    maxconn 512
    stats socket %s mode 600 level admin
    log stderr format raw local0 info

defaults
    log global
    timeout connect 2s
    timeout client 10m
    timeout server 10m
    timeout check 1s
    retries 3
    option redispatch
    default-server inter %dms fastinter %dms downinter %dms fall %d rise %d

frontend dimse
    mode tcp
    option tcplog
    bind 127.0.0.1:%d
    default_backend %s

frontend dicomweb
    mode http
    option httplog
    bind 127.0.0.1:%d
    default_backend %s

backend %s
    mode tcp
    balance %s
`, h.Socket, ms, ms, ms, h.opts.Fall, h.opts.Rise, h.DIMSEPort, HAProxyDIMSE, h.HTTPPort, HAProxyWeb, HAProxyDIMSE, h.opts.Balance)
	h.checks(&b)
	for _, s := range servers {
		fmt.Fprintf(&b, "    server %s 127.0.0.1:%d check%s\n", s.Name, s.DICOMPort, h.checkPort(s))
	}
	fmt.Fprintf(&b, "\nbackend %s\n    mode http\n    balance roundrobin\n", HAProxyWeb)
	h.checks(&b)
	for _, s := range servers {
		fmt.Fprintf(&b, "    server %s 127.0.0.1:%d check%s\n", s.Name, s.WebPort, h.checkPort(s))
	}
	return b.String()
}

func (h *HAProxy) checks(b *strings.Builder) {
	if h.opts.HealthPath != "" {
		fmt.Fprintf(b, "    option httpchk GET %s\n    http-check expect status 200\n", h.opts.HealthPath)
	}
}

func (h *HAProxy) checkPort(s LBServer) string {
	if h.opts.HealthPath != "" {
		return " port " + strconv.Itoa(s.WebPort)
	}
	return ""
}

func (h *HAProxy) write(t testing.TB, servers []LBServer) {
	t.Helper()
	if err := os.WriteFile(h.cfg, []byte(h.config(servers)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Reload writes a configuration for servers and has the master load it
// (SIGUSR2); it returns once the stats socket lists exactly those
// servers. Connections in progress stay with the old worker until they
// end.
func (h *HAProxy) Reload(t testing.TB, servers []LBServer) {
	t.Helper()
	h.write(t, servers)
	if err := h.proc.Cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := h.states()
		if err == nil && len(got) == 2*len(servers) {
			ok := true
			for _, s := range servers {
				if _, in := got[HAProxyDIMSE+"/"+s.Name]; !in {
					ok = false
				}
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy did not reload in 20 s (%v): %v\n%s", err, got, h.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops haproxy (SIGTERM to the master) and waits for it.
func (h *HAProxy) Stop(t testing.TB) {
	t.Helper()
	if !h.proc.Exited() {
		_, _ = h.proc.Stop(t, syscall.SIGTERM, 20*time.Second)
	}
}

func (h *HAProxy) waitSocket(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := h.Command("show info")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy stats socket: %v\n%s", err, h.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Command sends one command to the stats socket and returns the answer.
func (h *HAProxy) Command(cmd string) (string, error) {
	c, err := net.DialTimeout("unix", h.Socket, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(bufio.NewReader(c))
	return string(b), err
}

// ServerState is one server's line of `show stat`.
type ServerState struct {
	Status  string // UP, DOWN, "UP 1/2", "DOWN 1/2", MAINT, no check
	Check   string // the last check's result, e.g. L4OK, L7OK, L7STS, L4CON
	Current int    // sessions open now
	Total   int    // sessions since start
}

// States reads `show stat` and returns each server's state by
// "backend/server".
func (h *HAProxy) States(t testing.TB) map[string]ServerState {
	t.Helper()
	m, err := h.states()
	if err != nil {
		t.Fatalf("haproxy show stat: %v", err)
	}
	return m
}

func (h *HAProxy) states() (map[string]ServerState, error) {
	out, err := h.Command("show stat")
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(out, "# ")))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("show stat: %w: %q", err, out)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("show stat: no header: %q", out)
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	for _, name := range []string{"pxname", "svname", "status", "check_status", "scur", "stot"} {
		if _, ok := col[name]; !ok {
			return nil, fmt.Errorf("show stat: no column %s", name)
		}
	}
	field := func(rec []string, name string) string {
		if i := col[name]; i < len(rec) {
			return rec[i]
		}
		return ""
	}
	m := map[string]ServerState{}
	for _, rec := range recs[1:] {
		sv := field(rec, "svname")
		if sv == "" || sv == "FRONTEND" || sv == "BACKEND" {
			continue
		}
		cur, _ := strconv.Atoi(field(rec, "scur"))
		tot, _ := strconv.Atoi(field(rec, "stot"))
		m[field(rec, "pxname")+"/"+sv] = ServerState{Status: field(rec, "status"), Check: field(rec, "check_status"), Current: cur, Total: tot}
	}
	return m, nil
}

// WaitState waits up to limit until server's status in backend begins
// with want ("UP" or "DOWN"; a server in transition reads "UP 1/2"),
// read from the stats socket.
func (h *HAProxy) WaitState(t testing.TB, backend, server, want string, limit time.Duration) ServerState {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		m, err := h.states()
		st := m[backend+"/"+server]
		if err == nil && (st.Status == want) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy %s/%s is %q (check %s), not %s after %s (%v)\n%s", backend, server, st.Status, st.Check, want, limit, err, h.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitAllUp waits until every server of both backends is UP.
func (h *HAProxy) WaitAllUp(t testing.TB, servers []LBServer, limit time.Duration) {
	t.Helper()
	for _, s := range servers {
		h.WaitState(t, HAProxyDIMSE, s.Name, "UP", limit)
		h.WaitState(t, HAProxyWeb, s.Name, "UP", limit)
	}
}
