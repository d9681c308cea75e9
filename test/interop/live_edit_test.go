package interop

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/test/harness"
)

// wardServe builds the ward command and runs `ward serve --data DIR` on a
// free loopback port, with DIR/ward.toml holding toml; it returns the
// binary, the data directory and the port. Ward is stopped (SIGINT) when
// the test ends.
func wardServe(t *testing.T, toml string) (bin, dir string, port int) {
	t.Helper()
	bin, dir, port, _ = wardServeProc(t, toml)
	return bin, dir, port
}

// wardServeProc is wardServe, also returning the process (to signal it).
func wardServeProc(t *testing.T, toml string) (bin, dir string, port int, proc *harness.Proc) {
	t.Helper()
	requireTool(t, "go")
	bin = harness.WardBinary(t)
	dir = harness.DataDir(t)
	port = freePort(t)
	conf := "[dicom]\nlisten = \"127.0.0.1:" + strconv.Itoa(port) + "\"\n[storage]\nmin_free = \"16MiB\"\n" + toml
	if err := os.WriteFile(filepath.Join(dir, "ward.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	proc = harness.Start(t, exec.Command(bin, "serve", "--data", dir, "--http-listen", "127.0.0.1:0"), true)
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			if _, err := os.Stat(filepath.Join(dir, "admin.sock")); err == nil {
				return bin, dir, port, proc
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("ward serve did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPeerAndUserChangesTakeEffectAtOnce: ward peer add|remove and ward
// user add|remove change what a running ward serve admits as soon as they
// return, without SIGHUP (issue 14, item 20), driven by DCMTK echoscu and
// storescu --user/--password; the file they write keeps the change for a
// restart, mode 0600.
func TestPeerAndUserChangesTakeEffectAtOnce(t *testing.T) {
	requireTool(t, "echoscu", "storescu", "gcc")
	requireDir(t, pydicomTestFiles)
	bin, dir, port := wardServe(t, "")
	ward := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--data", dir)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ward %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if !strings.Contains(string(out), "in effect in the running ward serve") {
			t.Fatalf("ward %s did not reach the running ward serve:\n%s", strings.Join(args, " "), out)
		}
		return string(out)
	}
	echo := func() (string, error) {
		out, err := dcmtk("echoscu", "-to", "10", "-aet", "MOD", "-aec", "WARD", "127.0.0.1", strconv.Itoa(port)).CombinedOutput()
		return string(out), err
	}
	ct := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	store := func(pass string) (string, error) {
		out, err := dcmtk("storescu", "-to", "10", "-aet", "IDMOD", "-aec", "WARD", "--user", "alice", "--password", pass,
			"127.0.0.1", strconv.Itoa(port), ct).CombinedOutput()
		return string(out), err
	}

	if out, err := echo(); err == nil || !strings.Contains(out, "Calling AE Title Not Recognized") {
		t.Fatalf("an unregistered peer got in: %v\n%s", err, out)
	}
	ward("", "peer", "add", "MOD", "--host", "127.0.0.1", "--allow", "echo")
	if out, err := echo(); err != nil {
		t.Fatalf("the peer just added was refused: %v\n%s", err, out)
	}

	ward("", "peer", "add", "IDMOD", "--network", "127.0.0.0/24", "--allow", "echo,store", "--require-identity")
	const pass = "a passcode for alice"
	if out, err := store(pass); err == nil || !strings.Contains(out, "Association Rejected") {
		t.Fatalf("an unknown user got in: %v\n%s", err, out)
	}
	ward(pass+"\n", "user", "add", "alice")
	if out, err := store(pass); err != nil {
		t.Fatalf("the user just added was refused: %v\n%s", err, out)
	}
	// A new passcode replaces the old one at once.
	ward("another passcode\n", "user", "passwd", "alice")
	if out, err := store(pass); err == nil {
		t.Fatalf("the old passcode still works:\n%s", out)
	}
	// Wrong passcodes from four more addresses (after the old one's
	// refusal: five in a row) lock alice out; a new passcode from the
	// administrator ends the lockout at once.
	for i := range 5 {
		cmd := dcmtk("storescu", "-to", "10", "-aet", "IDMOD", "-aec", "WARD", "--user", "alice", "--password", fmt.Sprint("guess", i),
			"127.0.0.1", strconv.Itoa(port), ct)
		cmd.Env = append(cmd.Env, "LD_PRELOAD="+sourceShim(t), fmt.Sprintf("WARD_TEST_SOURCE=127.0.0.%d", 50+i))
		out, _ := cmd.CombinedOutput()
		if want := map[bool]string{false: "Rejected Permanent", true: "Rejected Transient"}[i == 4]; !strings.Contains(string(out), want) {
			t.Fatalf("guess %d: want %s:\n%s", i, want, out)
		}
	}
	if out, err := store("another passcode"); err == nil || !strings.Contains(out, "Rejected Transient") {
		t.Fatalf("alice is not locked out: %v\n%s", err, out)
	}
	ward("a third passcode\n", "user", "passwd", "alice")
	if out, err := store("a third passcode"); err != nil {
		t.Fatalf("the new passcode did not end the lockout: %v\n%s", err, out)
	}
	ward("", "user", "remove", "alice")
	if out, err := store("a third passcode"); err == nil || !strings.Contains(out, "Association Rejected") {
		t.Fatalf("a removed user got in: %v\n%s", err, out)
	}
	ward("", "peer", "remove", "MOD")
	if out, err := echo(); err == nil || !strings.Contains(out, "Calling AE Title Not Recognized") {
		t.Fatalf("a removed peer got in: %v\n%s", err, out)
	}

	// The file keeps the changes, 0600.
	st, err := os.Stat(filepath.Join(dir, "ward.toml"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ward.toml: %v %v", st.Mode(), err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "ward.toml"))
	if !strings.Contains(string(b), `"IDMOD"`) || strings.Contains(string(b), `"MOD"`) || strings.Contains(string(b), "alice") {
		t.Fatalf("ward.toml:\n%s", b)
	}

	// Each change is audited (Security Alert, Security Configuration)
	// with who made it, by name only.
	recs := readAudit(t, dir, func(r []audit.Record) bool {
		return hasEvent(r, "security-alert", audit.OutcomeSuccess, "peers added: MOD") &&
			hasEvent(r, "security-alert", audit.OutcomeSuccess, "users changed: alice") &&
			hasEvent(r, "security-alert", audit.OutcomeSuccess, "peers removed: MOD")
	})
	for _, r := range recs {
		if strings.Contains(r.XML, "argon2id") {
			t.Fatalf("a passcode hash in the audit trail: %s", r.XML)
		}
	}

	// A peer ward serve would refuse is not written at all.
	cmd := exec.Command(bin, "peer", "add", "WIDE", "--network", "0.0.0.0/1,128.0.0.0/1", "--allow", "echo", "--data", dir)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not added") {
		t.Fatalf("a peer bound to every address was added: %v\n%s", err, out)
	}
}

// TestLiveTokenIssueRevoke: ward token issue and revoke against a running
// ward serve put the change in effect there at once (the server's answer
// over the admin socket lists the token, then no longer), each audited as
// a Security Alert (Security Configuration) naming the token, never its
// secret; ward token list shows no secret.
func TestLiveTokenIssueRevoke(t *testing.T) {
	bin, dir, _ := wardServe(t, "")
	run := func(stdin string, args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--data", dir)...)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("ward %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
		}
		return out.String(), errb.String()
	}
	run("a long passcode\n", "user", "add", "ana", "--role", "viewer")
	out, errs := run("", "token", "issue", "ana", "--ttl", "2h")
	tok := strings.TrimSpace(out)
	if !strings.HasPrefix(tok, "ward_") || strings.Contains(tok, "\n") || !strings.Contains(errs, "in effect in the running ward serve") {
		t.Fatalf("issue: %q %q", out, errs)
	}
	id := strings.SplitN(tok, "_", 3)[1]
	list, _ := run("", "token", "list")
	if !strings.Contains(list, id) || !strings.Contains(list, "active") || strings.Contains(list, tok) {
		t.Fatalf("list:\n%s", list)
	}
	out, errs = run("", "token", "revoke", id)
	if !strings.Contains(out, "revoked") || !strings.Contains(errs, "in effect in the running ward serve (0 tokens") {
		t.Fatalf("revoke: %q %q", out, errs)
	}
	recs := readAudit(t, dir, func(r []audit.Record) bool {
		return hasEvent(r, "security-alert", audit.OutcomeSuccess, "tokens issued: "+id) &&
			hasEvent(r, "security-alert", audit.OutcomeSuccess, "tokens revoked: "+id)
	})
	for _, r := range recs {
		if strings.Contains(r.XML, tok[len(tok)-20:]) {
			t.Fatalf("a token secret in the audit trail: %s", r.XML)
		}
	}
}
