package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ward-pacs/ward/store"
)

type fakeIndex struct{ store.Index }

func TestRegistry(t *testing.T) {
	ctx := context.Background()
	want := errors.New("opened")
	var gotDSN string
	store.RegisterIndex("test-registry", func(ctx context.Context, dsn string) (store.Index, error) {
		gotDSN = dsn
		return fakeIndex{}, want
	})
	if _, err := store.OpenIndex(ctx, "test-registry", "x?y"); !errors.Is(err, want) || gotDSN != "x?y" {
		t.Errorf("OpenIndex = %v with dsn %q", err, gotDSN)
	}
	if !slices.Contains(store.IndexBackends(), "test-registry") {
		t.Errorf("IndexBackends() = %v", store.IndexBackends())
	}
	if _, err := store.OpenIndex(ctx, "no-such", ""); err == nil {
		t.Error("OpenIndex(unknown) succeeded")
	}
	if _, err := store.OpenBlobs(ctx, "no-such", ""); err == nil {
		t.Error("OpenBlobs(unknown) succeeded")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("second RegisterIndex did not panic")
			}
		}()
		store.RegisterIndex("test-registry", func(context.Context, string) (store.Index, error) { return nil, nil })
	}()
	func() {
		defer func() {
			if recover() == nil {
				t.Error("RegisterBlobs(nil) did not panic")
			}
		}()
		store.RegisterBlobs("test-nil", nil)
	}()
}

func TestNormalizePN(t *testing.T) {
	for in, want := range map[string]string{
		"Dürer^Albrecht": "DÜRER^ALBRECHT",
		"doe^j=ドウ":       "DOE^J=ドウ",
		"":               "",
	} {
		if got := store.NormalizePN(in); got != want {
			t.Errorf("NormalizePN(%q) = %q, want %q", in, got, want)
		}
	}
}

// capIndex is an Index with one optional capability (Counter).
type capIndex struct {
	store.Index
	closed *bool
}

func (capIndex) Counts(context.Context) (store.Counts, error) { return store.Counts{}, nil }
func (c capIndex) Close() error                               { *c.closed = true; return nil }

// capBlobs are Blobs with two optional capabilities.
type capBlobs struct {
	store.Blobs
	closed *bool
	node   string
}

func (capBlobs) Space(context.Context) (int64, int64, error)                  { return 1, 2, nil }
func (capBlobs) RemoveUnfinished(context.Context) error                       { return nil }
func (b capBlobs) Close() error                                               { *b.closed = true; return nil }
func (b *capBlobs) SetNode(id string) error                                   { b.node = id; return nil }
func (b *capBlobs) WalkBlobs(context.Context, func(string, bool) error) error { return nil }

// sealed wraps Blobs and passes on none of their capabilities.
type sealed struct{ store.Blobs }

// TestOpen: Open resolves the capabilities of what it opened, once, with
// wrappers applied in order (a wrapper hides what it does not implement
// itself), gives the Blobs the node, and closes what it opened on error.
func TestOpen(t *testing.T) {
	ctx := context.Background()
	var ixClosed, bsClosed bool
	var bs *capBlobs
	store.RegisterIndex("test-open", func(context.Context, string) (store.Index, error) {
		return capIndex{closed: &ixClosed}, nil
	})
	store.RegisterBlobs("test-open", func(context.Context, string) (store.Blobs, error) {
		bs = &capBlobs{closed: &bsClosed}
		return bs, nil
	})
	store.RegisterBlobsWrapper("test-seal", func(_ context.Context, inner store.Blobs, dsn string) (store.Blobs, error) {
		if dsn == "fail" {
			return nil, errors.New("wrapper refused")
		}
		return sealed{inner}, nil
	})

	st, err := store.Open(ctx, store.Spec{Index: "test-open", Blobs: "test-open", Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Caps.Names(), []string{"BlobWalker", "Counter", "SpaceReporter", "UnfinishedRemover"}; !slices.Equal(got, want) {
		t.Errorf("Caps = %v, want %v", got, want)
	}
	if bs.node != "n1" || st.Node != "n1" {
		t.Errorf("node %q, store node %q, want n1", bs.node, st.Node)
	}
	st.Close()
	if !ixClosed || !bsClosed {
		t.Error("Close left a store open")
	}

	st, err = store.Open(ctx, store.Spec{Index: "test-open", Blobs: "test-open", Wrappers: []store.Wrapper{{Name: "test-seal"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Caps.Names(); !slices.Equal(got, []string{"Counter"}) {
		t.Errorf("Caps through a wrapper = %v, want the index's only", got)
	}
	if st.Node != store.DefaultNode || bs.node != store.DefaultNode {
		t.Errorf("node without one in the spec: %q, %q", st.Node, bs.node)
	}
	st.Close()

	for _, sp := range []store.Spec{
		{Index: "test-open", Blobs: "test-open", Wrappers: []store.Wrapper{{Name: "test-seal", DSN: "fail"}}},
		{Index: "test-open", Blobs: "test-open", Wrappers: []store.Wrapper{{Name: "no-such"}}},
		{Index: "test-open", Blobs: "no-such"},
	} {
		ixClosed, bsClosed = false, false
		bs = nil
		if _, err := store.Open(ctx, sp); err == nil {
			t.Errorf("Open(%+v) succeeded", sp)
		}
		if !ixClosed || (bs != nil && !bsClosed) {
			t.Errorf("Open(%+v) failed and left a store open", sp)
		}
	}
	if _, err := store.Open(ctx, store.Spec{}); err == nil {
		t.Error("Open of an empty spec succeeded")
	}
}
