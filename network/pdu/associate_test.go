package pdu

import (
	"errors"
	"testing"
)

// Sub-items that carry one value for the association may not come twice:
// which one holds would be up to the reader (two user identities, say).
func TestUserInfoSubItemsOnce(t *testing.T) {
	maxLen := []byte{0x51, 0, 0, 4, 0, 0, 0x40, 0}
	identity := func(user byte) []byte { return []byte{0x58, 0, 0, 7, 1, 0, 0, 1, user, 0, 0} }
	role := []byte{0x54, 0, 0, 5, 0, 1, '1', 1, 0}
	for name, tc := range map[string]struct {
		b  []byte
		ok bool
	}{
		"one of each":                            {append(append(append([]byte(nil), maxLen...), identity('u')...), role...), true},
		"two role selections (checked by assoc)": {append(append([]byte(nil), role...), role...), true},
		"two maximum lengths":                    {append(append([]byte(nil), maxLen...), maxLen...), false},
		"two user identities":                    {append(identity('u'), identity('v')...), false},
	} {
		t.Run(name, func(t *testing.T) {
			var ui UserInfo
			err := decodeUserInfo(tc.b, &ui)
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrMalformed)) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
