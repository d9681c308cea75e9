package encblob

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ward-pacs/ward/durable"
)

// A key file holds the key-encryption keys (KEKs) of an archive, one a
// line:
//
//	ward-kek-v1:ID:BASE64
//	ward-kek-v1:ID:BASE64 current
//
// ID is 1 to 32 of a-z 0-9 -; BASE64 is the 32 bytes of an AES-256 key
// (standard encoding, padded). The line marked current (else the last
// one) wraps the data keys of new objects; the others only unwrap.
// Lines starting with # and empty lines are ignored.

const keyLinePrefix = "ward-kek-v1:"

// EnvKey is the environment variable a key file's content may come from
// instead of a file.
const EnvKey = "WARD_ENCRYPTION_KEY"

// Keyring is the KEKs of a key file.
type Keyring struct {
	current string
	keys    map[string][]byte
	order   []string
}

// Current is the ID of the KEK that wraps the data keys of new objects.
func (k *Keyring) Current() string { return k.current }

// IDs lists the KEK IDs in the order of the file.
func (k *Keyring) IDs() []string { return append([]string(nil), k.order...) }

func (k *Keyring) key(id string) []byte { return k.keys[id] }

// ValidKeyID reports whether id can name a KEK.
func ValidKeyID(id string) bool {
	if len(id) == 0 || len(id) > 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// ParseKeys reads a key file's content. Its errors never quote key
// material.
func ParseKeys(b []byte) (*Keyring, error) {
	k := &Keyring{keys: map[string][]byte{}}
	marked := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rest, ok := strings.CutPrefix(line, keyLinePrefix)
		if !ok {
			return nil, fmt.Errorf("encryption key line %d: not a %s line", n, strings.TrimSuffix(keyLinePrefix, ":"))
		}
		id, rest, ok := strings.Cut(rest, ":")
		if !ok || !ValidKeyID(id) {
			return nil, fmt.Errorf("encryption key line %d: the key ID is 1 to 32 of a-z 0-9 -", n)
		}
		enc, flag, _ := strings.Cut(rest, " ")
		key, err := base64.StdEncoding.DecodeString(enc)
		if err != nil || len(key) != 32 {
			return nil, fmt.Errorf("encryption key %s: not 32 bytes in base64", id)
		}
		switch strings.TrimSpace(flag) {
		case "":
		case "current":
			if marked != "" {
				return nil, fmt.Errorf("encryption keys %s and %s are both marked current", marked, id)
			}
			marked = id
		default:
			return nil, fmt.Errorf("encryption key %s: unknown flag after the key (only \"current\")", id)
		}
		if _, dup := k.keys[id]; dup {
			return nil, fmt.Errorf("encryption key ID %s is given twice", id)
		}
		k.keys[id] = key
		k.order = append(k.order, id)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("encryption keys: %w", err)
	}
	if len(k.order) == 0 {
		return nil, errors.New("no encryption key given (a key file holds ward-kek-v1 lines; make one with ward key init)")
	}
	k.current = marked
	if marked == "" {
		k.current = k.order[len(k.order)-1]
	}
	return k, nil
}

// ReadKeyFile reads a key file, refusing one that other users may read
// or write (mode must be 0600 or stricter).
func ReadKeyFile(path string) (*Keyring, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("encryption key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("encryption key file %s: mode %04o lets other local users at the key (chmod 600 it)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("encryption key file: %w", err)
	}
	k, err := ParseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// NewKeyLine makes a new KEK line for id, with 32 random bytes.
func NewKeyLine(id string, current bool) (string, error) {
	if !ValidKeyID(id) {
		return "", fmt.Errorf("key ID %q: use 1 to 32 of a-z 0-9 -", id)
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return "", err
	}
	line := keyLinePrefix + id + ":" + base64.StdEncoding.EncodeToString(key[:])
	if current {
		line += " current"
	}
	return line, nil
}

const keyFileHead = "# Ward encryption keys (ward key init). Keep this file secret, and keep a\n" +
	"# copy apart from the data and its backups: without it no object can be read.\n"

// InitKeyFile writes a new key file at path (mode 0600) holding one KEK,
// id. It refuses to overwrite anything.
func InitKeyFile(path, id string) error {
	line, err := NewKeyLine(id, true)
	if err != nil {
		return err
	}
	err = durable.WriteNew(path, []byte(keyFileHead+line+"\n"), 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists: not overwritten (a key lost is every object it encrypted lost)", path)
	}
	if err != nil {
		return err
	}
	return durable.Sync(filepath.Dir(path))
}

// AddKey adds a new KEK id to the key file at path and marks it current
// (the mark moves from the line that had it). The file is rewritten in
// place through a temporary file, mode 0600.
func AddKey(path, id string) error {
	old, err := ReadKeyFile(path)
	if err != nil {
		return err
	}
	if _, dup := old.keys[id]; dup {
		return fmt.Errorf("%s holds a key %s already", path, id)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	line, err := NewKeyLine(id, true)
	if err != nil {
		return err
	}
	var out strings.Builder
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, keyLinePrefix) && strings.HasSuffix(t, " current") {
			l = strings.TrimSuffix(t, " current") + "\n"
		}
		out.WriteString(l)
	}
	if s := out.String(); s != "" && !strings.HasSuffix(s, "\n") {
		out.WriteString("\n")
	}
	out.WriteString(line + "\n")
	// Written beside, synced, renamed into place, the folder synced: after
	// a crash the file holds the old keys or the new ones, whole.
	tmp := path + ".tmp"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(out.String())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
