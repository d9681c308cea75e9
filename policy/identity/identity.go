// Package identity verifies a user's credential (a policy.Credential; the
// DIMSE front end fills it from the user identity sub-item of the
// A-ASSOCIATE-RQ, PS3.7 D.3.3.7): a username and passcode checked against
// the users' slow hashes, or a JSON Web Token checked against the key set,
// issuer and audience of its Settings. Username alone, Kerberos and SAML
// are refused. internal/config translates [[users]] and [identity] into
// Settings.
//
// Errors wrap exported sentinels so the caller can audit the reason; their
// texts never hold the passcode or the token.
package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ward-pacs/ward/policy"
)

// Reasons an identity is refused. Every error Verify returns wraps one of
// ErrNoIdentity, ErrUnsupportedType, ErrPasscodeRequired,
// ErrBadCredentials, ErrJWTDisabled, ErrBadToken or ErrBusy; the token
// errors also wrap one of ErrTokenMalformed, ErrTokenSignature,
// ErrUnknownKey, ErrTokenExpired, ErrTokenNotYetValid, ErrTokenIssuer,
// ErrTokenAudience or ErrTokenClaims.
var (
	ErrNoIdentity       = errors.New("user identity: none sent")
	ErrUnsupportedType  = errors.New("not supported: Ward accepts username and passcode (type 2) or JSON Web Token (type 5)")
	ErrPasscodeRequired = errors.New("username without passcode (type 1) is not enough: Ward needs username and passcode (type 2) or a JSON Web Token (type 5)")
	ErrBadCredentials   = errors.New("bad username or passcode")
	ErrJWTDisabled      = errors.New("JSON Web Token identities are not accepted: no [identity] jwks is configured")
	ErrBadToken         = errors.New("JSON Web Token refused")
	ErrBusy             = errors.New("identity verification cancelled while waiting for a free verifier")

	ErrTokenMalformed   = errors.New("token is malformed")
	ErrTokenCritical    = errors.New("token header lists critical parameters (crit) Ward does not understand")
	ErrTokenSignature   = errors.New("token signature or algorithm is invalid")
	ErrUnknownKey       = errors.New("token is signed by a key not in the key set")
	ErrTokenExpired     = errors.New("token is expired or has no exp")
	ErrTokenNotYetValid = errors.New("token is not valid yet (nbf or iat in the future)")
	ErrTokenIssuer      = errors.New("token issuer is not the configured jwt_issuer")
	ErrTokenAudience    = errors.New("token audience does not contain the configured jwt_audience")
	ErrTokenClaims      = errors.New("token claims are invalid (sub missing, or a claim of the wrong type)")
)

// MaxConcurrentHashes bounds the passcode verifications running at once:
// each argon2id verification holds its m (19 MiB by default).
const MaxConcurrentHashes = 4

// MaxClockSkew is the largest leeway on token times a Verifier accepts.
const MaxClockSkew = 5 * time.Minute

// Settings are the users and the JWT settings a Verifier checks against.
type Settings struct {
	// Users are the accounts for username and passcode.
	Users []User
	// JWKS is the key set that verifies JSON Web Tokens: a file path or an
	// https:// URL. Empty: JWT credentials are refused.
	JWKS string
	// JWTIssuer and JWTAudience are the required iss and aud of every
	// token; both are needed with JWKS.
	JWTIssuer, JWTAudience string
	// ClockSkew is the leeway on exp, nbf and iat.
	ClockSkew time.Duration
}

// User is an account: its name and its passcode's hash (argon2id or
// bcrypt, in their standard encoded forms; CheckPasscodeHash).
type User struct {
	Name, Hash string
}

// check refuses settings a Verifier must not run with, whoever built
// them: a user listed twice, a key set without issuer and audience, or
// one fetched over plain HTTP.
func (s *Settings) check() error {
	seen := make(map[string]bool, len(s.Users))
	for _, u := range s.Users {
		if seen[u.Name] {
			return fmt.Errorf("%w: user %q is listed twice", ErrBadUser, u.Name)
		}
		seen[u.Name] = true
	}
	if s.ClockSkew < 0 || s.ClockSkew > MaxClockSkew {
		return fmt.Errorf("%w: clock skew %s: give 0 to %s", ErrBadUser, s.ClockSkew, MaxClockSkew)
	}
	if s.JWKS == "" {
		return nil
	}
	if s.JWTIssuer == "" || s.JWTAudience == "" {
		return fmt.Errorf("%w: a JWT key set needs an issuer and an audience", ErrBadUser)
	}
	if strings.Contains(s.JWKS, "://") && !strings.HasPrefix(strings.ToLower(s.JWKS), "https://") {
		return fmt.Errorf("%w: JWT key set %s: give a file path or an https:// URL", ErrBadUser, s.JWKS)
	}
	return nil
}

