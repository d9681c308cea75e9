package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/server"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// fakeIndexes stands in for the PostgreSQL index backend while this tree
// has none (store/postgres is another branch's): "postgres" opens the
// SQLite index at the path kept for the DSN. The shared state, the
// subject here, is on the real PostgreSQL either way.
var fakeIndexes = struct {
	sync.Mutex
	once  sync.Once
	fake  bool
	paths map[string]string
}{paths: map[string]string{}}

// clusterIndex returns the [storage] index URL of node on the database
// dsn: node's own SQLite index when no PostgreSQL backend is built in.
func clusterIndex(t *testing.T, dsn, node string) string {
	u := dsn + "&application_name=ward-" + node
	fakeIndexes.once.Do(func() {
		_, err := store.OpenIndex(context.Background(), "postgres", "")
		if err == nil || !strings.Contains(err.Error(), "unknown index backend") {
			return // the real backend
		}
		fakeIndexes.fake = true
		store.RegisterIndex("postgres", func(ctx context.Context, dsn string) (store.Index, error) {
			fakeIndexes.Lock()
			p := fakeIndexes.paths[dsn]
			fakeIndexes.Unlock()
			if p == "" {
				return nil, fmt.Errorf("no fake index for %s", dsn)
			}
			return store.OpenIndex(ctx, "sqlite", p)
		})
	})
	if !fakeIndexes.fake {
		return u
	}
	fakeIndexes.Lock()
	fakeIndexes.paths[u] = filepath.Join(t.TempDir(), "index.db")
	fakeIndexes.Unlock()
	return u
}

// clusterNode starts a ward serve of a cluster in process: node ID node,
// index URL index, its own data directory.
func clusterNode(t *testing.T, node, index string) *server.Server {
	t.Helper()
	return clusterNodeSetup(t, node, index, nil)
}

// clusterNodeSetup is clusterNode printing its first-run set-up link, if
// any, on setup.
func clusterNodeSetup(t *testing.T, node, index string, setup io.Writer) *server.Server {
	t.Helper()
	return clusterNodeConf(t, node, index, "lockout_after = -1\n", setup)
}

