package cli

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/policy"
	"github.com/ward-pacs/ward/policy/tokens"
)

// verifyToken verifies tok against the data directory's token file and
// configuration, as a running ward serve would after a reload.
func verifyToken(t *testing.T, data, tok string) (*tokens.Principal, error) {
	t.Helper()
	c, err := config.Load(filepath.Join(data, config.ConfigFileName), false)
	if err != nil {
		t.Fatal(err)
	}
	rules, _, err := c.Policy()
	if err != nil {
		t.Fatal(err)
	}
	s, err := config.LoadTokens(config.TokenFile(data))
	if err != nil {
		t.Fatal(err)
	}
	return tokens.NewVerifier(s, func(u string) []policy.Role { return rules.Roles[u] }, nil).Verify(tok)
}

func TestTokenIssueListRevokeOffline(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	if _, errs, code := runCLIInput(t, "a passcode\n", "user", "add", "ana", "--role", "viewer,uploader", "--data", data); code != 0 {
		t.Fatalf("user add: %d %s", code, errs)
	}
	if _, errs, code := runCLIInput(t, "a passcode\n", "user", "add", "dimse", "--data", data); code != 0 {
		t.Fatalf("user add without role: %d %s", code, errs)
	}
	if _, errs, code := runCLIInput(t, "a passcode\n", "user", "add", "bad", "--role", "root", "--data", data); code == 0 || !strings.Contains(errs, "viewer, uploader or admin") {
		t.Fatalf("unknown role: %d %s", code, errs)
	}
	out, _, code := runCLIInput(t, "", "user", "list", "--data", data)
	if code != 0 || !strings.Contains(out, "viewer,uploader") || !strings.Contains(out, "DIMSE identity only") {
		t.Fatalf("user list: %d %s", code, out)
	}

	if _, errs, code := runCLIInput(t, "", "token", "issue", "dimse", "--data", data); code == 0 || !strings.Contains(errs, "no role") {
		t.Fatalf("token for a user without roles: %d %s", code, errs)
	}
	if _, errs, code := runCLIInput(t, "", "token", "issue", "nobody", "--data", data); code == 0 || !strings.Contains(errs, "no user") {
		t.Fatalf("token for no user: %d %s", code, errs)
	}
	out, errs, code := runCLIInput(t, "", "token", "issue", "ana", "--scope", "write", "--ttl", "1h", "--data", data)
	tok := strings.TrimSpace(out)
	if code != 0 || len(tok) != tokens.Len || strings.Count(out, "\n") != 1 {
		t.Fatalf("issue: %d %q %s", code, out, errs)
	}
	st, err := os.Stat(config.TokenFile(data))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", st, err)
	}
	b, _ := os.ReadFile(config.TokenFile(data))
	if strings.Contains(string(b), tok) || strings.Contains(string(b), tok[len(tok)-20:]) {
		t.Fatal("the token file holds the token")
	}
	p, err := verifyToken(t, data, tok)
	if err != nil || p.User != "ana" || !p.Allows(policy.Store) || p.IsAdmin() {
		t.Fatalf("verify: %+v %v", p, err)
	}
	id := p.TokenID

	// Roles changed: the token follows them at once.
	if out, errs, code := runCLIInput(t, "", "user", "roles", "ana", "--role", "viewer", "--data", data); code != 0 || !strings.Contains(out, "roles viewer") {
		t.Fatalf("user roles: %d %s %s", code, out, errs)
	}
	if p, err := verifyToken(t, data, tok); err != nil || p.Allows(policy.Store) || !p.Allows(policy.Find) {
		t.Fatalf("after the roles changed: %+v %v", p, err)
	}
	if _, errs, code := runCLIInput(t, "", "user", "roles", "ana", "--data", data); code == 0 || !strings.Contains(errs, "--role") {
		t.Fatalf("user roles without --role: %d %s", code, errs)
	}

	out, _, code = runCLIInput(t, "", "token", "list", "--data", data)
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "active") || strings.Contains(out, tok[len(tok)-20:]) {
		t.Fatalf("list: %d %s", code, out)
	}
	if out, errs, code = runCLIInput(t, "", "token", "revoke", id, "--data", data); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %d %s %s", code, out, errs)
	}
	if _, err := verifyToken(t, data, tok); !errors.Is(err, tokens.ErrRevoked) {
		t.Fatalf("revoked token: %v", err)
	}
	out, _, _ = runCLIInput(t, "", "token", "list", "--data", data)
	if !strings.Contains(out, "revoked") {
		t.Fatalf("list after revoke: %s", out)
	}
	// Offline, the command audits the change itself.
	var recs []*audit.Record
	b, err = os.ReadFile(filepath.Join(data, "audit", audit.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Each(bytes.NewReader(b), func(r *audit.Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	var issued, revoked bool
	for _, r := range recs {
		if r.Event == "security-alert" && strings.Contains(r.XML, "tokens issued: "+id+" (user ana, write)") {
			issued = true
		}
		if r.Event == "security-alert" && strings.Contains(r.XML, "tokens revoked: "+id) {
			revoked = true
		}
		if strings.Contains(r.XML, tok[len(tok)-20:]) {
			t.Fatalf("a token secret in the audit trail: %s", r.XML)
		}
	}
	if !issued || !revoked {
		t.Fatalf("audit: issued %v, revoked %v in %d records", issued, revoked, len(recs))
	}
	if _, errs, code := runCLIInput(t, "", "token", "revoke", "0123456789abcdef", "--data", data); code == 0 || !strings.Contains(errs, "unknown token") {
		t.Fatalf("revoke unknown: %d %s", code, errs)
	}
	if _, errs, code := runCLIInput(t, "", "token", "issue", "ana", "--scope", "all", "--data", data); code == 0 || !strings.Contains(errs, "read or write") {
		t.Fatalf("bad scope: %d %s", code, errs)
	}
}