// Result is a verified (or, with an error, a claimed) identity.
type Result struct {
	// Type is the type of the credential.
	Type policy.CredentialType
	// User is the username (type 2) or the token's sub (type 5). With an
	// error it is the claimed username for types 1 and 2 (unverified, for
	// the audit trail) and empty otherwise.
	User string
	// Response is the server response for the A-ASSOCIATE-AC when the
	// request asked for a positive response: empty but not nil for a
	// passcode (PS3.7 Table D.3-15: zero length), the verified token for
	// a JWT (Ward issues no tokens of its own). Nil when no positive
	// response was asked for. It may hold a bearer token: never log it.
	Response []byte
}

// Verifier checks user identities. It is safe for concurrent use; it
// starts no goroutine that would need stopping.
type Verifier struct {
	logger *slog.Logger
	users  map[string]hasher
	dummy  hasher
	sem    chan struct{}
	now    func() time.Time

	jwks     *jwksSource // nil: JWT refused
	issuer   string
	audience string
	skew     time.Duration
}

// options are the seams tests use.
type options struct {
	client *http.Client
	now    func() time.Time
}

// New builds a Verifier from s: the users' hashes are parsed, and the
// JWKS (when set) is read from its file or fetched from its https:// URL.
// A JWKS file that cannot be read is an error; a URL that cannot be
// fetched at start is logged and retried when a token arrives (JWT
// identities are refused meanwhile).
func New(s Settings, logger *slog.Logger) (*Verifier, error) {
	return newVerifier(s, logger, options{})
}

func newVerifier(c Settings, logger *slog.Logger, o options) (*Verifier, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.client == nil {
		o.client = &http.Client{
			Timeout: JWKSTimeout,
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 3 {
					return errors.New("too many redirects")
				}
				if req.URL.Scheme != "https" {
					return errors.New("redirect away from https")
				}
				return nil
			},
		}
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	v := &Verifier{
		logger: logger,
		users:  make(map[string]hasher, len(c.Users)),
		sem:    make(chan struct{}, MaxConcurrentHashes),
		now:    o.now,
	}
	for _, u := range c.Users {
		h, err := parseHash(u.Hash)
		if err != nil {
			return nil, fmt.Errorf("user %q: %w", u.Name, err)
		}
		v.users[u.Name] = h
		if v.dummy == nil {
			// Unknown users cost what the first user costs.
			if v.dummy, err = h.dummy(); err != nil {
				return nil, fmt.Errorf("user identity: %w", err)
			}
		}
	}
	if v.dummy == nil {
		var err error
		if v.dummy, err = defaultDummy(); err != nil {
			return nil, fmt.Errorf("user identity: %w", err)
		}
	}
	if c.JWKS != "" {
		v.issuer, v.audience = c.JWTIssuer, c.JWTAudience
		v.skew = c.ClockSkew
		var err error
		if v.jwks, err = newJWKSSource(c.JWKS, o.client, logger, o.now); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// Verify checks one credential. ctx bounds the wait for a free passcode
// verifier and a key set fetch.
func (v *Verifier) Verify(ctx context.Context, id *policy.Credential) (Result, error) {
	if id == nil {
		return Result{}, ErrNoIdentity
	}
	r := Result{Type: id.Type}
	switch id.Type {
	case policy.Username:
		r.User = string(id.Primary)
		return r, fmt.Errorf("user identity: %w", ErrPasscodeRequired)
	case policy.UsernamePasscode:
		r.User = string(id.Primary)
		if err := v.verifyPasscode(ctx, r.User, id.Secondary); err != nil {
			return r, err
		}
	case policy.JWT:
		sub, err := v.verifyJWT(ctx, id.Primary)
		if err != nil {
			return r, err
		}
		r.User = sub
		if id.PositiveResponse {
			r.Response = append([]byte{}, id.Primary...)
		}
		return r, nil
	case policy.Kerberos:
		return r, fmt.Errorf("user identity: Kerberos (type 3): %w", ErrUnsupportedType)
	case policy.SAML:
		return r, fmt.Errorf("user identity: SAML (type 4): %w", ErrUnsupportedType)
	default:
		return r, fmt.Errorf("user identity: type %d: %w", id.Type, ErrUnsupportedType)
	}
	if id.PositiveResponse {
		r.Response = []byte{}
	}
	return r, nil
}

func (v *Verifier) verifyPasscode(ctx context.Context, name string, passcode []byte) error {
	h, known := v.users[name]
	if !known {
		h = v.dummy
	}
	select {
	case v.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("user identity: %w: %w", ErrBusy, ctx.Err())
	}
	// An empty or overlong passcode, or an unknown user, costs one
	// verification like any other attempt.
	ok := h.verify(passcode)
	<-v.sem
	if !known || !ok || len(passcode) == 0 || len(passcode) > MaxPasscode {
		return fmt.Errorf("user identity: %w", ErrBadCredentials)
	}
	return nil
}

func (v *Verifier) verifyJWT(ctx context.Context, raw []byte) (string, error) {
	if v.jwks == nil {
		return "", fmt.Errorf("user identity: %w", ErrJWTDisabled)
	}
	// A token read from a file (storescu --jwt FILE) may end in a newline;
	// fields may be padded with NUL or space.
	tok := strings.TrimRight(string(raw), " \t\r\n\x00")
	p := jwt.NewParser(
		jwt.WithValidMethods(allAlgs),
		jwt.WithIssuer(v.issuer),
		jwt.WithAudience(v.audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(v.skew),
		jwt.WithTimeFunc(v.now),
		jwt.WithStrictDecoding(),
	)
	var claims typedClaims
	_, err := p.ParseWithClaims(tok, &claims, v.keyfunc(ctx))
	if err == nil && claims.Subject == "" {
		err = ErrTokenClaims
	}
	if err != nil {
		return "", fmt.Errorf("user identity: %w: %w", ErrBadToken, tokenReason(err))
	}
	return claims.Subject, nil
}

// tokenReason maps the JWT library's errors onto this package's; its
// messages hold no part of the token.
func tokenReason(err error) error {
	switch {
	case errors.Is(err, ErrTokenClaims):
		return ErrTokenClaims
	case errors.Is(err, ErrTokenCritical):
		return ErrTokenCritical
	case errors.Is(err, errUnknownKey):
		return ErrUnknownKey
	case errors.Is(err, ErrBusy):
		return ErrBusy
	case errors.Is(err, jwt.ErrTokenMalformed):
		return ErrTokenMalformed
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return ErrTokenSignature
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrTokenExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return ErrTokenNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return ErrTokenIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return ErrTokenAudience
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// exp, iss or aud absent.
		msg := err.Error()
		switch {
		case strings.Contains(msg, "exp claim"):
			return ErrTokenExpired
		case strings.Contains(msg, "iss claim"):
			return ErrTokenIssuer
		case strings.Contains(msg, "aud claim"):
			return ErrTokenAudience
		}
		return ErrTokenClaims
	}
	return ErrTokenClaims
}

// keyfunc picks the verification key by the token's kid and checks that
// the token's alg is one the key may verify: the algorithm comes from the
// key, never from the token alone.
func (v *Verifier) keyfunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		// RFC 7515 4.1.11: a recipient that does not understand every
		// parameter crit lists must reject the token. Ward understands
		// none (no JWS extension is implemented), so any crit is refused,
		// and so is a malformed one.
		if _, ok := t.Header["crit"]; ok {
			return nil, ErrTokenCritical
		}
		kid := ""
		if k, ok := t.Header["kid"]; ok {
			s, ok := k.(string)
			if !ok || s == "" {
				return nil, fmt.Errorf("%w: kid is not a string", jwt.ErrTokenMalformed)
			}
			kid = s
		}
		key, ok := v.jwks.current().lookup(kid)
		if !ok {
			set, err := v.jwks.refreshFor(ctx)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrBusy, err)
			}
			if key, ok = set.lookup(kid); !ok {
				return nil, errUnknownKey
			}
		}
		alg := t.Method.Alg()
		for _, a := range key.algs() {
			if a == alg {
				return key.key, nil
			}
		}
		return nil, fmt.Errorf("%w: alg %s does not fit the key", jwt.ErrTokenSignatureInvalid, alg)
	}
}

