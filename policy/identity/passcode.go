package identity

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Parameters of new argon2id hashes (OWASP's password storage cheat sheet:
// m=19 MiB, t=2, p=1).
const (
	Argon2Memory  = 19456 // KiB
	Argon2Time    = 2
	Argon2Threads = 1
	Argon2SaltLen = 16
	Argon2KeyLen  = 32
)

// MaxArgon2Memory, MaxArgon2Time and MaxArgon2Threads bound the
// parameters of a stored argon2id hash (m in KiB): each verification
// costs that much memory and time, for every association that tries.
const (
	MaxArgon2Memory  = 256 * 1024
	MaxArgon2Time    = 16
	MaxArgon2Threads = 16
)

// ErrBadUser: a user or the JWT settings are invalid.
var ErrBadUser = errors.New("invalid user identity configuration")

// CheckPasscodeHash reports whether h looks like a passcode hash Ward
// verifies: argon2id in the PHC form
// $argon2id$v=19$m=M,t=T,p=P$SALT$HASH (unpadded base64, parameters
// within the bounds above) or bcrypt ($2a$, $2b$ or $2y$, cost 4 to 31).
// It never says what the hash is of.
func CheckPasscodeHash(h string) error {
	switch {
	case strings.HasPrefix(h, "$argon2id$"):
		return checkArgon2id(h)
	case strings.HasPrefix(h, "$2a$"), strings.HasPrefix(h, "$2b$"), strings.HasPrefix(h, "$2y$"):
		return checkBcrypt(h)
	case h == "":
		return fmt.Errorf("%w: no hash", ErrBadUser)
	}
	return fmt.Errorf("%w: the hash is neither argon2id ($argon2id$...) nor bcrypt ($2b$...); make one with 'ward user add' or 'ward user passwd'", ErrBadUser)
}

func checkArgon2id(h string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: argon2id hash: %s (the form is $argon2id$v=19$m=M,t=T,p=P$SALT$HASH)", ErrBadUser, why)
	}
	f := strings.Split(h, "$")
	if len(f) != 6 {
		return bad("wrong number of fields")
	}
	if f[2] != "v=19" {
		return bad("version is not 19")
	}
	var m, t, p uint64
	params := strings.Split(f[3], ",")
	if len(params) != 3 {
		return bad("parameters are not m,t,p")
	}
	for i, want := range []string{"m=", "t=", "p="} {
		v, ok := strings.CutPrefix(params[i], want)
		if !ok {
			return bad("parameters are not m,t,p")
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return bad("parameter " + want + " is not a number")
		}
		switch i {
		case 0:
			m = n
		case 1:
			t = n
		case 2:
			p = n
		}
	}
	if p < 1 || p > MaxArgon2Threads || t < 1 || t > MaxArgon2Time || m < 8*p || m > MaxArgon2Memory {
		return bad(fmt.Sprintf("parameters out of bounds (t 1..%d, p 1..%d, m 8p..%d KiB)", MaxArgon2Time, MaxArgon2Threads, MaxArgon2Memory))
	}
	for i, name := range []string{"salt", "hash"} {
		s := f[4+i]
		if len(s) < 11 || len(s) > 128 || strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") != "" {
			return bad(name + " is not 8 to 96 bytes of unpadded base64")
		}
	}
	return nil
}

func checkBcrypt(h string) error {
	if len(h) != 60 || h[6] != '$' {
		return fmt.Errorf("%w: bcrypt hash: not 60 characters of the form $2b$CC$...", ErrBadUser)
	}
	cost, err := strconv.Atoi(h[4:6])
	if err != nil || cost < 4 || cost > 31 {
		return fmt.Errorf("%w: bcrypt hash: cost is not 04 to 31", ErrBadUser)
	}
	if strings.Trim(h[7:], "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return fmt.Errorf("%w: bcrypt hash: salt and hash are not bcrypt base64", ErrBadUser)
	}
	return nil
}

// MaxPasscode is the longest passcode accepted, in bytes (the PDU field
// can carry 65535).
const MaxPasscode = 1024

// hasher is one stored passcode hash, parsed.
type hasher interface {
	// verify reports whether passcode matches, in time independent of
	// where it differs.
	verify(passcode []byte) bool
	// dummy returns a hash of the same kind and cost for a random
	// passcode: unknown users are checked against it.
	dummy() (hasher, error)
}

