package identity

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/policy"
)

// FuzzVerify feeds arbitrary identity fields to Verify: it must never
// panic, accept only the configured passcode or a validly signed token,
// and give error texts that do not depend on the secondary field (a
// passcode). Seeds
// are in testdata/fuzz/FuzzVerify.
func FuzzVerify(f *testing.F) {
	clk := newClock()
	rs := newRSA(f, "fuzz")
	dir := f.TempDir()
	c := testConfig(writeJWKS(f, dir, rs))
	c.Users = []User{{Name: "alice", Hash: cheapHash(f, "correct passcode")}}
	v, err := newVerifier(c, nil, options{now: clk.now})
	if err != nil {
		f.Fatal(err)
	}
	valid := rs.sign(f, claimsAt(clk.now()))
	f.Add(byte(2), true, []byte("alice"), []byte("correct passcode"))
	f.Add(byte(5), true, []byte(valid), []byte(nil))
	f.Add(byte(5), false, []byte(valid[:len(valid)-3]), []byte(nil))
	// Validly signed, and refused all the same: a critical header
	// parameter Ward does not understand, dates as strings.
	f.Add(byte(5), true, []byte(rs.signWith(f, claimsAt(clk.now()), map[string]any{"crit": []string{"urn:example:ext"}, "urn:example:ext": true})), []byte(nil))
	f.Add(byte(5), true, []byte(rs.signWith(f, withClaim(f, claimsAt(clk.now()), "exp", fmt.Sprint(clk.now().Add(time.Hour).Unix())), nil)), []byte(nil))
	f.Add(byte(5), true, []byte(rs.signWith(f, withClaim(f, claimsAt(clk.now()), "nbf", fmt.Sprint(clk.now().Unix())), nil)), []byte(nil))
	f.Fuzz(func(t *testing.T, typ byte, pos bool, primary, secondary []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		id := &policy.Credential{Type: policy.CredentialType(typ), PositiveResponse: pos, Primary: primary, Secondary: secondary}
		r, err := v.Verify(ctx, id)
		if err == nil {
			switch {
			case policy.CredentialType(typ) == policy.UsernamePasscode && string(primary) == "alice" && string(secondary) == "correct passcode":
			case policy.CredentialType(typ) == policy.JWT && r.User == "dr.house" && !hasCrit(primary):
			default:
				t.Fatalf("accepted type %d %q %q: %+v", typ, primary, secondary, r)
			}
			if pos != (r.Response != nil) {
				t.Fatalf("positive response %v, response %v", pos, r.Response)
			}
			return
		}
		if r.Response != nil {
			t.Fatalf("a refused identity has a response: %v", err)
		}
		// The error text does not depend on the secondary field (the
		// passcode).
		other := *id
		other.Secondary = []byte("x")
		if _, err2 := v.Verify(ctx, &other); err2 == nil || err2.Error() != err.Error() {
			t.Fatalf("error text depends on the passcode: %v / %v", err, err2)
		}
		if !errors.Is(err, ErrBadCredentials) && !errors.Is(err, ErrBadToken) && !errors.Is(err, ErrUnsupportedType) &&
			!errors.Is(err, ErrPasscodeRequired) && !errors.Is(err, ErrBusy) {
			t.Fatalf("error without a sentinel: %v", err)
		}
	})
}

// hasCrit reports whether a token's header has a crit parameter (RFC 7515
// 4.1.11: Ward understands no extension, so such a token must never pass).
func hasCrit(tok []byte) bool {
	head, _, _ := strings.Cut(strings.TrimSpace(string(tok)), ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return false
	}
	var h map[string]json.RawMessage
	if json.Unmarshal(b, &h) != nil {
		return false
	}
	_, ok := h["crit"]
	return ok
}
