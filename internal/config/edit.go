package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"

	"github.com/BurntSushi/toml"

	"github.com/ward-pacs/ward/durable"
)

// EditPeers reads the configuration file at path (a missing file is an
// empty one), lets edit change its peers, and writes the file back
// atomically (a temporary file in the same directory, fsync, rename) with
// mode 0600. Every other setting is kept: when the file holds its peers as
// [[peers]] tables, only those tables are rewritten (at the end of the
// file) and every other line, comments included, stays as it was.
func EditPeers(path string, edit func([]Peer) ([]Peer, error)) error {
	return editTables(path, "peers", func(c *Config) *[]Peer { return &c.Peers }, func(peers []Peer) error {
		for i := range peers {
			if len(peers[i].Allow) == 0 {
				peers[i].Allow = nil
			}
			if err := peers[i].Validate(); err != nil {
				return err
			}
		}
		return nil
	}, edit)
}

// editTables is EditPeers and EditUsers: the [[key]] tables of the file,
// field of Config, are given to edit, checked, and written back, every
// other setting kept (the file is re-encoded whole only when its tables
// were written some other way, and refused if even that changes another
// setting).
func editTables[T any](path, key string, field func(*Config) *[]T, check func([]T) error, edit func([]T) ([]T, error)) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading config: %w", err)
	}
	before, err := decodeStrict(path, old)
	if err != nil {
		return err
	}
	items, err := edit(append([]T(nil), *field(before)...))
	if err != nil {
		return err
	}
	if err := check(items); err != nil {
		return err
	}
	enc, err := encodeTables(key, items)
	if err != nil {
		return err
	}
	// same reports whether out decodes to before with the new tables.
	same := func(out []byte) bool {
		after, err := decodeStrict(path, out)
		if err != nil {
			return false
		}
		if got := *field(after); len(got) != len(items) || (len(items) > 0 && !reflect.DeepEqual(got, items)) {
			return false
		}
		a, b := *after, *before
		*field(&a), *field(&b) = nil, nil
		return reflect.DeepEqual(a, b)
	}
	out := rewriteTables(old, key, enc)
	if !same(out) {
		// Tables written some other way (inline arrays, dotted keys):
		// re-encode the whole file from its decoded form.
		if out, err = reencodeWithout(old, key, enc); err != nil {
			return err
		}
		if !same(out) {
			return fmt.Errorf("config %s: could not rewrite the %s without changing other settings", path, key)
		}
	}
	return WriteFileAtomic(path, out, 0o600)
}

func decodeStrict(path string, b []byte) (*Config, error) {
	c := Default()
	md, err := toml.Decode(string(b), c)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("config %s: unknown keys: %v", path, und)
	}
	return c, nil
}

// WriteFileAtomic replaces path with b: a temporary file in the same
// directory, written, synced and renamed over path, then the directory
// synced.
func WriteFileAtomic(path string, b []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("writing config: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("writing config: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing config: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	if err := durable.Sync(dir); err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	return nil
}
