package server

import (
	"context"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/policy"
)

// The DIMSE services behind the policy. Negotiation already rejects the
// presentation contexts of services a peer may not use; these checks hold
// the line inside the association too (a storage context accepted for
// C-GET does not let the peer store), and carry the peer's query limits
// to the archive.

func grantOf(a *assoc.Association) *policy.Grant {
	if a == nil {
		return nil
	}
	g, _ := a.Auth().(*policy.Grant)
	return g
}

func notAuthorized(service string) error {
	return &dimse.StatusError{Status: dimse.StatusNotAuthorized, Comment: "not authorized: this peer lacks " + policy.Required(service)}
}

type guardEcho struct{ h dimse.Echoer }

func (g guardEcho) Echo(ctx context.Context, r *dimse.Request) error {
	if !grantOf(r.Assoc).Allows(policy.Echo) {
		return notAuthorized(policy.Echo)
	}
	return g.h.Echo(ctx, r)
}

type guardStore struct{ h dimse.Storer }

func (g guardStore) Store(ctx context.Context, r *dimse.StoreRequest) error {
	if !grantOf(r.Assoc).Allows(policy.Store) {
		return notAuthorized(policy.Store)
	}
	return g.h.Store(ctx, r)
}

type guardFind struct{ h dimse.Finder }

func (g guardFind) Find(ctx context.Context, r *dimse.FindRequest, emit func(*dicom.DataSet) error) error {
	gr := grantOf(r.Assoc)
	if !gr.Allows(policy.Find) {
		return notAuthorized(policy.Find)
	}
	// The bulk-query rule itself is the archive's (archive.JudgeQuery):
	// the grant only says whether this peer has the permission.
	ctx = archive.WithAccess(ctx, archive.Access{MaxResults: gr.MaxResults, Bulk: gr.Allows(policy.BulkQuery)})
	return g.h.Find(ctx, r, emit)
}

type guardRetrieve struct{ h dimse.Retriever }

func (g guardRetrieve) Retrieve(ctx context.Context, r *dimse.RetrieveRequest) ([]dimse.Instance, error) {
	svc := policy.Get
	if r.MoveDestination != "" || (r.Command != nil && r.Command.CommandField == dimse.CMoveRQ) {
		svc = policy.Move
	}
	if !grantOf(r.Assoc).Allows(svc) {
		return nil, notAuthorized(svc)
	}
	return g.h.Retrieve(ctx, r)
}

func (g guardRetrieve) Destination(ctx context.Context, aeTitle string) (string, error) {
	return g.h.Destination(ctx, aeTitle)
}
