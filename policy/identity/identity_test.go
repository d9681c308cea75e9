package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/ward-pacs/ward/policy"
)

const (
	testIssuer   = "https://idp.example.test"
	testAudience = "ward"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// cheapHash is an argon2id hash with small parameters, so the tests stay
// fast under -race.
func cheapHash(t testing.TB, passcode string) string {
	t.Helper()
	h := &argon2idHash{m: 64, t: 1, p: 1, salt: []byte("0123456789abcdef")}
	h.key = argon2IDKey(passcode, h)
	return h.encode()
}

func argon2IDKey(passcode string, h *argon2idHash) []byte {
	return argon2.IDKey([]byte(passcode), h.salt, h.t, h.m, h.p, 32)
}

type signer struct {
	kid string
	alg jwt.SigningMethod
	key crypto.Signer
}

func newRSA(t testing.TB, kid string) signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid, jwt.SigningMethodRS256, k}
}

func newEC(t testing.TB, kid string) signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid, jwt.SigningMethodES256, k}
}

func newEd(t testing.TB, kid string) signer {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid, jwt.SigningMethodEdDSA, k}
}

// jwksJSON is the public JWK Set of signers.
func jwksJSON(t testing.TB, signers ...signer) []byte {
	t.Helper()
	var set jwkset.JWKSMarshal
	for _, s := range signers {
		j, err := jwkset.NewJWKFromKey(s.key.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: s.kid, ALG: jwkset.ALG(s.alg.Alg()), USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, j.Marshal())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (s signer) sign(t testing.TB, claims jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.alg, claims)
	if s.kid != "" {
		tok.Header["kid"] = s.kid
	}
	str, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

// signWith signs claims with extra header parameters.
func (s signer) signWith(t testing.TB, claims jwt.Claims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.alg, claims)
	if s.kid != "" {
		tok.Header["kid"] = s.kid
	}
	for k, v := range header {
		tok.Header[k] = v
	}
	str, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

// withClaim is c as a map with claim name set to v (any JSON type).
func withClaim(t testing.TB, c jwt.RegisteredClaims, name string, v any) jwt.MapClaims {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	m := jwt.MapClaims{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m[name] = v
	return m
}

func claimsAt(now time.Time) jwt.RegisteredClaims {
	return jwt.RegisteredClaims{
		Issuer:    testIssuer,
		Subject:   "dr.house",
		Audience:  jwt.ClaimStrings{testAudience},
		ExpiresAt: jwt.NewNumericDate(now.Add(10 * time.Minute)),
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
	}
}

func writeJWKS(t testing.TB, dir string, signers ...signer) string {
	t.Helper()
	path := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(path, jwksJSON(t, signers...), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// testSkew is the default clock skew (internal/config's DefaultClockSkew).
const testSkew = 60 * time.Second

func testConfig(jwks string) Settings {
	c := Settings{JWKS: jwks, ClockSkew: testSkew}
	if jwks != "" {
		c.JWTIssuer, c.JWTAudience = testIssuer, testAudience
	}
	return c
}

func passcodeID(user, pass string) *policy.Credential {
	return &policy.Credential{Type: policy.UsernamePasscode, PositiveResponse: true, Primary: []byte(user), Secondary: []byte(pass)}
}

func jwtID(tok string) *policy.Credential {
	return &policy.Credential{Type: policy.JWT, PositiveResponse: true, Primary: []byte(tok)}
}

func TestPasscode(t *testing.T) {
	c := testConfig("")
	bc, err := bcrypt.GenerateFromPassword([]byte("bcrypt passcode"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	c.Users = []User{
		{Name: "alice", Hash: cheapHash(t, "correct horse battery staple")},
		{Name: "bob", Hash: string(bc)},
	}
	v, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, user, pass string
		want             error
	}{
		{"argon2id ok", "alice", "correct horse battery staple", nil},
		{"argon2id wrong", "alice", "correct horse battery stapl", ErrBadCredentials},
		{"bcrypt ok", "bob", "bcrypt passcode", nil},
		{"bcrypt wrong", "bob", "bcrypt passcodE", ErrBadCredentials},
		{"unknown user", "mallory", "correct horse battery staple", ErrBadCredentials},
		{"empty passcode", "alice", "", ErrBadCredentials},
		{"user name case matters", "Alice", "correct horse battery staple", ErrBadCredentials},
		{"overlong passcode", "alice", strings.Repeat("x", MaxPasscode+1), ErrBadCredentials},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := v.Verify(context.Background(), passcodeID(tc.user, tc.pass))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if r.Type != policy.UsernamePasscode || r.User != tc.user {
				t.Fatalf("result %+v", r)
			}
			if err != nil {
				if tc.pass != "" && strings.Contains(err.Error(), tc.pass) {
					t.Fatalf("error text holds the passcode: %v", err)
				}
				return
			}
			if r.Response == nil || len(r.Response) != 0 {
				t.Fatalf("a passcode's positive response is empty, not absent: %#v", r.Response)
			}
		})
	}
	// Without a positive response requested there is no response.
	id := passcodeID("alice", "correct horse battery staple")
	id.PositiveResponse = false
	if r, err := v.Verify(context.Background(), id); err != nil || r.Response != nil {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestUnknownUserCostsLikeAKnownOne(t *testing.T) {
	c := testConfig("")
	c.Users = []User{{Name: "alice", Hash: cheapHash(t, "pw")}}
	v, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := v.dummy.(*argon2idHash)
	a := v.users["alice"].(*argon2idHash)
	if !ok || d.m != a.m || d.t != a.t || d.p != a.p || len(d.key) != len(a.key) || string(d.salt) == string(a.salt) {
		t.Fatalf("dummy %+v, user %+v", v.dummy, a)
	}
	// With no user, the dummy costs what a new hash costs.
	v, err = New(testConfig(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := v.dummy.(*argon2idHash); d.m != Argon2Memory || d.t != Argon2Time || d.p != Argon2Threads {
		t.Fatalf("default dummy %+v", d)
	}
	if _, err := v.Verify(context.Background(), passcodeID("nobody", "pw")); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
}

func TestRefusedTypes(t *testing.T) {
	v, err := New(testConfig(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   *policy.Credential
		want error
		text string
	}{
		{nil, ErrNoIdentity, "none sent"},
		{&policy.Credential{Type: policy.Username, Primary: []byte("alice")}, ErrPasscodeRequired, "user identity: username without passcode"},
		{&policy.Credential{Type: policy.Kerberos, Primary: []byte("ticket")}, ErrUnsupportedType, "user identity: Kerberos (type 3): not supported"},
		{&policy.Credential{Type: policy.SAML, Primary: []byte("<saml/>")}, ErrUnsupportedType, "user identity: SAML (type 4): not supported"},
		{&policy.Credential{Type: 9}, ErrUnsupportedType, "type 9"},
		{jwtID("a.b.c"), ErrJWTDisabled, "no [identity] jwks"},
	} {
		_, err := v.Verify(context.Background(), tc.id)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%+v: %v, want %v (%q)", tc.id, err, tc.want, tc.text)
		}
	}
}

func TestBusyHonoursContext(t *testing.T) {
	c := testConfig("")
	c.Users = []User{{Name: "alice", Hash: cheapHash(t, "pw")}}
	v, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range MaxConcurrentHashes {
		v.sem <- struct{}{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := v.Verify(ctx, passcodeID("alice", "pw")); !errors.Is(err, ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	<-v.sem
	if _, err := v.Verify(context.Background(), passcodeID("alice", "pw")); err != nil {
		t.Fatal(err)
	}
}

func TestHashPasscode(t *testing.T) {
	h, err := HashPasscode("s3cret passcode")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") || strings.Contains(h, "s3cret") {
		t.Fatalf("hash %s", h)
	}
	if err := CheckPasscodeHash(h); err != nil {
		t.Fatal(err)
	}
	p, err := parseHash(h)
	if err != nil {
		t.Fatal(err)
	}
	a := p.(*argon2idHash)
	if len(a.salt) != Argon2SaltLen || len(a.key) != Argon2KeyLen {
		t.Fatalf("%+v", a)
	}
	if !p.verify([]byte("s3cret passcode")) || p.verify([]byte("s3cret passcodf")) {
		t.Fatal("verify")
	}
	h2, _ := HashPasscode("s3cret passcode")
	if h2 == h {
		t.Fatal("two hashes of one passcode are equal: no salt?")
	}
	for _, bad := range []string{"", strings.Repeat("x", MaxPasscode+1)} {
		if _, err := HashPasscode(bad); !errors.Is(err, ErrPasscodeLength) {
			t.Fatal(err)
		}
	}
}

func TestBadHashesRefusedAtStart(t *testing.T) {
	for _, h := range []string{
		"plaintext",
		"$argon2i$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
		"$argon2id$v=19$m=4194304,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"$2a$03$abcdefghijklmnopqrstuuJ1M0eHRmhXn4y0eI5Grx5n8Y5P2H3Wa",
	} {
		c := testConfig("")
		c.Users = []User{{Name: "u", Hash: h}}
		if _, err := New(c, nil); !errors.Is(err, ErrBadUser) {
			t.Errorf("%s: %v", h, err)
		}
	}
}

func TestJWT(t *testing.T) {
	clk := newClock()
	now := clk.now()
	rs, ec, ed := newRSA(t, "rsa1"), newEC(t, "ec1"), newEd(t, "ed1")
	other := newRSA(t, "rsa1") // same kid, different key
	stranger := newRSA(t, "rsa-unknown")
	path := writeJWKS(t, t.TempDir(), rs, ec, ed)
	v, err := newVerifier(testConfig(path), nil, options{now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(*jwt.RegisteredClaims)) jwt.RegisteredClaims {
		c := claimsAt(now)
		f(&c)
		return c
	}
	skew := testSkew
	noneTok, err := jwt.NewWithClaims(jwt.SigningMethodNone, claimsAt(now)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	// HMAC keyed with the RSA public key (the algorithm confusion attack).
	pubDER, _ := x509.MarshalPKIXPublicKey(rs.key.Public())
	hsTok := jwt.NewWithClaims(jwt.SigningMethodHS256, claimsAt(now))
	hsTok.Header["kid"] = "rsa1"
	hmacTok, err := hsTok.SignedString(pubDER)
	if err != nil {
		t.Fatal(err)
	}
	// PS256 with a key published for RS256 only.
	psTok := jwt.NewWithClaims(jwt.SigningMethodPS256, claimsAt(now))
	psTok.Header["kid"] = "rsa1"
	psStr, err := psTok.SignedString(rs.key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tok  string
		want error
	}{
		{"rsa ok", rs.sign(t, claimsAt(now)), nil},
		{"ec ok", ec.sign(t, claimsAt(now)), nil},
		{"ed25519 ok", ed.sign(t, claimsAt(now)), nil},
		{"trailing newline from a file", rs.sign(t, claimsAt(now)) + "\n", nil},
		{"audience list containing ward", rs.sign(t, mod(func(c *jwt.RegisteredClaims) { c.Audience = jwt.ClaimStrings{"pacs", testAudience} })), nil},
		{"expired", rs.sign(t, mod(func(c *jwt.RegisteredClaims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-skew - time.Second)) })), ErrTokenExpired},
		{"expired within skew", rs.sign(t, mod(func(c *jwt.RegisteredClaims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-skew + 5*time.Second)) })), nil},
		{"no exp", rs.sign(t, mod(func(c *jwt.RegisteredClaims) { c.ExpiresAt = nil })), ErrTokenExpired},
		{"not yet valid", rs.sign(t, mod(func(c *jwt.RegisteredClaims) { c.NotBefore = jwt.NewNumericDate(now.Add(skew + time.Second)) })), ErrTokenNotYetValid},
		{"nbf within skew", rs.sign(t, mod(func(c *jwt.RegisteredClaims) { c.NotBefore = jwt.NewNumericDate(now.Add(skew - 5*time.Second)) })), nil},
		{"issued in the future", rs.sign(t, mod(func(c *jwt.RegisteredClaims) { c.IssuedAt = jwt.NewNumericDate(now.Add(skew + time.Minute)) })), ErrTokenNotYetValid},
		{"wrong issuer", rs.sign(t, mod(func(c *jwt.RegisteredClaims) { c.Issuer = "https://evil.example.test" })), ErrTokenIssuer},
		{"no issuer", rs.sign(t, mod(func(c *jwt.RegisteredClaims) { c.Issuer = "" })), ErrTokenIssuer},
		{"wrong audience", rs.sign(t, mod(func(c *jwt.RegisteredClaims) { c.Audience = jwt.ClaimStrings{"orthanc"} })), ErrTokenAudience},
		{"no audience", rs.sign(t, mod(func(c *jwt.RegisteredClaims) { c.Audience = nil })), ErrTokenAudience},
		{"no subject", rs.sign(t, mod(func(c *jwt.RegisteredClaims) { c.Subject = "" })), ErrTokenClaims},
		{"bad signature (same kid, other key)", other.sign(t, claimsAt(now)), ErrTokenSignature},
		{"key not in the JWKS", stranger.sign(t, claimsAt(now)), ErrUnknownKey},
		{"no kid with several keys", signer{"", jwt.SigningMethodRS256, rs.key}.sign(t, claimsAt(now)), ErrUnknownKey},
		{"alg none", noneTok, ErrTokenSignature},
		{"HMAC with the public key", hmacTok, ErrTokenSignature},
		{"alg not the key's", psStr, ErrTokenSignature},
		{"ES256 header on an RSA key", signer{"rsa1", jwt.SigningMethodES256, ec.key}.sign(t, claimsAt(now)), ErrTokenSignature},
		{"unknown crit header parameter", rs.signWith(t, claimsAt(now), map[string]any{"crit": []string{"urn:example:ext"}, "urn:example:ext": true}), ErrTokenCritical},
		{"crit naming exp", rs.signWith(t, claimsAt(now), map[string]any{"crit": []string{"exp"}}), ErrTokenCritical},
		{"empty crit", rs.signWith(t, claimsAt(now), map[string]any{"crit": []string{}}), ErrTokenCritical},
		{"crit not a list", rs.signWith(t, claimsAt(now), map[string]any{"crit": "b64"}), ErrTokenCritical},
		{"exp as a string", rs.signWith(t, withClaim(t, claimsAt(now), "exp", fmt.Sprint(now.Add(time.Hour).Unix())), nil), ErrTokenClaims},
		{"nbf as a string", rs.signWith(t, withClaim(t, claimsAt(now), "nbf", fmt.Sprint(now.Unix())), nil), ErrTokenClaims},
		{"iat as a string", rs.signWith(t, withClaim(t, claimsAt(now), "iat", fmt.Sprint(now.Unix())), nil), ErrTokenClaims},
		{"exp null", rs.signWith(t, withClaim(t, claimsAt(now), "exp", nil), nil), ErrTokenClaims},
		{"exp a boolean", rs.signWith(t, withClaim(t, claimsAt(now), "exp", true), nil), ErrTokenClaims},
		{"exp an object", rs.signWith(t, withClaim(t, claimsAt(now), "exp", map[string]any{"n": 1}), nil), ErrTokenClaims},
		{"exp a fraction", rs.signWith(t, withClaim(t, claimsAt(now), "exp", float64(now.Add(time.Hour).Unix())+0.5), nil), nil},
		{"sub a number", rs.signWith(t, withClaim(t, claimsAt(now), "sub", 42), nil), ErrTokenClaims},
		{"iss a list", rs.signWith(t, withClaim(t, claimsAt(now), "iss", []string{testIssuer}), nil), ErrTokenClaims},
		{"aud a number", rs.signWith(t, withClaim(t, claimsAt(now), "aud", 7), nil), ErrTokenClaims},
		{"aud a list with a number", rs.signWith(t, withClaim(t, claimsAt(now), "aud", []any{testAudience, 7}), nil), ErrTokenClaims},
		{"jti a number", rs.signWith(t, withClaim(t, claimsAt(now), "jti", 7), nil), ErrTokenClaims},
		{"claims null", rs.signWith(t, jwt.MapClaims(nil), nil), ErrTokenExpired},
		{"unregistered claim of any type", rs.signWith(t, withClaim(t, claimsAt(now), "roles", []any{1, "x"}), nil), nil},
		{"garbage", "not a token", ErrTokenMalformed},
		{"empty", "", ErrTokenMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := v.Verify(context.Background(), jwtID(tc.tok))
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if r.Type != policy.JWT || r.User != "dr.house" || string(r.Response) != tc.tok {
					t.Fatalf("result %+v", r)
				}
				return
			}
			if !errors.Is(err, ErrBadToken) || !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if r.User != "" || r.Response != nil {
				t.Fatalf("result of a refused token %+v", r)
			}
			for _, part := range strings.Split(tc.tok, ".") {
				if len(part) > 8 && strings.Contains(err.Error(), part) {
					t.Fatalf("error text holds the token: %v", err)
				}
			}
		})
	}
}

func TestJWTSkewSetting(t *testing.T) {
	clk := newClock()
	rs := newRSA(t, "k")
	c := testConfig(writeJWKS(t, t.TempDir(), rs))
	c.ClockSkew = 5 * time.Second
	v, err := newVerifier(c, nil, options{now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	cl := claimsAt(clk.now())
	cl.ExpiresAt = jwt.NewNumericDate(clk.now().Add(-10 * time.Second))
	if _, err := v.Verify(context.Background(), jwtID(rs.sign(t, cl))); !errors.Is(err, ErrTokenExpired) {
		t.Fatal(err)
	}
	c.ClockSkew = 6 * time.Minute
	if _, err := New(c, nil); err == nil {
		t.Fatal("a clock skew over 5m was accepted")
	}
}

func TestJWKSFileRotation(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	k1, k2 := newRSA(t, "2026-11"), newEC(t, "2026-12")
	path := writeJWKS(t, dir, k1)
	v, err := newVerifier(testConfig(path), nil, options{now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	writeJWKS(t, dir, k1, k2)
	tok := k2.sign(t, claimsAt(clk.now()))
	// The set was read less than a minute ago: no new read.
	if _, err := v.Verify(context.Background(), jwtID(tok)); !errors.Is(err, ErrUnknownKey) {
		t.Fatal(err)
	}
	clk.advance(JWKSMinInterval + time.Second)
	tok = k2.sign(t, claimsAt(clk.now()))
	if r, err := v.Verify(context.Background(), jwtID(tok)); err != nil || r.User != "dr.house" {
		t.Fatal(r, err)
	}
}

func TestJWKSFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(testConfig(filepath.Join(dir, "missing.json")), nil); err == nil {
		t.Fatal("a missing JWKS file was accepted")
	}
	empty := filepath.Join(dir, "empty.json")
	os.WriteFile(empty, []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}`), 0o600)
	if _, err := New(testConfig(empty), nil); err == nil || !strings.Contains(err.Error(), "no usable signature key") {
		t.Fatalf("a JWKS of only a symmetric key: %v", err)
	}
	if _, err := New(testConfig("http://idp.example.test/jwks"), nil); !errors.Is(err, ErrBadUser) {
		t.Fatalf("plain http JWKS: %v", err)
	}
	c := testConfig(empty)
	c.JWTAudience = ""
	if _, err := New(c, nil); !errors.Is(err, ErrBadUser) {
		t.Fatalf("JWKS without audience: %v", err)
	}
}

// jwksServer serves a JWK Set that the test can change or break.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	body    []byte
	fail    bool
	fetches atomic.Int32
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	s := &jwksServer{body: body}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.fail {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(s.body)
	}))
	t.Cleanup(s.Close)
	if !strings.HasPrefix(s.URL, "https://127.0.0.1:") {
		t.Fatalf("test server at %s, not loopback", s.URL)
	}
	return s
}

func (s *jwksServer) set(body []byte, fail bool) {
	s.mu.Lock()
	s.body, s.fail = body, fail
	s.mu.Unlock()
}

func TestJWKSURLRotationAndFailure(t *testing.T) {
	clk := newClock()
	k1, k2, k3 := newRSA(t, "k1"), newRSA(t, "k2"), newEd(t, "k3")
	srv := newJWKSServer(t, jwksJSON(t, k1))
	v, err := newVerifier(testConfig(srv.URL+"/jwks.json"), nil, options{now: clk.now, client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	verify := func(s signer) error {
		_, err := v.Verify(ctx, jwtID(s.sign(t, claimsAt(clk.now()))))
		return err
	}
	if err := verify(k1); err != nil || srv.fetches.Load() != 1 {
		t.Fatal(err, srv.fetches.Load())
	}
	// The issuer rotates to k2. Within a minute of the last fetch an
	// unknown kid does not fetch again.
	srv.set(jwksJSON(t, k1, k2), false)
	clk.advance(30 * time.Second)
	if err := verify(k2); !errors.Is(err, ErrUnknownKey) || srv.fetches.Load() != 1 {
		t.Fatal(err, srv.fetches.Load())
	}
	clk.advance(31 * time.Second)
	if err := verify(k2); err != nil || srv.fetches.Load() != 2 {
		t.Fatal(err, srv.fetches.Load())
	}
	// Many tokens with unknown kids in the same minute: one fetch.
	for range 5 {
		if err := verify(newRSA(t, "forged")); !errors.Is(err, ErrUnknownKey) {
			t.Fatal(err)
		}
	}
	if srv.fetches.Load() != 2 {
		t.Fatalf("%d fetches", srv.fetches.Load())
	}
	// The server fails: the last good set is kept.
	srv.set(nil, true)
	clk.advance(2 * time.Minute)
	if err := verify(k3); !errors.Is(err, ErrUnknownKey) || srv.fetches.Load() != 3 {
		t.Fatal(err, srv.fetches.Load())
	}
	if err := verify(k2); err != nil {
		t.Fatal(err)
	}
	// A broken document is a failure too.
	srv.set([]byte(`{"keys": "no"}`), false)
	clk.advance(2 * time.Minute)
	if err := verify(k3); !errors.Is(err, ErrUnknownKey) || srv.fetches.Load() != 4 {
		t.Fatal(err, srv.fetches.Load())
	}
	if err := verify(k1); err != nil {
		t.Fatal(err)
	}
	// Periodic refresh: an old set is fetched again in the background
	// while the current one is used.
	srv.set(jwksJSON(t, k2, k3), false)
	clk.advance(JWKSRefresh + time.Second)
	if err := verify(k1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.fetches.Load() != 5 || v.jwks.cur.Load().byKID["k3"].key == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no background refresh: %d fetches", srv.fetches.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := verify(k3); err != nil {
		t.Fatal(err)
	}
	if err := verify(k1); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("a key removed from the set still verifies: %v", err)
	}
}

func TestJWKSURLDownAtStart(t *testing.T) {
	clk := newClock()
	k1 := newRSA(t, "k1")
	srv := newJWKSServer(t, nil)
	srv.set(nil, true)
	v, err := newVerifier(testConfig(srv.URL), nil, options{now: clk.now, client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	tok := func() *policy.Credential { return jwtID(k1.sign(t, claimsAt(clk.now()))) }
	if _, err := v.Verify(context.Background(), tok()); !errors.Is(err, ErrUnknownKey) {
		t.Fatal(err)
	}
	srv.set(jwksJSON(t, k1), false)
	clk.advance(JWKSMinInterval)
	if _, err := v.Verify(context.Background(), tok()); err != nil {
		t.Fatal(err)
	}
}

func TestJWKSURLUntrustedCertificate(t *testing.T) {
	// The default client trusts only the system roots: a self-signed test
	// server is a failed fetch, not an accepted key set.
	srv := newJWKSServer(t, jwksJSON(t, newRSA(t, "k1")))
	v, err := New(testConfig(srv.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	if v.jwks.cur.Load() != nil {
		t.Fatal("key set fetched from an untrusted server")
	}
}

func TestKeyAlgorithms(t *testing.T) {
	ed := newEd(t, "e").key.Public()
	rs := newRSA(t, "r").key.Public()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, tc := range []struct {
		k    pubKey
		want string
	}{
		{pubKey{key: ed}, "EdDSA"},
		{pubKey{key: ed, alg: "Ed25519"}, "EdDSA"},
		{pubKey{key: ed, alg: "RS256"}, ""},
		{pubKey{key: rs}, "RS256 RS384 RS512 PS256 PS384 PS512"},
		{pubKey{key: rs, alg: "PS384"}, "PS384"},
		{pubKey{key: rs, alg: "HS256"}, ""},
		{pubKey{key: rs, alg: "none"}, ""},
		{pubKey{key: &p384.PublicKey}, "ES384"},
		{pubKey{key: &p384.PublicKey, alg: "ES256"}, ""},
	} {
		if got := strings.Join(tc.k.algs(), " "); got != tc.want {
			t.Errorf("%T %q: %q, want %q", tc.k.key, tc.k.alg, got, tc.want)
		}
	}
}

// TestSettingsChecked: a Verifier refuses settings it must not run with,
// whoever built them (not only internal/config's validation).
func TestSettingsChecked(t *testing.T) {
	h := cheapHash(t, "pw")
	for name, s := range map[string]Settings{
		"user twice":      {Users: []User{{Name: "a", Hash: h}, {Name: "a", Hash: h}}},
		"bad hash":        {Users: []User{{Name: "a", Hash: "plaintext"}}},
		"negative skew":   {ClockSkew: -time.Second},
		"skew over 5m":    {ClockSkew: 6 * time.Minute},
		"jwks, no issuer": {JWKS: "/nonexistent/jwks.json", JWTAudience: "ward"},
		"jwks over http":  {JWKS: "http://idp.example.test/jwks", JWTIssuer: "i", JWTAudience: "a"},
		"jwks over ftp":   {JWKS: "ftp://idp.example.test/jwks", JWTIssuer: "i", JWTAudience: "a"},
	} {
		if _, err := New(s, nil); !errors.Is(err, ErrBadUser) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