// typedClaims are the registered claims, with their JSON types checked
// before they are decoded: RFC 7519 makes exp, nbf and iat NumericDates
// (JSON numbers), iss, sub and jti strings, and aud a string or an array
// of strings. The JWT library alone would take a date written as a
// string ("exp": "4102444800"), which a token issuer never produces and
// a forger might try.
type typedClaims struct {
	jwt.RegisteredClaims
}

func (c *typedClaims) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if b = bytes.TrimSpace(b); len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &raw) != nil {
		return fmt.Errorf("%w: the claims are not a JSON object", ErrTokenClaims)
	}
	for name, v := range raw {
		if !claimTypeOK(name, v) {
			return fmt.Errorf("%w: claim %s has the wrong JSON type", ErrTokenClaims, name)
		}
	}
	return json.Unmarshal(b, &c.RegisteredClaims)
}

// claimTypeOK reports whether the registered claim name has a value of
// its type; claims Ward does not read pass.
func claimTypeOK(name string, v json.RawMessage) bool {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return false
	}
	switch name {
	case "exp", "nbf", "iat":
		// A number: a JSON number starts with a digit or a minus sign.
		// null is not a date either.
		return v[0] == '-' || (v[0] >= '0' && v[0] <= '9')
	case "iss", "sub", "jti":
		return v[0] == '"'
	case "aud":
		if v[0] == '"' {
			return true
		}
		var list []json.RawMessage
		if v[0] != '[' || json.Unmarshal(v, &list) != nil {
			return false
		}
		for _, e := range list {
			if e = bytes.TrimSpace(e); len(e) == 0 || e[0] != '"' {
				return false
			}
		}
		return true
	}
	return true
}
