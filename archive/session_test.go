package archive_test

import (
	"context"
	"testing"

	"github.com/ward-pacs/ward/archive"
)

// TestSession: a value is made once per session and key, its end runs
// once when the session ends, in the order the values were made; an
// ended or missing session has no values.
func TestSession(t *testing.T) {
	ctx, s := archive.WithSession(context.Background())
	if archive.SessionFrom(ctx) != s || archive.SessionFrom(context.Background()) != nil {
		t.Fatal("SessionFrom")
	}
	var ended []string
	made := 0
	mk := func(name string) func() (any, func()) {
		return func() (any, func()) { made++; return name, func() { ended = append(ended, name) } }
	}
	type k1 struct{}
	type k2 struct{}
	if v := s.Value(k1{}, mk("a")); v != "a" || s.Value(k1{}, mk("x")) != "a" || s.Value(k2{}, mk("b")) != "b" || made != 2 {
		t.Fatalf("values: made %d", made)
	}
	s.End()
	s.End()
	if len(ended) != 2 || ended[0] != "a" || ended[1] != "b" {
		t.Errorf("ends: %v", ended)
	}
	if s.Value(k1{}, mk("c")) != nil || archive.SessionFrom(context.Background()).Value(k1{}, mk("d")) != nil || made != 2 {
		t.Error("a value after the end, or without a session")
	}
	o := archive.Origin{AETitle: "MODALITY", Addr: "127.0.0.1:1"}
	if archive.OriginFrom(archive.WithOrigin(context.Background(), o)) != o || archive.OriginFrom(context.Background()) != (archive.Origin{}) {
		t.Error("origin")
	}
}
