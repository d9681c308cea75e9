package audit

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ward-pacs/ward/durable"
)

// The log's key. A hash chain alone proves nothing against whoever can
// write the file: a record removed and every hash after it recomputed
// passes. From format 2 on, each record's "hash" member is an HMAC-SHA256
// under a secret key (RFC 2104) kept in a file of its own, apart from the
// log: rewriting the chain then needs the key.
//
// The key file (0600, JSON):
//
//	{"format":"ward-audit-key-1","key":"<64 hex>","from_seq":N,"created":"..."}
//
// from_seq is the seq of the first record the key signs: the log's last
// seq plus one when the key was made (1 for a new log). Records before it
// are format 1 (plain SHA-256, written before keys existed); they are
// protected from then on too, since the first keyed record's MAC covers
// the hash of the last unkeyed one. Verify refuses an unkeyed record at or
// after from_seq (a rewrite that drops the MACs) and a keyed record before
// it.

// KeyFileName is the key's file name in its default place, the data
// directory (the log is in DATA/audit/).
const KeyFileName = "audit.key"

const keyFormat = "ward-audit-key-1"

// ErrNoKey: the log holds keyed records and its key file is missing, or a
// keyed record is read without a key.
var ErrNoKey = errors.New("audit: the log's key is missing")

// Key is the secret that signs the log's records.
type Key struct {
	// Path is the file the key was read from.
	Path string
	// From is the seq of the first record the key signs.
	From uint64
	mac  []byte
}

type keyFile struct {
	Format  string    `json:"format"`
	Key     string    `json:"key"`
	FromSeq uint64    `json:"from_seq"`
	Created time.Time `json:"created"`
}

// NewKey returns a fresh random key signing records from seq from on (for
// tests and tools; Open makes and keeps the log's key itself).
func NewKey(from uint64) *Key {
	k := &Key{From: from, mac: make([]byte, sha256.Size)}
	if _, err := rand.Read(k.mac); err != nil {
		panic("audit: no randomness: " + err.Error())
	}
	return k
}

// sum is the record MAC of body.
func (k *Key) sum(body []byte) string {
	h := hmac.New(sha256.New, k.mac)
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// LoadKey reads a key file. A key file that others may read or write is
// refused, as ssh refuses such a private key.
func LoadKey(path string) (*Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("audit key %s: mode %04o lets others read it; make it 0600 (chmod 600)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	var kf keyFile
	if err := json.Unmarshal(b, &kf); err != nil {
		return nil, fmt.Errorf("audit key %s: %w", path, err)
	}
	if kf.Format != keyFormat {
		return nil, fmt.Errorf("audit key %s: format %q, want %q", path, kf.Format, keyFormat)
	}
	mac, err := hex.DecodeString(kf.Key)
	if err != nil || len(mac) != sha256.Size {
		return nil, fmt.Errorf("audit key %s: the key is not %d hex-encoded bytes", path, sha256.Size)
	}
	if kf.FromSeq == 0 {
		return nil, fmt.Errorf("audit key %s: from_seq is missing", path)
	}
	return &Key{Path: path, From: kf.FromSeq, mac: mac}, nil
}

// createKey writes a new key signing records from seq from on: 0600, in a
// directory made 0700 if missing, fsynced; never over an existing file.
func createKey(path string, from uint64) (*Key, error) {
	k := NewKey(from)
	k.Path = path
	b, err := json.Marshal(keyFile{Format: keyFormat, Key: hex.EncodeToString(k.mac), FromSeq: from, Created: time.Now().UTC()})
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if err := durable.WriteNew(path, append(b, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if err := durable.Sync(dir); err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	return k, nil
}

// openKey loads the key at path, or makes one when there is none and the
// log (whose last record is seq last, keyed or not) has no keyed record.
func openKey(path string, last uint64, lastKeyed bool) (k *Key, created bool, err error) {
	k, err = LoadKey(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	if lastKeyed {
		return nil, false, fmt.Errorf("%w: %s holds records signed with a key, and the key file %s does not exist: restore it from its copy (or start a new log: move the audit directory aside)",
			ErrNoKey, "the audit log", path)
	}
	k, err = createKey(path, last+1)
	return k, err == nil, err
}
