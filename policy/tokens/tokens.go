// Package tokens is Ward's own API tokens: bearer strings issued to a
// user for scripts and DICOMweb clients, stored only as hashes, scoped
// read or write, with an expiry, revocable. Verifier is what a front end
// calls with the bearer string it received; it answers with the
// Principal, whose permissions are never more than its user's roles.
//
// A token reads "ward_" + ID + "_" + secret: ID is 16 hex digits that
// name the token in lists and revocations (it is not secret), and secret
// is 256 bits from crypto/rand, base64url without padding. Only the
// SHA-256 of the whole token is stored: the secret has the entropy that
// makes a slow hash unnecessary.
package tokens

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ward-pacs/ward/policy"
)

// File is the name, in the data directory, of the token file: JSON, mode
// 0600, replaced atomically on every change.
const File = "tokens.json"

// Scope is what a token may do within its user's roles.
type Scope string

// The scopes. A write token also reads.
const (
	Read  Scope = "read"
	Write Scope = "write"
)

// ParseScope parses a scope's name.
func ParseScope(s string) (Scope, error) {
	switch Scope(s) {
	case Read, Write:
		return Scope(s), nil
	}
	return "", fmt.Errorf("scope %q: give read or write", s)
}

// Bounds.
const (
	prefix    = "ward_"
	idLen     = 16 // hex digits
	secretLen = 43 // base64url of 32 bytes, unpadded
	// Len is the length of every token Ward issues.
	Len = len(prefix) + idLen + 1 + secretLen
	// MaxTokens bounds the records a token file may hold.
	MaxTokens = 100000
	// MaxFileSize bounds the token file, in bytes.
	MaxFileSize = 64 << 20
)

// The sentinel errors of Verify (and Revoke).
var (
	// ErrUnknown: the string is not a token Ward issued (malformed,
	// unknown ID, or a wrong secret).
	ErrUnknown = errors.New("unknown token")
	// ErrExpired: the token's time is up.
	ErrExpired = errors.New("expired token")
	// ErrRevoked: the token was revoked.
	ErrRevoked = errors.New("revoked token")
	// ErrNoRole: the token's user has no role (or no longer exists).
	ErrNoRole = errors.New("token's user has no role")
	// ErrBadFile: the token file is invalid.
	ErrBadFile = errors.New("invalid token file")
)

// Record is a token as stored: never the token, only its hash.
type Record struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Scope   Scope     `json:"scope"`
	Hash    string    `json:"sha256"`
	Created time.Time `json:"created"`
	// Expires: the zero time never expires.
	Expires time.Time `json:"expires,omitzero"`
	// Revoked: the zero time is not revoked.
	Revoked time.Time `json:"revoked,omitzero"`
}

// Set is the content of a token file.
type Set struct {
	Tokens []Record `json:"tokens"`
}

// Decode parses and checks a token file's content.
func Decode(b []byte) (*Set, error) {
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadFile, MaxFileSize)
	}
	s := &Set{}
	if len(strings.TrimSpace(string(b))) == 0 {
		return s, nil
	}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadFile, err)
	}
	if len(s.Tokens) > MaxTokens {
		return nil, fmt.Errorf("%w: more than %d tokens", ErrBadFile, MaxTokens)
	}
	seen := make(map[string]bool, len(s.Tokens))
	for i, r := range s.Tokens {
		if !validID(r.ID) || seen[r.ID] {
			return nil, fmt.Errorf("%w: token %d: bad or repeated id %q", ErrBadFile, i, r.ID)
		}
		seen[r.ID] = true
		if h, err := hex.DecodeString(r.Hash); err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("%w: token %s: bad hash", ErrBadFile, r.ID)
		}
		if _, err := ParseScope(string(r.Scope)); err != nil || r.User == "" {
			return nil, fmt.Errorf("%w: token %s: bad scope or no user", ErrBadFile, r.ID)
		}
	}
	return s, nil
}

// Encode is the file content of s.
func (s *Set) Encode() ([]byte, error) {
	if s.Tokens == nil {
		s.Tokens = []Record{}
	}
	b, err := json.MarshalIndent(s, "", "  ")
	return append(b, '\n'), err
}

