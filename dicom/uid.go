package dicom

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// MaxUIDLength is the longest UID PS3.5 9.1 allows.
const MaxUIDLength = 64

// UIDProblem says why s cannot be a UID that Ward keys on, or "" when it
// can. s is the value with its padding already removed (a trailing NUL is
// padding on the wire; it is never part of the UID).
//
// Refused, always: an empty value, more than 64 characters, any character
// other than the digits and '.' (so no '/', '\', space or control
// character), and an empty component (a leading, trailing or doubled '.':
// so neither "." nor ".." nor any value holding ".." passes).
//
// Accepted, although PS3.5 9.1 forbids it: a component of more than one
// digit that starts with '0'. Real modalities send such UIDs, and an
// archive that refused them would lose their studies; ValidUID tells them
// apart for a warning. Nothing StorableUID accepts can name a path other
// than a plain file name.
func UIDProblem(s string) string {
	if s == "" {
		return "is empty"
	}
	if len(s) > MaxUIDLength {
		return fmt.Sprintf("is %d characters long, more than %d", len(s), MaxUIDLength)
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			if c := s[i]; c < '0' || c > '9' {
				return "contains " + describeUIDByte(c) + "; a UID holds only digits and '.'"
			}
			continue
		}
		if i == start {
			return "has an empty component (a leading, trailing or doubled '.')"
		}
		start = i + 1
	}
	return ""
}

func describeUIDByte(c byte) string {
	switch {
	case c < 0x20 || c == 0x7f:
		return "a control character"
	case c >= 0x80:
		return "a byte outside ASCII"
	case c == ' ':
		return "a space"
	case c == '\\':
		return "a backslash"
	}
	return fmt.Sprintf("%q", rune(c))
}

// StorableUID reports whether Ward stores and keys on s as a UID (see
// UIDProblem): 1 to 64 digits and dots, no empty component. It accepts
// components with leading zeros, which ValidUID does not.
func StorableUID(s string) bool { return UIDProblem(s) == "" }

// ValidUID reports whether s is a syntactically valid UID (PS3.5 9.1):
// at most 64 characters, numeric components separated by '.', no leading
// zeros in a component other than "0" itself.
func ValidUID(s string) bool {
	if !StorableUID(s) {
		return false
	}
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '0' && (i == 0 || s[i-1] == '.') && s[i+1] != '.' {
			return false
		}
	}
	return true
}

// UIDFileName returns a file or folder name for the UID uid: uid itself
// when StorableUID accepts it (digits and dots, never "." or ".."), else
// "invalid-uid-" and a hash of the value, so that a bad value an index
// may hold (stored before Ward checked UIDs) still names a file inside
// the folder it was meant for, and different values name different
// files.
func UIDFileName(uid string) string {
	if StorableUID(uid) {
		return uid
	}
	sum := sha256.Sum256([]byte(uid))
	return "invalid-uid-" + hex.EncodeToString(sum[:10])
}
