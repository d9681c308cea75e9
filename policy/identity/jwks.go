package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
)

// JWKS fetching.
const (
	// JWKSTimeout bounds one fetch of a JWKS URL.
	JWKSTimeout = 10 * time.Second
	// JWKSRefresh is the age after which a key set is fetched again (in
	// the background, at the next token).
	JWKSRefresh = 15 * time.Minute
	// JWKSMinInterval is the shortest time between two fetches: a token
	// signed by an unknown key fetches the set again at most this often.
	JWKSMinInterval = time.Minute
	// MaxJWKS is the largest key set document read, in bytes.
	MaxJWKS = 1 << 20
)

// pubKey is one verification key of the set.
type pubKey struct {
	key any // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	alg string
}

// algs are the JWS algorithms a key may verify: the key's own alg when it
// names one, otherwise those of its type. Never "none", never HMAC.
func (k pubKey) algs() []string {
	var all []string
	switch pk := k.key.(type) {
	case *rsa.PublicKey:
		all = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	case *ecdsa.PublicKey:
		switch pk.Curve {
		case elliptic.P256():
			all = []string{"ES256"}
		case elliptic.P384():
			all = []string{"ES384"}
		case elliptic.P521():
			all = []string{"ES512"}
		}
	case ed25519.PublicKey:
		all = []string{"EdDSA"}
	}
	if k.alg != "" {
		alg := k.alg
		if alg == "Ed25519" {
			// RFC 9864's fully specified name for EdDSA over Ed25519.
			alg = "EdDSA"
		}
		if slices.Contains(all, alg) {
			return []string{alg}
		}
		return nil
	}
	return all
}

// allAlgs are the algorithms any key may verify.
var allAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// keySet is one fetched JWKS.
type keySet struct {
	byKID   map[string]pubKey
	noKID   []pubKey
	fetched time.Time
}

// lookup finds the key for a token's kid. A token without kid matches
// only a set of exactly one key.
func (s *keySet) lookup(kid string) (pubKey, bool) {
	if s == nil {
		return pubKey{}, false
	}
	if kid != "" {
		k, ok := s.byKID[kid]
		return k, ok
	}
	if len(s.byKID)+len(s.noKID) != 1 {
		return pubKey{}, false
	}
	for _, k := range s.byKID {
		return k, true
	}
	return s.noKID[0], true
}

// parseJWKS reads a JWK Set: public signature keys (RSA, EC P-256/384/521,
// Ed25519); symmetric keys, encryption keys and keys that do not parse are
// skipped (and logged). A set with no usable key is an error.
func parseJWKS(b []byte, logger *slog.Logger, where string) (*keySet, error) {
	var raw jwkset.JWKSMarshal
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("jwks %s: %w", where, err)
	}
	s := &keySet{byKID: map[string]pubKey{}}
	for i, m := range raw.Keys {
		skip := func(why string) {
			logger.Warn("jwks: key skipped", "jwks", where, "index", i, "kid", m.KID, "reason", why)
		}
		if m.USE != "" && m.USE != jwkset.UseSig {
			skip("use is not sig")
			continue
		}
		if m.KTY == jwkset.KtyOct {
			skip("symmetric key")
			continue
		}
		// Private key material, if any, is ignored: only the public part is
		// parsed.
		j, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			skip(err.Error())
			continue
		}
		k := pubKey{alg: string(m.ALG)}
		switch pk := j.Key().(type) {
		case *rsa.PublicKey:
			if pk.N.BitLen() < 2048 {
				skip("RSA key shorter than 2048 bits")
				continue
			}
			k.key = pk
		case *ecdsa.PublicKey, ed25519.PublicKey:
			k.key = pk
		case *rsa.PrivateKey:
			k.key = &pk.PublicKey
		case *ecdsa.PrivateKey:
			k.key = &pk.PublicKey
		case ed25519.PrivateKey:
			k.key = pk.Public()
		default:
			skip(fmt.Sprintf("key type %T is not a signature key", pk))
			continue
		}
		if len(k.algs()) == 0 {
			skip(fmt.Sprintf("alg %q does not fit the key", k.alg))
			continue
		}
		if m.KID == "" {
			s.noKID = append(s.noKID, k)
			continue
		}
		if _, dup := s.byKID[m.KID]; dup {
			skip("duplicate kid")
			continue
		}
		s.byKID[m.KID] = k
	}
	if len(s.byKID)+len(s.noKID) == 0 {
		return nil, fmt.Errorf("jwks %s: no usable signature key", where)
	}
	return s, nil
}

