package sqlite_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/fsblob"
	"github.com/ward-pacs/ward/store/sqlite"
	"github.com/ward-pacs/ward/store/storetest"
)

func openPair(t testing.TB, dir string) (*sqlite.DB, *fsblob.Store) {
	t.Helper()
	ctx := context.Background()
	ix, err := sqlite.Open(ctx, filepath.Join(dir, "index", "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	bs, err := fsblob.Open(ctx, filepath.Join(dir, "blobs"))
	if err != nil {
		ix.Close()
		t.Fatal(err)
	}
	return ix, bs
}

func TestRecovery(t *testing.T) {
	storetest.TestRecovery(t, func(t *testing.T) storetest.Reopen {
		dir := t.TempDir()
		return func(t *testing.T) (store.Index, store.Blobs) { return openPair(t, dir) }
	})
}

const crashEnv = "WARD_STORE_CRASH_CHILD"

// crashData is the content of an instance's blob, so the parent can check it.
func crashData(key string) []byte { return storetest.Data(key, 700+len(key)*31) }

// TestCrashChild is the child process of TestCrash: it stores instances from
// several goroutines until killed, printing "ack <uid> <key>" after each
// one is durable (blob committed, index row committed, blob published).
// Every fifth instance re-sends an earlier one, replacing its blob.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("child of TestCrash only")
	}
	ctx := context.Background()
	ix, bs := openPair(t, dir)
	if err := bs.Recover(ctx, storetest.Keep(ctx, ix)); err != nil {
		t.Fatal(err)
	}
	base, _ := strconv.Atoi(os.Getenv(crashEnv + "_BASE"))
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	ack := func(uid, key string) {
		mu.Lock()
		fmt.Fprintf(out, "ack %s %s\n", uid, key)
		out.Flush()
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				n := base + g*1_000_000 + i
				if i%5 == 4 {
					n -= 3 // replace an earlier instance
				}
				in := storetest.Sample(n, n/50, n/10)
				key := in.BlobKey
				if g%2 == 0 {
					key = "" // half the writers take the backend-chosen (slot) path
				}
				w, err := bs.Create(ctx, key)
				if err != nil {
					panic(err)
				}
				in.BlobKey = w.Key()
				data := crashData(in.BlobKey)
				if _, err := w.Write(data); err != nil {
					panic(err)
				}
				if err := w.Commit(); err != nil {
					panic(err)
				}
				in.Size = int64(len(data))
				res, err := ix.Put(ctx, in)
				if err != nil {
					panic(err)
				}
				if err := bs.Publish(ctx, in.BlobKey); err != nil {
					panic(err)
				}
				ack(in.SOPInstanceUID, in.BlobKey)
				if res.OldBlobKey != "" && i%2 == 0 {
					if err := storetest.DeletePending(ctx, ix, bs); err != nil {
						panic(err)
					}
				}
			}
		}()
	}
	wg.Wait()
}

// TestCrash kills a process storing instances at a random moment, several
// times over the same store, and checks after each crash that every
// acknowledged instance is indexed with its blob readable and that no blob
// is left that the index does not reference (or has recorded for deletion).
//
// SIGKILL loses what the process had not yet handed to the kernel; it does
// not simulate power loss (that relies on the fsyncs, see fsblob and the
// synchronous=FULL pragma).
func TestCrash(t *testing.T) {
	if os.Getenv(crashEnv) != "" {
		t.Skip("in child")
	}
	if testing.Short() {
		t.Skip("short")
	}
	ctx := context.Background()
	dir := t.TempDir()
	acked := map[string]string{} // uid -> blob key of the last acknowledgement
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, fmt.Sprintf("%s_BASE=%d", crashEnv, round*10_000_000))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			io.Copy(io.Discard, stdout)
		}()
		// The kill is armed at the first acknowledgement, so a slow start
		// on a loaded machine never yields an empty round.
		var kill <-chan time.Time
		n := 0
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				if f := strings.Fields(l); len(f) == 3 && f[0] == "ack" {
					acked[f[1]] = f[2]
					n++
					if n == 1 {
						kill = time.After(time.Duration(50+rand.IntN(600)) * time.Millisecond)
					}
				}
			case <-kill:
				cmd.Process.Signal(syscall.SIGKILL)
				kill = nil
			}
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: child did not die by signal: %v\n%s", round, err, stderr.String())
		}
		t.Logf("round %d: %d acknowledged before SIGKILL (%d distinct instances so far)", round, n, len(acked))
		if n == 0 {
			t.Fatalf("round %d: no acknowledgement\n%s", round, stderr.String())
		}
		verify(t, ctx, dir, acked)
	}
}

func verify(t *testing.T, ctx context.Context, dir string, acked map[string]string) {
	t.Helper()
	ix, bs := openPair(t, dir)
	defer ix.Close()
	defer bs.Close()
	if err := bs.Recover(ctx, storetest.Keep(ctx, ix)); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	for uid, key := range acked {
		in, err := ix.Get(ctx, uid)
		if err != nil {
			t.Fatalf("acknowledged %s: %v", uid, err)
		}
		// A later, unacknowledged re-send may have replaced the blob.
		if in.BlobKey != key {
			acked[uid] = in.BlobKey
		}
		r, err := bs.Open(ctx, in.BlobKey)
		if err != nil {
			t.Fatalf("blob of acknowledged %s: %v", uid, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(got) != string(crashData(in.BlobKey)) || int64(len(got)) != in.Size {
			t.Fatalf("blob of %s: %d bytes, %v", uid, len(got), err)
		}
	}
	// Nothing left in tmp/ or pending/, nothing unreferenced in objects/.
	for _, sub := range []string{"tmp", "pending"} {
		ents, err := os.ReadDir(filepath.Join(dir, "blobs", sub))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			t.Errorf("%d files left in %s/ after Recover", len(ents), sub)
		}
	}
	pend, err := ix.PendingBlobDeletes(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	pending := map[string]bool{}
	for _, k := range pend {
		pending[k] = true
	}
	files := 0
	err = filepath.WalkDir(filepath.Join(dir, "blobs", "objects"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		key := strings.TrimSuffix(d.Name(), ".dcm")
		used, err := ix.HasBlob(ctx, key)
		if err != nil {
			return err
		}
		if !used && !pending[key] {
			t.Errorf("unreferenced blob %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := ix.CountInstances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if files < int(n) {
		t.Errorf("%d blob files for %d instances", files, n)
	}
	// Once the recorded deletes are done, every blob is referenced.
	if err := storetest.DeletePending(ctx, ix, bs); err != nil {
		t.Fatal(err)
	}
	if err := storetest.CheckNoOrphans(ctx, ix, bs); err != nil {
		t.Error(err)
	}
}
