package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/internal/config"
)

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb}
	code := e.main(args)
	return out.String(), errb.String(), code
}

func TestPeerAddListRemoveRoundTrip(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	// A port alone does not make a C-MOVE destination, and add says so.
	if _, errs, code := runCLI(t, "peer", "add", "BENCHSINK", "--host", "127.0.0.1", "--port", "41120", "--data", data); code != 0 || !strings.Contains(errs, "no move-destination permission") {
		t.Fatalf("add: %d %s", code, errs)
	}
	if _, errs, code := runCLI(t, "peer", "add", "BENCHSINK", "--host", "127.0.0.1", "--port", "41120", "--allow", "move-destination", "--data", data); code != 0 || errs != "" {
		t.Fatalf("add: %d %s", code, errs)
	}
	if _, errs, code := runCLI(t, "peer", "add", "VIEWER", "--allow", "find,get", "--data", data); code != 0 {
		t.Fatalf("add: %d %s", code, errs)
	}
	// Re-adding updates.
	if out, errs, code := runCLI(t, "peer", "add", "VIEWER", "--allow", "find,move", "--host", "localhost", "--port", "104", "--data", data); code != 0 || !strings.Contains(out, "updated") {
		t.Fatalf("re-add: %d %s %s", code, out, errs)
	}
	out, _, code := runCLI(t, "peer", "list", "--data", data)
	if code != 0 || !strings.Contains(out, "BENCHSINK  127.0.0.1  41120") || !strings.Contains(out, "find,move") {
		t.Fatalf("list:\n%s", out)
	}
	path := filepath.Join(data, config.ConfigFileName)
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v %v", st.Mode(), err)
	}
	c, err := config.Load(path, false)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := c.Peer("BENCHSINK")
	if addr, err := p.Destination(); !ok || addr != "127.0.0.1:41120" || err != nil || len(c.Peers) != 2 {
		t.Fatalf("peers %+v: destination %q %v", c.Peers, addr, err)
	}
	if v, _ := c.Peer("VIEWER"); v.Addr() == "" {
		t.Fatalf("VIEWER %+v", v)
	} else if _, err := v.Destination(); err == nil {
		t.Fatal("VIEWER, without move-destination, is a C-MOVE destination")
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, _, code := runCLI(t, "peer", "remove", "VIEWER", "--data", data); code != 0 {
		t.Fatal("remove failed")
	}
	if _, errs, code := runCLI(t, "peer", "remove", "VIEWER", "--data", data); code == 0 || !strings.Contains(errs, "no peer") {
		t.Fatalf("removing a missing peer: %d %s", code, errs)
	}
	for _, bad := range [][]string{
		{"peer", "add", "X", "--allow", "delete", "--data", data},
		{"peer", "add", "WAY-TOO-LONG-AE-TITLE", "--data", data},
		{"peer", "add", "X", "--port", "104", "--data", data},
		{"peer", "add", "X", "--host", "h", "--network", "10.0.0.0/33", "--data", data},
		{"peer", "add", "X", "--cert-fingerprint", "abc", "--data", data},
		{"peer", "add", "X", "--allow", "echo,fetch", "--host", "h", "--data", data},
		{"peer", "add", "X", "--port", "70000", "--host", "h", "--data", data},
	} {
		if _, _, code := runCLI(t, bad...); code == 0 {
			t.Errorf("%v accepted", bad)
		}
	}
	c, _ = config.Load(path, false)
	if len(c.Peers) != 1 {
		t.Fatalf("peers after refusals: %+v", c.Peers)
	}
}

func TestPeerEditPreservesConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ward.toml")
	orig := `# Ward at the clinic
aet = "CLINIC"   # our title

[dicom]
listen = "127.0.0.1:4242"
max_associations = 8 # small box

[[peers]]
aet = "OLD"
host = "10.0.0.1"
port = 104

[storage]
on_duplicate = "keep"

[log]
level = "debug"
`
	if err := os.WriteFile(path, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := runCLI(t, "peer", "add", "NEW", "--host", "127.0.0.1", "--port", "11113", "--config", path); code != 0 {
		t.Fatalf("add: %s", errs)
	}
	b, _ := os.ReadFile(path)
	s := string(b)
	for _, keep := range []string{"# Ward at the clinic", `aet = "CLINIC"   # our title`, "max_associations = 8 # small box", `on_duplicate = "keep"`, `level = "debug"`, `listen = "127.0.0.1:4242"`} {
		if !strings.Contains(s, keep) {
			t.Errorf("lost %q:\n%s", keep, s)
		}
	}
	c, err := config.Load(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.AETitle != "CLINIC" || c.DICOM.MaxAssociations != 8 || c.Storage.OnDuplicate != "keep" || c.Log.Level != "debug" || len(c.Peers) != 2 {
		t.Fatalf("config changed: %+v", c)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	if _, _, code := runCLI(t, "peer", "remove", "OLD", "--config", path); code != 0 {
		t.Fatal("remove")
	}
	c, _ = config.Load(path, false)
	if len(c.Peers) != 1 || c.Peers[0].AETitle != "NEW" || c.Storage.OnDuplicate != "keep" {
		t.Fatalf("after remove: %+v", c)
	}
	// Peers kept as an inline array are rewritten from the decoded file.
	inline := "aet = \"X\"\npeers = [{aet = \"A\"}]\n[log]\nlevel = \"warn\"\n"
	if err := os.WriteFile(path, []byte(inline), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := runCLI(t, "peer", "add", "B", "--config", path); code != 0 {
		t.Fatalf("inline: %s", errs)
	}
	c, err = config.Load(path, false)
	if err != nil || len(c.Peers) != 2 || c.Log.Level != "warn" || c.AETitle != "X" {
		t.Fatalf("inline: %v %+v", err, c)
	}
	// A broken file is not touched.
	if err := os.WriteFile(path, []byte("aet = \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, code := runCLI(t, "peer", "add", "C", "--config", path); code == 0 {
		t.Fatal("edited a broken file")
	}
	if b, _ := os.ReadFile(path); string(b) != "aet = \n" {
		t.Fatal("broken file rewritten")
	}
}

// TestListShowsDeidentify: ward peer list and ward user list show each
// registration's de-identification profile, "-" for none, so that an
// operator sees who receives de-identified data without reading the
// file (regression: the profile was not shown).
func TestListShowsDeidentify(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, config.ConfigFileName), []byte("[deidentify]\nsecret_file = \"/nonexistent/project.secret\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkListsDeidentify(t, func(stdin string, args ...string) (string, string, int) {
		return runCLIInput(t, stdin, append(args, "--data", data)...)
	})
}

// checkListsDeidentify registers a peer and a user with a profile and
// one of each without, through run, and checks both lists.
func checkListsDeidentify(t *testing.T, run func(stdin string, args ...string) (string, string, int)) {
	t.Helper()
	for _, a := range [][]string{
		{"peer", "add", "RESEARCH", "--host", "127.0.0.1", "--allow", "get,move", "--deidentify", "basic,modified-dates"},
		{"peer", "add", "CLINIC", "--host", "127.0.0.1", "--allow", "get,find"},
	} {
		if out, errs, code := run("", a...); code != 0 {
			t.Fatalf("%v: %d %s %s", a, code, out, errs)
		}
	}
	for _, a := range [][]string{
		{"user", "add", "researcher", "--role", "viewer", "--deidentify", "basic"},
		{"user", "add", "clinician", "--role", "viewer"},
	} {
		if out, errs, code := run("a long passcode\n", a...); code != 0 {
			t.Fatalf("%v: %d %s %s", a, code, out, errs)
		}
	}
	row := func(out, first string) []string {
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == first {
				return f
			}
		}
		t.Fatalf("no row %s in:\n%s", first, out)
		return nil
	}
	out, errs, code := run("", "peer", "list")
	if code != 0 {
		t.Fatalf("peer list: %d %s", code, errs)
	}
	if h := row(out, "AET"); h[len(h)-1] != "DEIDENTIFY" {
		t.Fatalf("peer list header: %v", h)
	}
	if r := row(out, "RESEARCH"); r[len(r)-1] != "basic,modified-dates" {
		t.Errorf("peer list, RESEARCH: %v", r)
	}
	if r := row(out, "CLINIC"); r[len(r)-1] != "-" {
		t.Errorf("peer list, CLINIC: %v", r)
	}
	out, errs, code = run("", "user", "list")
	if code != 0 {
		t.Fatalf("user list: %d %s", code, errs)
	}
	if h := row(out, "NAME"); h[len(h)-1] != "DEIDENTIFY" {
		t.Fatalf("user list header: %v", h)
	}
	if r := row(out, "researcher"); r[len(r)-1] != "basic" {
		t.Errorf("user list, researcher: %v", r)
	}
	if r := row(out, "clinician"); r[len(r)-1] != "-" {
		t.Errorf("user list, clinician: %v", r)
	}
}
