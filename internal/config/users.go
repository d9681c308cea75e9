package config

import (
	"bytes"
	"fmt"
	"github.com/ward-pacs/ward/dicom/deid"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/ward-pacs/ward/policy"
	"github.com/ward-pacs/ward/policy/identity"
)

// Bounds of [identity] and [[users]].
const (
	// MaxUserName is the longest user name, in characters.
	MaxUserName = 64
	// DefaultClockSkew is the leeway on a token's exp, nbf and iat when
	// clock_skew is not set (or 0).
	DefaultClockSkew = 60 * time.Second
	// MaxClockSkew is the largest leeway clock_skew may give.
	MaxClockSkew = identity.MaxClockSkew
	// MaxArgon2Memory, MaxArgon2Time and MaxArgon2Threads bound the
	// parameters of a stored argon2id hash (identity's bounds).
	MaxArgon2Memory  = identity.MaxArgon2Memory
	MaxArgon2Time    = identity.MaxArgon2Time
	MaxArgon2Threads = identity.MaxArgon2Threads
)

// ErrBadUser: a [[users]] entry or the [identity] table is invalid (the
// same sentinel as identity.ErrBadUser).
var ErrBadUser = identity.ErrBadUser

// CheckUserName checks a user name: 1 to 64 printable UTF-8 characters,
// without leading or trailing spaces.
func CheckUserName(name string) error {
	n := utf8.RuneCountInString(name)
	if n == 0 || n > MaxUserName || !utf8.ValidString(name) {
		return fmt.Errorf("%w: a user name is 1 to %d UTF-8 characters", ErrBadUser, MaxUserName)
	}
	if strings.TrimSpace(name) != name {
		return fmt.Errorf("%w: user name %q has leading or trailing spaces", ErrBadUser, name)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: user name %q: only printable characters are allowed", ErrBadUser, name)
		}
	}
	return nil
}

// CheckPasscodeHash reports whether h looks like a passcode hash Ward
// verifies (identity.CheckPasscodeHash: argon2id within its bounds, or
// bcrypt). It never says what the hash is of.
func CheckPasscodeHash(h string) error { return identity.CheckPasscodeHash(h) }

// ParseRoles parses a user's roles (no repeats).
func ParseRoles(names []string) ([]policy.Role, error) {
	var roles []policy.Role
	for _, n := range names {
		r, err := policy.ParseRole(n)
		if err != nil {
			return nil, err
		}
		if slices.Contains(roles, r) {
			return nil, fmt.Errorf("role %s given twice", r)
		}
		roles = append(roles, r)
	}
	return roles, nil
}

// ClockSkewOrDefault is the leeway on token times: [identity] clock_skew,
// or DefaultClockSkew when it is 0.
func (i *Identity) ClockSkewOrDefault() time.Duration {
	if i.ClockSkew.Duration == 0 {
		return DefaultClockSkew
	}
	return i.ClockSkew.Duration
}

// ValidateUsers checks [[users]] (names, no duplicates, hashes that look
// like argon2id or bcrypt) and [identity] (a JWKS needs an issuer and an
// audience; clock_skew 0 to 5m).
func (c *Config) ValidateUsers() error {
	seen := make(map[string]bool, len(c.Users))
	for i := range c.Users {
		u := &c.Users[i]
		if err := CheckUserName(u.Name); err != nil {
			return fmt.Errorf("users[%d]: %w", i, err)
		}
		if seen[u.Name] {
			return fmt.Errorf("%w: user %q is listed twice", ErrBadUser, u.Name)
		}
		seen[u.Name] = true
		if err := CheckPasscodeHash(u.Hash); err != nil {
			return fmt.Errorf("user %q: %w", u.Name, err)
		}
		if _, err := ParseRoles(u.Roles); err != nil {
			return fmt.Errorf("user %q: %w: %w", u.Name, ErrBadUser, err)
		}
		if u.Deidentify != "" {
			if _, err := deid.ParseProfile(u.Deidentify); err != nil {
				return fmt.Errorf("user %q: deidentify: %w", u.Name, err)
			}
		}
	}
	id := &c.Identity
	if id.ClockSkew.Duration < 0 || id.ClockSkew.Duration > MaxClockSkew {
		return fmt.Errorf("%w: identity clock_skew %s: give 0 to %s", ErrBadUser, id.ClockSkew.Duration, MaxClockSkew)
	}
	if id.JWKS == "" {
		if id.JWTIssuer != "" || id.JWTAudience != "" {
			return fmt.Errorf("%w: identity jwt_issuer and jwt_audience need jwks (the keys that sign the tokens)", ErrBadUser)
		}
		return nil
	}
	if id.JWTIssuer == "" || id.JWTAudience == "" {
		return fmt.Errorf("%w: identity jwks needs jwt_issuer and jwt_audience: a token is accepted only from the configured issuer, for Ward's audience", ErrBadUser)
	}
	if strings.HasPrefix(strings.ToLower(id.JWKS), "http://") {
		return fmt.Errorf("%w: identity jwks %s: fetch keys over https:// (over plain HTTP anyone on the path can substitute their own keys)", ErrBadUser, id.JWKS)
	}
	if strings.Contains(id.JWKS, "://") && !strings.HasPrefix(strings.ToLower(id.JWKS), "https://") {
		return fmt.Errorf("%w: identity jwks %s: give a file path or an https:// URL", ErrBadUser, id.JWKS)
	}
	return nil
}

// EditUsers reads the configuration file at path (a missing file is an
// empty one), lets edit change its users, checks them, and writes the file
// back atomically with mode 0600, as EditPeers does: when the file holds
// its users as [[users]] tables, only those tables are rewritten (at the
// end of the file) and every other line, comments included, stays as it
// was.
func EditUsers(path string, edit func([]User) ([]User, error)) error {
	return editTables(path, "users", func(c *Config) *[]User { return &c.Users }, func(users []User) error {
		check := Config{Users: users}
		return check.ValidateUsers()
	}, edit)
}

// encodeTables returns v as [[key]] tables (nothing when v is empty).
func encodeTables[T any](key string, v []T) ([]byte, error) {
	if len(v) == 0 {
		return nil, nil
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(map[string][]T{key: v}); err != nil {
		return nil, fmt.Errorf("encoding %s: %w", key, err)
	}
	return b.Bytes(), nil
}

// rewriteTables drops the [[key]] tables of the file's text and appends
// enc, the new ones.
func rewriteTables(old []byte, key string, enc []byte) []byte {
	var out bytes.Buffer
	in := false
	header := "[[" + key + "]]"
	for _, line := range strings.SplitAfter(string(old), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			h := strings.ReplaceAll(strings.ReplaceAll(t, " ", ""), "\t", "")
			in = strings.HasPrefix(h, header) || strings.HasPrefix(h, "["+key+".") || strings.HasPrefix(h, "[["+key+".")
		}
		if !in {
			out.WriteString(line)
		}
	}
	text := strings.TrimRight(out.String(), "\n")
	if text != "" {
		text += "\n"
		if enc != nil {
			text += "\n"
		}
	}
	return append([]byte(text), enc...)
}

// reencodeWithout re-encodes the whole file without key and appends enc.
func reencodeWithout(old []byte, key string, enc []byte) ([]byte, error) {
	m := map[string]any{}
	if _, err := toml.Decode(string(old), &m); err != nil {
		return nil, err
	}
	delete(m, key)
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(m); err != nil {
		return nil, err
	}
	if b.Len() > 0 && enc != nil {
		b.WriteString("\n")
	}
	b.Write(enc)
	return b.Bytes(), nil
}
