package s3blob

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/store/storetest"
	"github.com/ward-pacs/ward/test/harness"
)

// The client's own cost per object against versitygw (docs/PERFORMANCE.md,
// "S3 client cost per object"):
//
//	WARD_BENCH_DIR=/var/tmp go test -run '^$' -bench 'Put512K|Get512K' -benchmem -benchtime 2000x ./store/s3blob
//
// Besides ns/op (wall time, which includes versitygw's), each reports
// cpu-µs/op: the CPU time (user + system) of the test process alone, that
// is Ward's side of the exchange, the server being another process; and
// server-cpu-µs/op, versitygw's (from /proc, in steps of 10 ms).

const benchSize = 512 << 10

func benchStore(b *testing.B) *Store {
	b.Helper()
	dir := b.TempDir()
	if d := os.Getenv("WARD_BENCH_DIR"); d != "" {
		var err error
		if dir, err = os.MkdirTemp(d, "s3bench"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	s := harness.StartS3Dir(b, dir)
	s.SetEnv(b)
	st, err := Open(context.Background(), s.URL(s.Bucket(b), "p"))
	if err != nil {
		b.Fatal(err)
	}
	if err := st.SetNode("n1"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// putBlob stores data as a new blob the way the archive does: Create with
// a key the store chooses, writes of 32 KiB, Commit, Publish.
func putBlob(b *testing.B, st *Store, data []byte) string {
	ctx := context.Background()
	w, err := st.Create(ctx, "")
	if err != nil {
		b.Fatal(err)
	}
	for p := data; len(p) > 0; {
		n := min(len(p), 32<<10)
		if _, err := w.Write(p[:n]); err != nil {
			b.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Commit(); err != nil {
		b.Fatal(err)
	}
	if err := st.Publish(ctx, w.Key()); err != nil {
		b.Fatal(err)
	}
	return w.Key()
}

// processCPU is the CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU is the CPU time of versitygw, the child process of this one
// of that name, or -1 if it is not found.
func serverCPU() time.Duration {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid … utime stime: fields 14 and 15.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || !bytes.HasSuffix(b[:i], []byte("(versitygw")) {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 || f[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
	}
	return -1
}

type cpuMeter struct{ self, server time.Duration }

func startCPU(b *testing.B) cpuMeter { return cpuMeter{processCPU(b), serverCPU()} }

func (m cpuMeter) report(b *testing.B) {
	b.ReportMetric(float64((processCPU(b)-m.self).Microseconds())/float64(b.N), "cpu-µs/op")
	if m.server >= 0 {
		b.ReportMetric(float64((serverCPU()-m.server).Microseconds())/float64(b.N), "server-cpu-µs/op")
	}
}

// BenchmarkPut512K: Create + Write + Commit + Publish of 512 KiB.
func BenchmarkPut512K(b *testing.B) {
	st := benchStore(b)
	data := storetest.Data("bench", benchSize)
	putBlob(b, st, data) // the connections open
	b.SetBytes(benchSize)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU(b)
	for i := 0; i < b.N; i++ {
		putBlob(b, st, data)
	}
	b.StopTimer()
	cpu.report(b)
}

// BenchmarkGet512K: Open + read to the end + Close of a 512 KiB blob.
func BenchmarkGet512K(b *testing.B) {
	st := benchStore(b)
	data := storetest.Data("bench", benchSize)
	keys := make([]string, 16)
	for i := range keys {
		keys[i] = putBlob(b, st, data)
	}
	buf := make([]byte, 32<<10)
	get := func(key string) {
		r, err := st.Open(context.Background(), key)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, buf)
		if err != nil || n != benchSize {
			b.Fatalf("read %d bytes: %v", n, err)
		}
		r.Close()
	}
	get(keys[0])
	b.SetBytes(benchSize)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU(b)
	for i := 0; i < b.N; i++ {
		get(keys[i%len(keys)])
	}
	b.StopTimer()
	cpu.report(b)
}
