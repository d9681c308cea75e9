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
