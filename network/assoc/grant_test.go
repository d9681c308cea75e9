package assoc

import (
	"testing"

	"github.com/ward-pacs/ward/policy"
)

// TestGrant: the admission's grant travels with the association typed,
// and an association without one has none.
func TestGrant(t *testing.T) {
	a := &Association{}
	if a.Grant() != nil {
		t.Fatal("a grant before SetGrant")
	}
	g := &policy.Grant{AETitle: "CT"}
	a.SetGrant(g)
	if a.Grant() != g {
		t.Fatal("SetGrant's grant not returned")
	}
}