// clusterNodeConf is clusterNodeSetup with dicom (lines of its [dicom]
// section) in place of the lockout turned off.
func clusterNodeConf(t *testing.T, node, index, dicom string, setup io.Writer) *server.Server {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf("node_id = %q\n[dicom]\nlisten = \"127.0.0.1:0\"\n%s[web]\nlisten = \"127.0.0.1:0\"\n[storage]\nindex = %q\nmin_free = \"1MiB\"\n", node, dicom, index)
	if err := os.WriteFile(filepath.Join(data, config.ConfigFileName), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func() (*config.Config, error) { return loadConfig("", data) }
	c, err := load()
	if err != nil {
		t.Fatal(err)
	}
	s := &server.Server{Config: c, Load: load, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if setup != nil {
		s.SetupOut, s.ConfigFile = setup, filepath.Join(data, config.ConfigFileName)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Open(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("ward did not stop")
		}
	})
	return s
}

// eventually polls cond every 100 ms for up to 15 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15 s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterSharesPeersUsersTokensSessions: two ward serve nodes on one
// PostgreSQL admit the same callers. A peer added with ward peer (the
// CLI, on a machine where no node runs) is admitted by both nodes within
// seconds (DCMTK echoscu as the peer), and refused by both once removed;
// a token issued is accepted by both, and refused by both once revoked; a
// browser session made on node A works on node B, and a sign-out on B
// ends it on A. Each node audits the changes in its own trail, naming
// itself.
func TestClusterSharesPeersUsersTokensSessions(t *testing.T) {
	testci.RequireTool(t, "echoscu")
	dsn := harness.StartPostgres(t).NewDatabase(t)
	a := clusterNode(t, "node-a", clusterIndex(t, dsn, "a"))
	b := clusterNode(t, "node-b", clusterIndex(t, dsn, "b"))
	nodes := []*server.Server{a, b}

	// The operator's machine: a configuration naming the cluster, no node.
	cli := filepath.Join(t.TempDir(), "cli")
	if err := os.MkdirAll(cli, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cli, config.ConfigFileName), []byte(fmt.Sprintf("[storage]\nindex = %q\n", dsn+"&application_name=ward-cli")), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, errs, code := runCLIInput(t, stdin, append(args, "--data", cli)...)
		if code != 0 {
			t.Fatalf("ward %s: exit %d: %s", strings.Join(args, " "), code, errs)
		}
		return out
	}
	echo := func(s *server.Server) bool {
		_, port, _ := strings.Cut(s.Addr().String(), ":")
		cmd := exec.Command("echoscu", "-aet", "MODALITY", "-aec", "WARD", "127.0.0.1", port)
		cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
		return cmd.Run() == nil
	}

	if echo(a) || echo(b) {
		t.Fatal("an unregistered peer was admitted")
	}
	// A peer added through the CLI is admitted by both nodes.
	if out := run("", "peer", "add", "MODALITY", "--host", "127.0.0.1", "--allow", "echo"); !strings.Contains(out, "the cluster's shared index") {
		t.Fatalf("peer add said %q", out)
	}
	if out := run("", "peer", "list"); !strings.Contains(out, "MODALITY") {
		t.Fatalf("peer list: %q", out)
	}
	added := time.Now()
	for i, s := range nodes {
		eventually(t, fmt.Sprintf("node %d admits the new peer", i), func() bool { return echo(s) })
	}
	t.Logf("the new peer was admitted by both nodes %v after ward peer add returned", time.Since(added).Round(time.Millisecond))

	// A user and a token: accepted by both.
	run("a long passcode\n", "user", "add", "ana", "--role", "viewer")
	tok := strings.TrimSpace(run("", "token", "issue", "ana", "--ttl", "1h"))
	get := func(s *server.Server, bearer string) int {
		rq, _ := http.NewRequest("GET", "http://"+s.WebAddr().String()+"/dicom-web/studies?PatientID=X", nil)
		rq.Header.Set("Authorization", "Bearer "+bearer)
		rs, err := http.DefaultClient.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		rs.Body.Close()
		return rs.StatusCode
	}
	for i, s := range nodes {
		eventually(t, fmt.Sprintf("node %d accepts the token", i), func() bool { return get(s, tok) == 200 })
	}

	// A session made on node A works on node B; sign-out on B ends it on A.
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(s *server.Server, method, path string, hdr map[string]string, body string, cookie *http.Cookie) (*http.Response, string) {
		t.Helper()
		rq, _ := http.NewRequest(method, "http://"+s.WebAddr().String()+path, strings.NewReader(body))
		for k, v := range hdr {
			rq.Header.Set(k, v)
		}
		c := hc
		if cookie != nil {
			rq.AddCookie(cookie)
			c = &http.Client{CheckRedirect: hc.CheckRedirect}
		}
		rs, err := c.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		bb, _ := io.ReadAll(rs.Body)
		rs.Body.Close()
		return rs, string(bb)
	}
	eventually(t, "node A knows the user", func() bool {
		rs, page := do(a, "GET", "/signin?next=%2F", nil, "", nil)
		m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
		if rs.StatusCode != 200 || m == nil {
			t.Fatalf("sign-in page: %d", rs.StatusCode)
		}
		form := url.Values{"user": {"ana"}, "passcode": {"a long passcode"}, "csrf": {m[1]}, "next": {"/"}}
		rs, _ = do(a, "POST", "/signin", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, form.Encode(), nil)
		return rs.StatusCode == 303
	})
	var session *http.Cookie
	au, _ := url.Parse("http://" + a.WebAddr().String())
	for _, ck := range jar.Cookies(au) {
		if ck.Name == "ward-session" {
			session = ck
		}
	}
	if session == nil {
		t.Fatal("no session cookie from node A")
	}
	rs, body := do(b, "GET", "/session", nil, "", session)
	var info struct{ User, CSRF string }
	if err := json.Unmarshal([]byte(body), &info); rs.StatusCode != 200 || err != nil || info.User != "ana" {
		t.Fatalf("node A's session on node B: %d %s", rs.StatusCode, body)
	}
	if rs, _ := do(b, "POST", "/signout", map[string]string{"X-CSRF-Token": info.CSRF}, "", session); rs.StatusCode != 204 {
		t.Fatalf("sign-out on node B: %d", rs.StatusCode)
	}
	if rs, _ := do(a, "GET", "/session", nil, "", session); rs.StatusCode != 401 {
		t.Fatalf("node A after sign-out on node B: %d", rs.StatusCode)
	}

	// Revoked: refused by both.
	var id string
	for _, l := range strings.Split(run("", "token", "list"), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == "ana" {
			id = f[0]
		}
	}
	run("", "token", "revoke", id)
	for i, s := range nodes {
		eventually(t, fmt.Sprintf("node %d refuses the revoked token", i), func() bool { return get(s, tok) == 401 })
	}

	// Removed: refused by both.
	run("", "peer", "remove", "MODALITY")
	removed := time.Now()
	for i, s := range nodes {
		eventually(t, fmt.Sprintf("node %d refuses the removed peer", i), func() bool { return !echo(s) })
	}
	t.Logf("the removed peer was refused by both nodes %v after ward peer remove returned", time.Since(removed).Round(time.Millisecond))

	// Each node audited the changes in its own trail, naming itself.
	for _, n := range []struct {
		s  *server.Server
		id string
	}{{a, "node-a"}, {b, "node-b"}} {
		harness.ReadAudit(t, n.s.Config.DataDir, func(recs []audit.Record) bool {
			var added, removed, token bool
			for _, r := range recs {
				x := r.XML
				if !strings.Contains(x, `AuditSourceID="WARD@`+n.id+`"`) {
					continue
				}
				added = added || strings.Contains(x, "peers added: MODALITY")
				removed = removed || strings.Contains(x, "peers removed: MODALITY")
				token = token || strings.Contains(x, "tokens revoked: "+id)
			}
			return added && removed && token
		})
	}
}

