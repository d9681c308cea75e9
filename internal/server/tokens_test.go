package server

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/policy"
	"github.com/ward-pacs/ward/policy/identity"
	"github.com/ward-pacs/ward/policy/tokens"
)

// TestTokenRevokedAtOnce: a token written to the token file works in a
// running Ward after a reload, and a revocation (or a role taken away)
// stops it at the next reload, which the admin socket asks for.
func TestTokenRevokedAtOnce(t *testing.T) {
	hash, err := identity.HashPasscode("a long passcode")
	if err != nil {
		t.Fatal(err)
	}
	users := []config.User{{Name: "ana", Hash: hash, Roles: []string{"uploader"}}}
	var s *Server
	s, _ = testServer(t, func(c *config.Config) { c.Users = users }, nil)
	s.Load = func() (*config.Config, error) {
		c := *s.Config
		c.Users = users
		return &c, nil
	}
	path := config.TokenFile(s.Config.DataDir)
	var tok string
	var rec tokens.Record
	if err := config.EditTokens(path, func(set *tokens.Set) error {
		tok, rec, err = set.Issue("ana", tokens.Write, time.Hour, time.Now())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokenVerifier().Verify(tok); !errors.Is(err, tokens.ErrUnknown) {
		t.Fatalf("before the reload: %v", err)
	}
	r, err := s.reloadFromAdmin("test")
	if err != nil || len(r.Tokens) != 1 || r.Tokens[0] != rec.ID {
		t.Fatalf("reload: %+v %v", r, err)
	}
	p, err := s.TokenVerifier().Verify(tok)
	if err != nil || !p.Allows(policy.Store) || p.IsAdmin() {
		t.Fatalf("after the reload: %+v %v", p, err)
	}
	if err := config.EditTokens(path, func(set *tokens.Set) error { _, err := set.Revoke(rec.ID, time.Now()); return err }); err != nil {
		t.Fatal(err)
	}
	if r, err := s.reloadFromAdmin("test"); err != nil || len(r.Tokens) != 0 {
		t.Fatalf("reload: %+v %v", r, err)
	}
	if _, err := s.TokenVerifier().Verify(tok); !errors.Is(err, tokens.ErrRevoked) {
		t.Fatalf("after the revocation: %v", err)
	}
}

func TestTokenChange(t *testing.T) {
	old := &tokens.Set{}
	old.Issue("ana", tokens.Read, 0, time.Now())
	cur := &tokens.Set{Tokens: append([]tokens.Record(nil), old.Tokens...)}
	_, r2, _ := cur.Issue("bob", tokens.Write, 0, time.Now())
	cur.Revoke(old.Tokens[0].ID, time.Now())
	got := tokenChange(old, cur)
	if !strings.Contains(got, "tokens issued: "+r2.ID+" (user bob, write)") || !strings.Contains(got, "tokens revoked: "+old.Tokens[0].ID+" (user ana, read)") {
		t.Fatalf("tokenChange = %q", got)
	}
	if tokenChange(cur, cur) != "" {
		t.Fatal("a change where there is none")
	}
}
