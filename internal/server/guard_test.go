package server

import (
	"context"
	"errors"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/policy"
)

// TestPermissionNames: the archive checks the permissions policy grants,
// by the same names.
func TestPermissionNames(t *testing.T) {
	for _, c := range []struct {
		archive string
		policy  policy.Permission
	}{
		{archive.PermEcho, policy.Echo}, {archive.PermStore, policy.Store}, {archive.PermFind, policy.Find},
		{archive.PermMove, policy.Move}, {archive.PermGet, policy.Get}, {archive.PermBulkQuery, policy.BulkQuery},
	} {
		if c.archive != string(c.policy) {
			t.Errorf("archive names %q what policy names %q", c.archive, c.policy)
		}
	}
	var _ archive.Grant = (*policy.Grant)(nil)
}

type okService struct{ calls int }

func (s *okService) Echo(context.Context) error { s.calls++; return nil }
func (s *okService) Store(context.Context, *archive.StoreRequest) (*archive.Stored, error) {
	s.calls++
	return &archive.Stored{}, nil
}
func (s *okService) Query(context.Context, *archive.Query, func(archive.Match) error) error {
	s.calls++
	return nil
}
func (s *okService) Retrieve(context.Context, *archive.RetrieveRequest, func(*archive.Instance) error) error {
	s.calls++
	return nil
}
func (s *okService) Destination(context.Context, string) (string, error) { return "", nil }

// TestAuthorized: each operation of the service needs its permission in
// the context's principal; none without a principal.
func TestAuthorized(t *testing.T) {
	ops := map[string]func(ctx context.Context, g authorized) error{
		archive.PermEcho: func(ctx context.Context, g authorized) error { return g.Echo(ctx) },
		archive.PermStore: func(ctx context.Context, g authorized) error {
			_, err := g.Store(ctx, &archive.StoreRequest{})
			return err
		},
		archive.PermFind: func(ctx context.Context, g authorized) error { return g.Query(ctx, &archive.Query{}, nil) },
		archive.PermMove: func(ctx context.Context, g authorized) error {
			return g.Retrieve(ctx, &archive.RetrieveRequest{Destination: "DEST"}, nil)
		},
		archive.PermGet: func(ctx context.Context, g authorized) error { return g.Retrieve(ctx, &archive.RetrieveRequest{}, nil) },
	}
	for perm, op := range ops {
		t.Run(perm, func(t *testing.T) {
			svc := &okService{}
			g := authorized{svc}
			for _, ctx := range []context.Context{
				context.Background(),
				archive.WithPrincipal(context.Background(), &archive.Principal{Kind: archive.Peer}),
				archive.WithPrincipal(context.Background(), &archive.Principal{Kind: archive.Peer, Grant: archive.Permissions{"other": true}}),
			} {
				err := op(ctx, g)
				var e *archive.Error
				if !errors.Is(err, archive.ErrNotAuthorized) || !errors.As(err, &e) || e.Comment != "not authorized: this peer lacks the "+perm+" permission" {
					t.Errorf("without %s: %v", perm, err)
				}
			}
			ctx := archive.WithPrincipal(context.Background(), &archive.Principal{Kind: archive.User, Grant: archive.Permissions{perm: true}})
			if err := op(ctx, g); err != nil || svc.calls != 1 {
				t.Errorf("with %s: %v, %d calls", perm, err, svc.calls)
			}
		})
	}
}
