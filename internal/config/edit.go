package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
)

// EditPeers reads the configuration file at path (a missing file is an
// empty one), lets edit change its peers, and writes the file back
// atomically (a temporary file in the same directory, fsync, rename) with
// mode 0600. Every other setting is kept: when the file holds its peers as
// [[peers]] tables, only those tables are rewritten (at the end of the
// file) and every other line, comments included, stays as it was.
func EditPeers(path string, edit func([]Peer) ([]Peer, error)) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading config: %w", err)
	}
	before, err := decodeStrict(path, old)
	if err != nil {
		return err
	}
	peers, err := edit(append([]Peer(nil), before.Peers...))
	if err != nil {
		return err
	}
	for i := range peers {
		if len(peers[i].Allow) == 0 {
			peers[i].Allow = nil
		}
		if err := peers[i].Validate(); err != nil {
			return err
		}
	}
	out, err := rewritePeers(old, peers)
	if err != nil {
		return err
	}
	if !sameExceptPeers(path, before, out, peers) {
		// Peers written some other way (inline arrays, dotted keys):
		// re-encode the whole file from its decoded form.
		if out, err = reencode(old, peers); err != nil {
			return err
		}
		if !sameExceptPeers(path, before, out, peers) {
			return fmt.Errorf("config %s: could not rewrite the peers without changing other settings", path)
		}
	}
	return writeAtomic(path, out, 0o600)
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

func sameExceptPeers(path string, before *Config, out []byte, peers []Peer) bool {
	after, err := decodeStrict(path, out)
	if err != nil {
		return false
	}
	if len(after.Peers) != len(peers) || (len(peers) > 0 && !reflect.DeepEqual(after.Peers, peers)) {
		return false
	}
	a, b := *after, *before
	a.Peers, b.Peers = nil, nil
	return reflect.DeepEqual(a, b)
}

// encodePeers returns the [[peers]] tables.
func encodePeers(peers []Peer) ([]byte, error) {
	if len(peers) == 0 {
		return nil, nil
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(struct {
		Peers []Peer `toml:"peers"`
	}{peers}); err != nil {
		return nil, fmt.Errorf("encoding peers: %w", err)
	}
	return b.Bytes(), nil
}

// rewritePeers drops the [[peers]] tables of the file's text and appends
// the new ones.
func rewritePeers(old []byte, peers []Peer) ([]byte, error) {
	var out bytes.Buffer
	in := false
	for _, line := range strings.SplitAfter(string(old), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			in = strings.HasPrefix(strings.ReplaceAll(t, " ", ""), "[[peers]]")
		}
		if !in {
			out.WriteString(line)
		}
	}
	enc, err := encodePeers(peers)
	if err != nil {
		return nil, err
	}
	text := strings.TrimRight(out.String(), "\n")
	if text != "" {
		text += "\n"
		if enc != nil {
			text += "\n"
		}
	}
	return append([]byte(text), enc...), nil
}

func reencode(old []byte, peers []Peer) ([]byte, error) {
	m := map[string]any{}
	if _, err := toml.Decode(string(old), &m); err != nil {
		return nil, err
	}
	delete(m, "peers")
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(m); err != nil {
		return nil, err
	}
	enc, err := encodePeers(peers)
	if err != nil {
		return nil, err
	}
	if b.Len() > 0 && enc != nil {
		b.WriteString("\n")
	}
	b.Write(enc)
	return b.Bytes(), nil
}

// writeAtomic replaces path with b: a temporary file in the same
// directory, written, synced and renamed over path, then the directory
// synced.
func writeAtomic(path string, b []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
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
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
