package fsblob

import (
	"context"
	"testing"
)

// BenchmarkMakeSlots measures making slot files, the refiller's work (one
// op is one slot). Its cost depends on the filesystem's state: run it where
// the store lives, e.g. TMPDIR=/tmp/bench.
//
//	TMPDIR=/work go test ./store/fsblob -run '^$' -bench MakeSlots -benchtime 2048x
func BenchmarkMakeSlots(b *testing.B) {
	s, err := Open(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ResetTimer()
	for n := 0; n < b.N; n += slotBatch {
		batch, err := s.makeSlots(min(slotBatch, b.N-n))
		if err != nil {
			b.Fatal(err)
		}
		for _, sl := range batch {
			sl.f.Close()
		}
	}
}
