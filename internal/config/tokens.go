package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ward-pacs/ward/policy/tokens"
)

// TokenFileName is the name of the API token file in the data directory
// (JSON, 0600, only the tokens' SHA-256 hashes).
const TokenFileName = tokens.File

// TokenFile is the path of the API token file in data directory dir.
func TokenFile(dir string) string { return filepath.Join(dir, TokenFileName) }

// LoadTokens reads the token file at path (a missing file holds no
// tokens).
func LoadTokens(path string) (*tokens.Set, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &tokens.Set{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, tokens.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, err := tokens.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// EditTokens reads the token file at path, lets edit change it and writes
// it back atomically with mode 0600. Edits run one at a time (an
// exclusive lock on path+".lock"), so two commands never lose each
// other's change.
func EditTokens(path string, edit func(*tokens.Set) error) error {
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := lockFile(lock); err != nil {
		return fmt.Errorf("locking %s: %w", path, err)
	}
	s, err := LoadTokens(path)
	if err != nil {
		return err
	}
	if err := edit(s); err != nil {
		return err
	}
	b, err := s.Encode()
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, b, 0o600)
}
