package tokens

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/policy"
)

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func rolesOf(m map[string][]policy.Role) func(string) []policy.Role {
	return func(u string) []policy.Role { return m[u] }
}

func TestVerify(t *testing.T) {
	s := &Set{}
	valid, _, _ := s.Issue("ana", Read, 0, t0)
	short, _, _ := s.Issue("ana", Write, time.Hour, t0)
	revoked, rr, _ := s.Issue("ana", Write, 0, t0)
	if _, err := s.Revoke(rr.ID, t0); err != nil {
		t.Fatal(err)
	}
	noRole, _, _ := s.Issue("bob", Write, 0, t0)
	gone, _, _ := s.Issue("carl", Read, 0, t0)
	// A round trip through the file format keeps everything.
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), valid[len(prefix)+idLen+1:]) {
		t.Fatal("the file holds a secret")
	}
	s2, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	now := t0.Add(30 * time.Minute)
	v := NewVerifier(s2, rolesOf(map[string][]policy.Role{"ana": {policy.Viewer}, "bob": nil}), func() time.Time { return now })
	wrong := valid[:len(valid)-1] + string("AB"[strings.IndexByte("AB", valid[len(valid)-1])+1&1])
	for _, tc := range []struct {
		name, tok string
		want      error
	}{
		{"valid", valid, nil},
		{"wrong secret", wrong, ErrUnknown},
		{"empty", "", ErrUnknown},
		{"garbage", strings.Repeat("x", Len), ErrUnknown},
		{"unknown id", prefix + "0000000000000000" + valid[len(prefix)+idLen:], ErrUnknown},
		{"revoked", revoked, ErrRevoked},
		{"no role", noRole, ErrNoRole},
		{"user gone", gone, ErrNoRole},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := v.Verify(tc.tok)
			if !errors.Is(err, tc.want) || (err == nil) != (p != nil) {
				t.Fatalf("Verify = %v, %v; want %v", p, err, tc.want)
			}
			if p != nil && (p.User != "ana" || p.Scope != Read) {
				t.Fatalf("principal %+v", p)
			}
		})
	}
	if _, err := v.Verify(short); err != nil {
		t.Fatalf("unexpired: %v", err)
	}
	now = t0.Add(time.Hour)
	if _, err := v.Verify(short); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
}

// TestScopeWithinRoles: a token never grants more than its user's roles,
// and a write token also reads.
func TestScopeWithinRoles(t *testing.T) {
	for _, tc := range []struct {
		roles       []policy.Role
		scope       Scope
		find, store bool
		admin       bool
	}{
		{[]policy.Role{policy.Viewer}, Read, true, false, false},
		{[]policy.Role{policy.Viewer}, Write, true, false, false},
		{[]policy.Role{policy.Uploader}, Read, true, false, false},
		{[]policy.Role{policy.Uploader}, Write, true, true, false},
		{[]policy.Role{policy.Viewer, policy.Admin}, Read, true, false, false},
		{[]policy.Role{policy.Admin}, Write, true, true, true},
	} {
		p := &Principal{User: "u", Roles: tc.roles, Scope: tc.scope}
		if p.Allows(policy.Find) != tc.find || p.Allows(policy.Get) != tc.find || p.Allows(policy.Store) != tc.store || p.IsAdmin() != tc.admin {
			t.Errorf("%v %s: find %v store %v admin %v", tc.roles, tc.scope, p.Allows(policy.Find), p.Allows(policy.Store), p.IsAdmin())
		}
	}
}

func TestIssue(t *testing.T) {
	s := &Set{}
	tok, r, err := s.Issue("ana", Write, 0, t0)
	if err != nil || len(tok) != Len || !r.Expires.IsZero() {
		t.Fatalf("%q %+v %v", tok, r, err)
	}
	tok2, _, _ := s.Issue("ana", Write, 0, t0)
	if tok == tok2 {
		t.Fatal("two equal tokens")
	}
	if _, _, err := s.Issue("ana", "all", 0, t0); err == nil {
		t.Fatal("bad scope issued")
	}
	if _, err := s.Revoke("ffffffffffffffff", t0); !errors.Is(err, ErrUnknown) {
		t.Fatalf("revoke unknown: %v", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, b := range []string{
		`{`,
		`{"tokens":[{"id":"x","user":"a","scope":"read","sha256":"00"}]}`,
		`{"tokens":[{"id":"0123456789abcdef","user":"a","scope":"all","sha256":"` + strings.Repeat("0", 64) + `"}]}`,
		`{"tokens":[{"id":"0123456789abcdef","user":"a","scope":"read","sha256":"` + strings.Repeat("0", 64) + `"},{"id":"0123456789abcdef","user":"a","scope":"read","sha256":"` + strings.Repeat("0", 64) + `"}]}`,
	} {
		if _, err := Decode([]byte(b)); !errors.Is(err, ErrBadFile) {
			t.Errorf("Decode(%s) = %v", b, err)
		}
	}
}

// FuzzVerifyToken: whatever the bearer string, Verify answers a principal
// only for the token issued, and never panics.
func FuzzVerifyToken(f *testing.F) {
	s := &Set{}
	tok, _, _ := s.Issue("ana", Write, 0, t0)
	v := NewVerifier(s, rolesOf(map[string][]policy.Role{"ana": {policy.Uploader}}), func() time.Time { return t0 })
	f.Add(tok)
	f.Add(tok[:len(tok)-1])
	f.Add("")
	f.Add("ward_")
	f.Add(prefix + strings.Repeat("0", idLen) + "_" + strings.Repeat("A", secretLen))
	f.Add("Bearer " + tok)
	f.Fuzz(func(t *testing.T, bearer string) {
		p, err := v.Verify(bearer)
		if (err == nil) != (bearer == tok) || (p != nil) != (err == nil) {
			t.Fatalf("Verify(%q) = %v, %v", bearer, p, err)
		}
	})
}