// Issue adds a token for user with scope, expiring ttl from now (ttl 0:
// never), and returns the token (shown once) with its record.
func (s *Set) Issue(user string, scope Scope, ttl time.Duration, now time.Time) (string, Record, error) {
	if _, err := ParseScope(string(scope)); err != nil {
		return "", Record{}, err
	}
	if ttl < 0 {
		return "", Record{}, errors.New("a negative ttl")
	}
	if len(s.Tokens) >= MaxTokens {
		return "", Record{}, fmt.Errorf("the token file holds %d tokens already: revoke some", MaxTokens)
	}
	var id [idLen / 2]byte
	var secret [32]byte
	rand.Read(id[:]) // never fails (crypto/rand)
	rand.Read(secret[:])
	r := Record{ID: hex.EncodeToString(id[:]), User: user, Scope: scope, Created: now.UTC().Truncate(time.Second)}
	for _, o := range s.Tokens {
		if o.ID == r.ID {
			return "", Record{}, errors.New("token id collision: issue again")
		}
	}
	if ttl > 0 {
		r.Expires = now.Add(ttl).UTC().Truncate(time.Second)
	}
	tok := prefix + r.ID + "_" + base64.RawURLEncoding.EncodeToString(secret[:])
	sum := sha256.Sum256([]byte(tok))
	r.Hash = hex.EncodeToString(sum[:])
	s.Tokens = append(s.Tokens, r)
	return tok, r, nil
}

// Revoke revokes the token id (ErrUnknown when there is none; revoking a
// revoked token again keeps its first time).
func (s *Set) Revoke(id string, now time.Time) (Record, error) {
	for i := range s.Tokens {
		if s.Tokens[i].ID == id {
			if s.Tokens[i].Revoked.IsZero() {
				s.Tokens[i].Revoked = now.UTC().Truncate(time.Second)
			}
			return s.Tokens[i], nil
		}
	}
	return Record{}, fmt.Errorf("%w: no token %q", ErrUnknown, id)
}

func validID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for _, c := range []byte(id) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Principal is who a verified token speaks for, and what it may do.
type Principal struct {
	User    string
	TokenID string
	Roles   []policy.Role
	Scope   Scope
}

// Allows reports whether the token may use permission p: one of its
// user's roles grants p, and p only reads or the scope is write.
func (p *Principal) Allows(perm policy.Permission) bool {
	if p.Scope != Write && !policy.ReadPermission(perm) {
		return false
	}
	for _, r := range p.Roles {
		if slices.Contains(policy.RolePermissions(r), perm) {
			return true
		}
	}
	return false
}

// IsAdmin reports whether the token may administer: an admin user's write
// token.
func (p *Principal) IsAdmin() bool {
	return p.Scope == Write && slices.Contains(p.Roles, policy.Admin)
}

// Verifier checks bearer strings against a token set and the users'
// roles. It is immutable: a front end builds a new one whenever the
// token file or the users change (Source does).
type Verifier struct {
	byID  map[string]Record
	roles func(user string) []policy.Role
	now   func() time.Time
}

// NewVerifier verifies against s, with roles giving each user's roles
// (none: the user has no role or does not exist). now is the clock
// (nil: time.Now).
func NewVerifier(s *Set, roles func(string) []policy.Role, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	v := &Verifier{byID: make(map[string]Record, len(s.Tokens)), roles: roles, now: now}
	for _, r := range s.Tokens {
		v.byID[r.ID] = r
	}
	return v
}

// Verify returns the principal of a bearer token, or ErrUnknown,
// ErrRevoked, ErrExpired or ErrNoRole. The secret is compared in constant
// time; what it answers for a wrong secret is what it answers for an
// unknown ID.
func (v *Verifier) Verify(bearer string) (*Principal, error) {
	if len(bearer) != Len || !strings.HasPrefix(bearer, prefix) || bearer[len(prefix)+idLen] != '_' {
		return nil, ErrUnknown
	}
	id := bearer[len(prefix) : len(prefix)+idLen]
	sum := sha256.Sum256([]byte(bearer))
	r, ok := v.byID[id]
	want, err := hex.DecodeString(r.Hash)
	if !ok || err != nil || len(want) != sha256.Size {
		// Compare anyway so that timing says nothing about the ID.
		want = make([]byte, sha256.Size)
		subtle.ConstantTimeCompare(sum[:], want)
		return nil, ErrUnknown
	}
	if subtle.ConstantTimeCompare(sum[:], want) != 1 {
		return nil, ErrUnknown
	}
	if !r.Revoked.IsZero() {
		return nil, ErrRevoked
	}
	if !r.Expires.IsZero() && !v.now().Before(r.Expires) {
		return nil, ErrExpired
	}
	var roles []policy.Role
	if v.roles != nil {
		roles = v.roles(r.User)
	}
	if len(roles) == 0 {
		return nil, ErrNoRole
	}
	return &Principal{User: r.User, TokenID: r.ID, Roles: slices.Clone(roles), Scope: r.Scope}, nil
}

// IDOf is the token ID a bearer string names, "" when it is not shaped
// like a token Ward issues (the lockout counts failures per token ID, so
// that guessing one token's secret from many sources is bounded too).
func IDOf(bearer string) string {
	if len(bearer) != Len || !strings.HasPrefix(bearer, prefix) || bearer[len(prefix)+idLen] != '_' {
		return ""
	}
	id := bearer[len(prefix) : len(prefix)+idLen]
	if !validID(id) {
		return ""
	}
	return id
}
