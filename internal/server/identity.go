package server

import (
	"context"

	"github.com/ward-pacs/ward/policy"
	"github.com/ward-pacs/ward/policy/identity"
)

// identityVerifier builds the user identity verifier of settings: the
// users' passcode hashes and, with a key set, the JWT settings.
func (s *Server) identityVerifier(settings identity.Settings) (policy.Identity, error) {
	v, err := identity.New(settings, s.Logger)
	if err != nil {
		return nil, err
	}
	return verifier{v}, nil
}

type verifier struct{ v *identity.Verifier }

func (v verifier) Verify(ctx context.Context, id *policy.Credential) (string, []byte, error) {
	r, err := v.v.Verify(ctx, id)
	if err != nil {
		return "", nil, err
	}
	return r.User, r.Response, nil
}
