package server

import (
	"context"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/policy"
	"github.com/ward-pacs/ward/policy/identity"
)

// identityVerifier builds the user identity verifier of c: its users'
// passcode hashes and, with [identity] jwks, the JWT key set.
func (s *Server) identityVerifier(c *config.Config) (policy.Identity, error) {
	v, err := identity.New(c, s.Logger)
	if err != nil {
		return nil, err
	}
	return verifier{v}, nil
}

type verifier struct{ v *identity.Verifier }

func (v verifier) Verify(ctx context.Context, id *pdu.UserIdentity) (string, []byte, error) {
	r, err := v.v.Verify(ctx, id)
	if err != nil {
		return "", nil, err
	}
	return r.User, r.Response, nil
}
