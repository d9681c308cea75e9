package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/policy"
	"github.com/ward-pacs/ward/policy/identity"
)

func runCLIInput(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb}
	code := e.main(args)
	return out.String(), errb.String(), code
}

func verifyUser(t *testing.T, path, name, passcode string) error {
	t.Helper()
	c, err := config.Load(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	_, settings, err := c.Policy()
	if err != nil {
		t.Fatal(err)
	}
	v, err := identity.New(settings, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), &policy.Credential{Type: policy.UsernamePasscode, Primary: []byte(name), Secondary: []byte(passcode)})
	return err
}

func TestUserAddListPasswdRemove(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	path := filepath.Join(data, config.ConfigFileName)

	out, errs, code := runCLIInput(t, "first passcode\nsecond line ignored\n", "user", "add", "alice", "--data", data)
	if code != 0 || !strings.Contains(out, "user alice added") || strings.Contains(out+errs, "first passcode") {
		t.Fatalf("add: %d %q %q", code, out, errs)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v %v", st, err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "$argon2id$v=19$m=19456,t=2,p=1$") || strings.Contains(string(b), "first passcode") {
		t.Fatalf("config file:\n%s", b)
	}
	if err := verifyUser(t, path, "alice", "first passcode"); err != nil {
		t.Fatal(err)
	}

	// A generated passcode is printed once and works.
	out, errs, code = runCLIInput(t, "", "user", "add", "bob", "--generate", "--data", data)
	if code != 0 || !strings.Contains(errs, "not stored") {
		t.Fatalf("add --generate: %d %q %q", code, out, errs)
	}
	_, gen, ok := strings.Cut(out, "passcode: ")
	gen = strings.TrimSpace(gen)
	if !ok || len(gen) < 20 {
		t.Fatalf("generated passcode %q in %q", gen, out)
	}
	if err := verifyUser(t, path, "bob", gen); err != nil {
		t.Fatal(err)
	}

	out, _, code = runCLIInput(t, "", "user", "list", "--data", data)
	if code != 0 || !strings.Contains(out, "alice  argon2id m=19456,t=2,p=1") || !strings.Contains(out, "bob") || strings.Contains(out, "$argon2id") {
		t.Fatalf("list:\n%s", out)
	}

	// Adding an existing user is refused; passwd changes the passcode.
	if _, errs, code := runCLIInput(t, "another passcode\n", "user", "add", "alice", "--data", data); code == 0 || !strings.Contains(errs, "already exists") {
		t.Fatalf("re-add: %d %s", code, errs)
	}
	if out, errs, code := runCLIInput(t, "second passcode\r\n", "user", "passwd", "alice", "--data", data); code != 0 || !strings.Contains(out, "new passcode") {
		t.Fatalf("passwd: %d %s %s", code, out, errs)
	}
	if err := verifyUser(t, path, "alice", "first passcode"); !errors.Is(err, identity.ErrBadCredentials) {
		t.Fatalf("old passcode after passwd: %v", err)
	}
	if err := verifyUser(t, path, "alice", "second passcode"); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := runCLIInput(t, "whatever passcode\n", "user", "passwd", "carol", "--data", data); code == 0 || !strings.Contains(errs, "no user") {
		t.Fatalf("passwd of a missing user: %d %s", code, errs)
	}

	if _, _, code := runCLIInput(t, "", "user", "remove", "alice", "--data", data); code != 0 {
		t.Fatal("remove failed")
	}
	if _, errs, code := runCLIInput(t, "", "user", "remove", "alice", "--data", data); code == 0 || !strings.Contains(errs, "no user") {
		t.Fatalf("removing a missing user: %d %s", code, errs)
	}
	if err := verifyUser(t, path, "alice", "second passcode"); !errors.Is(err, identity.ErrBadCredentials) {
		t.Fatalf("removed user: %v", err)
	}
	c, err := config.Load(path, false)
	if err != nil || len(c.Users) != 1 || c.Users[0].Name != "bob" {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestUserAddBadInput(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"user", "add", "alice"}, "no passcode"},
		{"\n", []string{"user", "add", "alice"}, "no passcode"},
		{"short\n", []string{"user", "add", "alice"}, "shorter than 8"},
		{strings.Repeat("x", identity.MaxPasscode+1) + "\n", []string{"user", "add", "alice"}, "longer than"},
		{"good passcode\n", []string{"user", "add", " alice"}, "leading or trailing"},
		{"good passcode\n", []string{"user", "add", strings.Repeat("a", 65)}, "1 to 64"},
		{"good passcode\n", []string{"user", "add", "al\tice"}, "printable"},
		{"", []string{"user", "add"}, ""},
		{"", []string{"user", "frobnicate"}, ""},
	} {
		_, errs, code := runCLIInput(t, tc.stdin, append(tc.args, "--data", data)...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("%q %v: %d %q", tc.stdin, tc.args, code, errs)
		}
	}
	if _, err := os.Stat(filepath.Join(data, config.ConfigFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused add wrote the config: %v", err)
	}
}

func TestUserEditKeepsOtherSettings(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ward.toml")
	orig := `# Ward at the imaging centre
aet = "WARD"

[dicom]
# keep this comment
listen = "127.0.0.1:11112"

[[users]]
name = "old"
hash = "$2b$04$abcdefghijklmnopqrstuuJ1M0eHRmhXn4y0eI5Grx5n8Y5P2H3Wa"

[[peers]]
aet = "VIEWER"
allow = ["find", "get"]
`
	if err := os.WriteFile(path, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := runCLIInput(t, "a new passcode\n", "user", "add", "new", "--config", path); code != 0 {
		t.Fatalf("add: %s", errs)
	}
	b, _ := os.ReadFile(path)
	for _, keep := range []string{"# Ward at the imaging centre", "# keep this comment", `listen = "127.0.0.1:11112"`, "[[peers]]", `aet = "VIEWER"`, `name = "old"`, `name = "new"`} {
		if !strings.Contains(string(b), keep) {
			t.Fatalf("%q lost:\n%s", keep, b)
		}
	}
	c, err := config.Load(path, false)
	if err != nil || len(c.Users) != 2 || len(c.Peers) != 1 || c.Peers[0].AETitle != "VIEWER" {
		t.Fatalf("%+v %v", c, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
}
