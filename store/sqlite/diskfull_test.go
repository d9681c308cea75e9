package sqlite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
)

// TestDiskFull fills a tiny tmpfs under the database: Puts fail with an
// error and leave nothing behind, concurrent Puts included, and once space
// is freed Put works again.
func TestDiskFull(t *testing.T) {
	testci.RequireRoot(t, "mounting a tmpfs")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=1m,mode=0700"); err != nil {
		testci.SkipOrFail(t, "cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	ctx := context.Background()
	db := openTest(t, filepath.Join(dir, "ward.db"))
	defer db.Close()

	// Fill the disk with junk, then with instances until Puts fail.
	junk := filepath.Join(dir, "junk")
	f, err := os.Create(junk)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 200<<10))
	f.Close()

	var (
		mu     sync.Mutex
		stored []string
		failed []string
		wg     sync.WaitGroup
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				in := storetest.Sample(g*10000+i, i/20, g*1000+i/5)
				_, err := db.Put(ctx, in)
				mu.Lock()
				if err != nil {
					failed = append(failed, in.SOPInstanceUID)
				} else {
					stored = append(stored, in.SOPInstanceUID)
				}
				mu.Unlock()
				if err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						t.Errorf("Put error = %v, want disk full", err)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(failed) == 0 {
		t.Fatal("no Put failed on a full disk")
	}
	t.Logf("%d Puts stored, %d failed", len(stored), len(failed))
	for _, uid := range failed {
		if _, err := db.Get(ctx, uid); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("failed Put of %s visible: %v", uid, err)
		}
	}
	for _, uid := range stored {
		if _, err := db.Get(ctx, uid); err != nil {
			t.Errorf("stored %s: %v", uid, err)
		}
	}
	if n, err := db.CountInstances(ctx); err != nil || n != int64(len(stored)) {
		t.Errorf("CountInstances = %d, %v; want %d", n, err, len(stored))
	}

	os.Remove(junk)
	if _, err := db.Put(ctx, storetest.Sample(999999, 1, 1)); err != nil {
		t.Fatalf("Put after freeing space: %v", err)
	}
	checkCounters(t, db)
}