// jwksSource holds the current key set of a file or an https:// URL and
// fetches it again when it is old (in the background) or when a token
// names an unknown key (at most once per JWKSMinInterval). A failed fetch
// keeps the last good set. There is no goroutine to stop: a background
// fetch ends within JWKSTimeout.
type jwksSource struct {
	loc    string
	isURL  bool
	client *http.Client
	logger *slog.Logger
	now    func() time.Time

	cur atomic.Pointer[keySet]
	// fetching is held (a one-slot semaphore) by the fetch in flight;
	// lastTry is guarded by it.
	fetching chan struct{}
	lastTry  time.Time
}

func newJWKSSource(loc string, client *http.Client, logger *slog.Logger, now func() time.Time) (*jwksSource, error) {
	s := &jwksSource{loc: loc, client: client, logger: logger, now: now, fetching: make(chan struct{}, 1)}
	lower := strings.ToLower(loc)
	switch {
	case strings.HasPrefix(lower, "https://"):
		s.isURL = true
	case strings.Contains(loc, "://"):
		return nil, fmt.Errorf("identity jwks %s: give a file path or an https:// URL", loc)
	}
	s.fetching <- struct{}{}
	err := s.fetch(context.Background())
	<-s.fetching
	if err != nil {
		if !s.isURL {
			return nil, err
		}
		// The issuer may be down at start: JWT identities are refused
		// until a fetch succeeds.
		logger.Warn("jwks: first fetch failed; JWT identities are refused until the key set can be fetched", "jwks", loc, "err", err)
	}
	return s, nil
}

// fetch reads the set; the caller holds s.fetching.
func (s *jwksSource) fetch(ctx context.Context) error {
	s.lastTry = s.now()
	var b []byte
	var err error
	if s.isURL {
		b, err = s.get(ctx)
	} else {
		b, err = readFileMax(s.loc, MaxJWKS)
	}
	if err != nil {
		return err
	}
	set, err := parseJWKS(b, s.logger, s.loc)
	if err != nil {
		return err
	}
	set.fetched = s.now()
	s.cur.Store(set)
	return nil
}

func (s *jwksSource) get(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, JWKSTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.loc, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", s.loc, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks %s: HTTP status %s", s.loc, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxJWKS+1))
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", s.loc, err)
	}
	if len(b) > MaxJWKS {
		return nil, fmt.Errorf("jwks %s: larger than %d bytes", s.loc, MaxJWKS)
	}
	return b, nil
}

func readFileMax(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("jwks %s: larger than %d bytes", path, max)
	}
	return b, nil
}

// current returns the key set, starting a background fetch when it is
// older than JWKSRefresh (or missing) and no fetch is in flight.
func (s *jwksSource) current() *keySet {
	set := s.cur.Load()
	if set != nil && s.now().Sub(set.fetched) < JWKSRefresh {
		return set
	}
	select {
	case s.fetching <- struct{}{}:
		if s.now().Sub(s.lastTry) < JWKSMinInterval {
			<-s.fetching
			return set
		}
		go func() {
			defer func() { <-s.fetching }()
			if err := s.fetch(context.Background()); err != nil {
				s.logger.Warn("jwks: refresh failed; keeping the last good key set", "jwks", s.loc, "err", err)
			}
		}()
	default:
	}
	return set
}

// refreshFor fetches the set again because a token named a key that is
// not in it, unless a fetch was tried less than JWKSMinInterval ago; it
// waits for a fetch in flight. It returns the set to use.
func (s *jwksSource) refreshFor(ctx context.Context) (*keySet, error) {
	select {
	case s.fetching <- struct{}{}:
	case <-ctx.Done():
		return s.cur.Load(), ctx.Err()
	}
	defer func() { <-s.fetching }()
	if s.now().Sub(s.lastTry) < JWKSMinInterval {
		return s.cur.Load(), nil
	}
	if err := s.fetch(ctx); err != nil {
		s.logger.Warn("jwks: fetch for an unknown key failed; keeping the last good key set", "jwks", s.loc, "err", err)
	}
	return s.cur.Load(), nil
}

// errUnknownKey: the token's key is not in the set.
var errUnknownKey = errors.New("unknown key")