type argon2idHash struct {
	m, t      uint32
	p         uint8
	salt, key []byte
}

func (h *argon2idHash) verify(passcode []byte) bool {
	k := argon2.IDKey(passcode, h.salt, h.t, h.m, h.p, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(k, h.key) == 1
}

func (h *argon2idHash) dummy() (hasher, error) {
	d := &argon2idHash{m: h.m, t: h.t, p: h.p, salt: make([]byte, len(h.salt)), key: make([]byte, len(h.key))}
	if _, err := rand.Read(d.salt); err != nil {
		return nil, err
	}
	if _, err := rand.Read(d.key); err != nil {
		return nil, err
	}
	return d, nil
}

func (h *argon2idHash) encode() string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, h.m, h.t, h.p, b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}

type bcryptHash struct{ h []byte }

func (h *bcryptHash) verify(passcode []byte) bool {
	// CompareHashAndPassword compares in constant time; a passcode over
	// bcrypt's 72 bytes is refused by it (after the same work).
	return bcrypt.CompareHashAndPassword(h.h, passcode) == nil
}

func (h *bcryptHash) dummy() (hasher, error) {
	cost, err := bcrypt.Cost(h.h)
	if err != nil {
		return nil, err
	}
	pw := make([]byte, 32)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	d, err := bcrypt.GenerateFromPassword(pw, cost)
	if err != nil {
		return nil, err
	}
	return &bcryptHash{d}, nil
}

// parseHash parses a stored hash: argon2id (PHC string form) or bcrypt.
func parseHash(s string) (hasher, error) {
	if err := CheckPasscodeHash(s); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(s, "$argon2id$") {
		if _, err := bcrypt.Cost([]byte(s)); err != nil {
			return nil, fmt.Errorf("%w: bcrypt hash: %v", ErrBadUser, err)
		}
		return &bcryptHash{[]byte(s)}, nil
	}
	// CheckPasscodeHash has checked the form and the bounds.
	f := strings.Split(s, "$")
	h := &argon2idHash{}
	for _, kv := range strings.Split(f[3], ",") {
		n, _ := strconv.ParseUint(kv[2:], 10, 32)
		switch kv[0] {
		case 'm':
			h.m = uint32(n)
		case 't':
			h.t = uint32(n)
		case 'p':
			h.p = uint8(n)
		}
	}
	var err error
	if h.salt, err = base64.RawStdEncoding.DecodeString(f[4]); err != nil {
		return nil, fmt.Errorf("%w: argon2id hash: salt: %v", ErrBadUser, err)
	}
	if h.key, err = base64.RawStdEncoding.DecodeString(f[5]); err != nil {
		return nil, fmt.Errorf("%w: argon2id hash: hash: %v", ErrBadUser, err)
	}
	if len(h.key) < 16 {
		return nil, fmt.Errorf("%w: argon2id hash: the hash is shorter than 16 bytes", ErrBadUser)
	}
	return h, nil
}

// ErrPasscodeLength: a passcode to hash is empty or too long.
var ErrPasscodeLength = errors.New("a passcode is 1 to 1024 bytes")

// HashPasscode hashes a passcode for [[users]]: argon2id with m=19456 KiB,
// t=2, p=1, a random 16-byte salt and a 32-byte key, in the PHC string
// form $argon2id$v=19$m=19456,t=2,p=1$SALT$HASH.
func HashPasscode(passcode string) (string, error) {
	if passcode == "" || len(passcode) > MaxPasscode {
		return "", ErrPasscodeLength
	}
	h := &argon2idHash{m: Argon2Memory, t: Argon2Time, p: Argon2Threads, salt: make([]byte, Argon2SaltLen)}
	if _, err := rand.Read(h.salt); err != nil {
		return "", fmt.Errorf("hashing passcode: %w", err)
	}
	h.key = argon2.IDKey([]byte(passcode), h.salt, h.t, h.m, h.p, Argon2KeyLen)
	return h.encode(), nil
}

// defaultDummy is the dummy hash when no user is configured: the cost of
// a new hash.
func defaultDummy() (hasher, error) {
	h := &argon2idHash{m: Argon2Memory, t: Argon2Time, p: Argon2Threads, salt: make([]byte, Argon2SaltLen), key: make([]byte, Argon2KeyLen)}
	return h.dummy()
}
