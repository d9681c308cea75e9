package server

import (
	"context"
	"fmt"
	"strings"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/policy"
)

// The archive's service behind the policy. Negotiation already rejects the
// presentation contexts of services a peer may not use; these checks hold
// the line inside the association too (a storage context accepted for
// C-GET does not let the peer store), whatever the front end: each
// operation needs its permission in the principal the context carries.
// The bulk-query rule and the result cap are the archive's own (it reads
// the same principal).

// principalOf is the principal of an association: the registered peer (or
// the loopback any-AE opt-in) its admission granted, nil without a grant.
func principalOf(a *assoc.Association) *archive.Principal {
	if a == nil {
		return nil
	}
	g := a.Grant()
	if g == nil {
		return nil
	}
	p := &archive.Principal{Kind: archive.Peer, Name: g.AETitle, User: g.User, Grant: g, MaxResults: g.MaxResults}
	if g.Peer != nil {
		p.Deidentify = g.Peer.Deidentify
	}
	return p
}

// principalOf is the principal of an association (principalOf) with the
// de-identification profile of the user it authenticated as, in effect
// now (the users' profiles follow a reload).
func (s *Server) principalOf(a *assoc.Association) *archive.Principal {
	p := principalOf(a)
	if p != nil && p.User != "" {
		if t := s.tokens.Load(); t != nil {
			p.UserDeidentify = t.deid[p.User]
		}
	}
	return p
}

func notAuthorized(service string) error {
	return archive.Fail(archive.ErrNotAuthorized, "not authorized: this peer lacks "+policy.Required(service))
}

// authorized is the archive's service with the policy's permission checks.
type authorized struct{ svc archive.Service }

var _ archive.Service = authorized{}

func allowed(ctx context.Context, perm string) error {
	p := archive.PrincipalFrom(ctx)
	if p.Allows(perm) {
		return nil
	}
	if p != nil && p.Kind == archive.User {
		return archive.Fail(archive.ErrNotAuthorized, fmt.Sprintf("not authorized: %s not allowed to user %s (%s, roles %s)", perm, p.Name, credentialOf(ctx), strings.Join(p.Roles, ",")))
	}
	return notAuthorized(perm)
}

// credentialOf names what a user authenticated with, for refusals: a
// token's scope limits what its roles grant.
func credentialOf(ctx context.Context) string {
	g, ok := archive.PrincipalFrom(ctx).Grant.(userGrant)
	switch {
	case !ok:
		return "the credential"
	case g.session:
		return "the session"
	}
	return "the token (or its scope)"
}

func (g authorized) Echo(ctx context.Context) error {
	if err := allowed(ctx, archive.PermEcho); err != nil {
		return err
	}
	return g.svc.Echo(ctx)
}

func (g authorized) Store(ctx context.Context, r *archive.StoreRequest) (*archive.Stored, error) {
	if err := allowed(ctx, archive.PermStore); err != nil {
		return nil, err
	}
	return g.svc.Store(ctx, r)
}

func (g authorized) Query(ctx context.Context, q *archive.Query, emit func(archive.Match) error) error {
	if err := allowed(ctx, archive.PermFind); err != nil {
		return err
	}
	return g.svc.Query(ctx, q, emit)
}

func (g authorized) Retrieve(ctx context.Context, r *archive.RetrieveRequest, each func(*archive.Instance) error) error {
	perm := archive.PermGet
	if r.Destination != "" {
		perm = archive.PermMove
	}
	if err := allowed(ctx, perm); err != nil {
		return err
	}
	return g.svc.Retrieve(ctx, r, each)
}

func (g authorized) Destination(ctx context.Context, aeTitle string) (string, error) {
	return g.svc.Destination(ctx, aeTitle)
}