// TestPeerImport: ward peer import moves a file's [[peers]] and [[users]]
// and the data directory's tokens into the shared index, removes the
// tables from the file (ward serve refuses them in cluster mode), is
// idempotent, and refuses an entry registered differently.
func TestPeerImport(t *testing.T) {
	dsn := harness.StartPostgres(t).NewDatabase(t)
	data := filepath.Join(t.TempDir(), "data")
	file := filepath.Join(data, config.ConfigFileName)
	if out, errs, code := runCLIInput(t, "a long passcode\n", "user", "add", "ana", "--role", "viewer", "--data", data); code != 0 {
		t.Fatalf("user add: %s %s", out, errs)
	}
	if _, errs, code := runCLI(t, "peer", "add", "MOD", "--host", "127.0.0.1", "--allow", "echo", "--data", data); code != 0 {
		t.Fatal(errs)
	}
	if _, errs, code := runCLI(t, "token", "issue", "ana", "--data", data); code != 0 {
		t.Fatal(errs)
	}
	b, _ := os.ReadFile(file)
	if err := os.WriteFile(file, append(b, []byte(fmt.Sprintf("\n[storage]\nindex = %q\n", dsn))...), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig("", data)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil {
		t.Fatal("cluster mode with [[peers]] in the file validated")
	}
	out, errs, code := runCLI(t, "peer", "import", "--data", data)
	if code != 0 || !strings.Contains(out, "1 peers, 1 users, 1 tokens") {
		t.Fatalf("import: %d %s %s", code, out, errs)
	}
	if c, err = loadConfig("", data); err != nil || c.Validate() != nil || len(c.Peers)+len(c.Users) != 0 {
		t.Fatalf("after import the file still has peers or users: %v", err)
	}
	for _, l := range [][]string{{"peer", "list"}, {"user", "list"}, {"token", "list"}} {
		out, _, _ := runCLI(t, append(l, "--data", data)...)
		if !strings.Contains(out, "MOD") && !strings.Contains(out, "ana") {
			t.Fatalf("%v after import: %s", l, out)
		}
	}
	// Again: nothing new, no error. A different MOD in the file: refused.
	if out, errs, code := runCLI(t, "peer", "import", "--data", data); code != 0 || !strings.Contains(out, "0 peers, 0 users") {
		t.Fatalf("second import: %s %s", out, errs)
	}
	b, _ = os.ReadFile(file)
	if err := os.WriteFile(file, append(b, []byte("\n[[peers]]\naet = \"MOD\"\nhost = \"127.0.0.2\"\nallow = [\"echo\"]\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := runCLI(t, "peer", "import", "--data", data); code == 0 || !strings.Contains(errs, "registered differently") {
		t.Fatalf("conflicting import: %d %s", code, errs)
	}
}

// TestClusterSharedIndexOutage: while PostgreSQL is down a node keeps the
// tokens it last read (a bearer token still works) and answers a request
// with a session cookie 503, never as signed out; once it is back, the
// node sees changes again (its listening connection reconnects, the poll
// covers the gap): a token revoked then is refused within seconds.
func TestClusterSharedIndexOutage(t *testing.T) {
	pg := harness.NewPostgres(t)
	dsn := pg.NewDatabase(t)
	a := clusterNode(t, "node-a", clusterIndex(t, dsn, "a"))
	cli := filepath.Join(t.TempDir(), "cli")
	if err := os.MkdirAll(cli, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cli, config.ConfigFileName), []byte(fmt.Sprintf("[storage]\nindex = %q\n", dsn)), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, errs, code := runCLIInput(t, stdin, append(args, "--data", cli)...)
		if code != 0 {
			t.Fatalf("ward %s: exit %d: %s", strings.Join(args, " "), code, errs)
		}
		return out
	}
	run("a long passcode\n", "user", "add", "ana", "--role", "viewer")
	tok := strings.TrimSpace(run("", "token", "issue", "ana"))
	// GET /session authenticates without reading the archive's index
	// (which, on PostgreSQL, is down too).
	status := func(bearer string, cookie *http.Cookie) int {
		rq, _ := http.NewRequest("GET", "http://"+a.WebAddr().String()+"/session", nil)
		if bearer != "" {
			rq.Header.Set("Authorization", "Bearer "+bearer)
		}
		if cookie != nil {
			rq.AddCookie(cookie)
		}
		rs, err := http.DefaultClient.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		rs.Body.Close()
		return rs.StatusCode
	}
	eventually(t, "the token is accepted", func() bool { return status(tok, nil) == 200 })
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := status(tok, nil); got != 200 {
		t.Fatalf("bearer token while the shared index is down: %d", got)
	}
	if got := status("", &http.Cookie{Name: "ward-session", Value: "some-session"}); got != 503 {
		t.Fatalf("session cookie while the shared index is down: %d, want 503", got)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	var id string
	eventually(t, "the shared index answers again", func() bool {
		out, _, code := runCLI(t, "token", "list", "--data", cli)
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[1] == "ana" {
				id = f[0]
			}
		}
		return code == 0 && id != ""
	})
	run("", "token", "revoke", id)
	eventually(t, "the node refuses the token revoked after the outage", func() bool { return status(tok, nil) == 401 })
}

// TestClusterRefusesFilePeers: a node whose ward.toml has [[peers]] while
// its index is a cluster's does not start, and says where peers live.
func TestClusterRefusesFilePeers(t *testing.T) {
	dsn := harness.StartPostgres(t).NewDatabase(t)
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf("[dicom]\nlisten = \"127.0.0.1:0\"\n[web]\nlisten = \"off\"\n[storage]\nindex = %q\n\n[[peers]]\naet = \"MOD\"\nhost = \"127.0.0.1\"\nallow = [\"echo\"]\n", clusterIndex(t, dsn, "x"))
	if err := os.WriteFile(filepath.Join(data, config.ConfigFileName), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig("", data)
	if err != nil {
		t.Fatal(err)
	}
	s := &server.Server{Config: c}
	err = s.Open(context.Background())
	if err == nil {
		t.Fatal("a cluster node started with [[peers]] in its file")
	}
	if !strings.Contains(err.Error(), "shared index") || !strings.Contains(err.Error(), "ward peer import") {
		t.Fatalf("refusal: %v", err)
	}
}

// syncBuf is a strings.Builder safe for a writer and a reader at once.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestClusterFirstRunSetup: every node of a new cluster prints a set-up
// link; the first one used creates the administrator in the shared index
// (it can then sign in on every node), and another node's link is refused
// however soon it is used.
func TestClusterFirstRunSetup(t *testing.T) {
	dsn := harness.StartPostgres(t).NewDatabase(t)
	outA, outB := &syncBuf{}, &syncBuf{}
	a := clusterNodeSetup(t, "node-a", clusterIndex(t, dsn, "a"), outA)
	b := clusterNodeSetup(t, "node-b", clusterIndex(t, dsn, "b"), outB)
	token := func(out *syncBuf) string {
		var tok string
		eventually(t, "a set-up link", func() bool {
			m := regexp.MustCompile(`/setup\?token=(\S+)`).FindStringSubmatch(out.String())
			if m != nil {
				tok = m[1]
			}
			return m != nil
		})
		return tok
	}
	ta, tb := token(outA), token(outB)
	pass := "correct horse battery"
	post := func(s *server.Server, tok, user string) int {
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		rs, err := c.PostForm("http://"+s.WebAddr().String()+"/setup", url.Values{"token": {tok}, "user": {user}, "passcode": {pass}, "again": {pass}})
		if err != nil {
			t.Fatal(err)
		}
		rs.Body.Close()
		return rs.StatusCode
	}
	if code := post(a, ta, "root"); code != 303 {
		t.Fatalf("set-up on node A: %d", code)
	}
	if code := post(b, tb, "other"); code == 303 {
		t.Fatal("node B's set-up link made a second administrator")
	}
	cli := filepath.Join(t.TempDir(), "cli")
	if err := os.MkdirAll(cli, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cli, config.ConfigFileName), []byte(fmt.Sprintf("[storage]\nindex = %q\n", dsn)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, _ := runCLI(t, "user", "list", "--data", cli)
	if !strings.Contains(out, "root") || strings.Contains(out, "other") {
		t.Fatalf("shared users after set-up: %s", out)
	}
	// The administrator signs in through node B.
	eventually(t, "node B knows the administrator", func() bool {
		rq, _ := http.NewRequest("GET", "http://"+b.WebAddr().String()+"/signin", nil)
		rs, err := http.DefaultClient.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(rs.Body)
		rs.Body.Close()
		m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(string(page))
		if m == nil {
			return false
		}
		form := url.Values{"user": {"root"}, "passcode": {pass}, "csrf": {m[1]}, "next": {"/"}}
		rq, _ = http.NewRequest("POST", "http://"+b.WebAddr().String()+"/signin", strings.NewReader(form.Encode()))
		rq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for _, ck := range rs.Cookies() {
			rq.AddCookie(ck)
		}
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		rs, err = c.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		rs.Body.Close()
		return rs.StatusCode == 303
	})
}

// TestClusterListShowsDeidentify: ward peer list and ward user list show
// the de-identification profiles of the registrations kept in a
// cluster's shared index as they do those of the file.
func TestClusterListShowsDeidentify(t *testing.T) {
	dsn := harness.StartPostgres(t).NewDatabase(t)
	cli := filepath.Join(t.TempDir(), "cli")
	if err := os.MkdirAll(cli, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("[storage]\nindex = %q\n[deidentify]\nsecret_file = \"/nonexistent/project.secret\"\n", dsn+"&application_name=ward-cli")
	if err := os.WriteFile(filepath.Join(cli, config.ConfigFileName), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	checkListsDeidentify(t, func(stdin string, args ...string) (string, string, int) {
		out, errs, code := runCLIInput(t, stdin, append(args, "--data", cli)...)
		if code == 0 && len(args) > 1 && args[1] == "add" && !strings.Contains(out, "the cluster's shared index") {
			t.Fatalf("ward %v did not write to the shared index: %s", args, out)
		}
		return out, errs, code
	})
}

// TestClusterDeidentifyFollowsSharedIndex: a de-identification profile
// given to a peer in a cluster's shared index (ward peer add from a
// machine where no node runs) takes effect on a running node within
// seconds, through the shared index's notification, and so does its
// removal: DCMTK getscu as the peer gets the object de-identified (no
// patient name or ID in its bytes), then as stored again. The node's
// secret is its own file's, read again by the same reload (regression:
// it was read at start only, and the peer was refused until a restart).
func TestClusterDeidentifyFollowsSharedIndex(t *testing.T) {
	testci.RequireTool(t, "storescu", "getscu")
	harness.RequireDir(t, harness.PydicomTestFiles)
	dsn := harness.StartPostgres(t).NewDatabase(t)
	secret := filepath.Join(t.TempDir(), "project.secret")
	if _, errs, code := runCLI(t, "deid", "secret", secret); code != 0 {
		t.Fatal(errs)
	}
	node := clusterNode(t, "node-a", clusterIndex(t, dsn, "a"))
	cli := filepath.Join(t.TempDir(), "cli")
	if err := os.MkdirAll(cli, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("[storage]\nindex = %q\n[deidentify]\nsecret_file = %q\n", dsn+"&application_name=ward-cli", secret)
	if err := os.WriteFile(filepath.Join(cli, config.ConfigFileName), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		if out, errs, code := runCLI(t, append(args, "--data", cli)...); code != 0 {
			t.Fatalf("ward %s: %d %s %s", strings.Join(args, " "), code, out, errs)
		}
	}
	_, port, _ := strings.Cut(node.Addr().String(), ":")
	run("peer", "add", "MOD", "--host", "127.0.0.1", "--allow", "echo,store")
	research := []string{"peer", "add", "RESEARCH", "--host", "127.0.0.1", "--allow", "echo,get"}
	run(research...)
	ct := filepath.Join(harness.PydicomTestFiles, "CT_small.dcm")
	eventually(t, "the node admits MOD", func() bool {
		_, ok := harness.RunDCMTK(t, "storescu", "-aet", "MOD", "-aec", "WARD", "127.0.0.1", port, ct)
		return ok
	})
	// identified gets the study as RESEARCH: whether the object came
	// with the patient's name and ID (false when none came).
	identified := func() (got, identity bool) {
		dir := t.TempDir()
		harness.RunDCMTK(t, "getscu", "-P", "-aet", "RESEARCH", "-aec", "WARD", "-od", dir, "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=1CT1", "127.0.0.1", port)
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		if len(files) != 1 {
			return false, false
		}
		b, _ := os.ReadFile(files[0])
		return true, strings.Contains(string(b), "CompressedSamples") || strings.Contains(string(b), "1CT1")
	}
	eventually(t, "RESEARCH gets the object as stored", func() bool { got, id := identified(); return got && id })
	// The node's own file gets the secret (no signal: the shared index's
	// notification reloads it), the shared index the profile.
	f, err := os.OpenFile(filepath.Join(node.Config.DataDir, config.ConfigFileName), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "[deidentify]\nsecret_file = %q\n", secret)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	run(append(research, "--deidentify", "basic")...)
	eventually(t, "RESEARCH gets the object de-identified", func() bool { got, id := identified(); return got && !id })
	run(research...)
	eventually(t, "RESEARCH gets the object as stored again", func() bool { got, id := identified(); return got && id })
}

// TestClusterSharesLockouts: guesses of a user's passcode spread over two
// nodes behind a load balancer add up as on one node: three wrong
// passcodes through node A and two through node B lock the account (and
// the source) out on both, so that the right passcode is refused on
// either.
func TestClusterSharesLockouts(t *testing.T) {
	dsn := harness.StartPostgres(t).NewDatabase(t)
	// The user first, so that both nodes know it from their start (a
	// sign-in of a user a node has not heard of yet is a refusal too).
	cli := filepath.Join(t.TempDir(), "cli")
	if err := os.MkdirAll(cli, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cli, config.ConfigFileName), []byte(fmt.Sprintf("[storage]\nindex = %q\n", dsn+"&application_name=ward-cli")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := runCLIInput(t, "a long passcode\n", "user", "add", "ana", "--role", "viewer", "--data", cli); code != 0 {
		t.Fatalf("ward user add: exit %d: %s", code, errs)
	}
	a := clusterNodeConf(t, "node-a", clusterIndex(t, dsn, "a"), "lockout_after = 5\n", nil)
	b := clusterNodeConf(t, "node-b", clusterIndex(t, dsn, "b"), "lockout_after = 5\n", nil)
	signIn := func(s *server.Server, passcode string) int {
		t.Helper()
		jar, _ := cookiejar.New(nil)
		hc := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		base := "http://" + s.WebAddr().String()
		rs, err := hc.Get(base + "/signin?next=%2F")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(rs.Body)
		rs.Body.Close()
		m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
		if rs.StatusCode != 200 || m == nil {
			t.Fatalf("sign-in page: %d", rs.StatusCode)
		}
		form := url.Values{"user": {"ana"}, "passcode": {passcode}, "csrf": {string(m[1])}, "next": {"/"}}
		rs, err = hc.PostForm(base+"/signin", form)
		if err != nil {
			t.Fatal(err)
		}
		rs.Body.Close()
		return rs.StatusCode
	}
	for i, s := range []*server.Server{a, b} {
		if code := signIn(s, "a long passcode"); code != http.StatusSeeOther {
			t.Fatalf("node %d: the right passcode: %d", i, code)
		}
	}
	for _, s := range []*server.Server{a, a, a, b, b} {
		if code := signIn(s, "a wrong guess"); code != http.StatusUnauthorized {
			t.Fatalf("a wrong passcode: %d", code)
		}
	}
	time.Sleep(time.Second) // the events travel through PostgreSQL in milliseconds
	for i, s := range []*server.Server{a, b} {
		if code := signIn(s, "a long passcode"); code != http.StatusTooManyRequests {
			t.Errorf("node %d after 3 + 2 wrong passcodes on two nodes: the right one got %d, want 429 (locked out)", i, code)
		}
	}
}
