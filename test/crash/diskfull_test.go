package crash

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tinyFS mounts a 2 MiB tmpfs on a temporary directory and unmounts it when
// the test ends. Without root it skips (fails under CI=true, which runs as
// root).
func tinyFS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=2m,mode=0700"); err != nil {
		skipOrFail(t, "cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// TestDiskFull: `ward serve` whose data directory is a 2 MiB tmpfs is fed
// by storescu until the disk is full. The store that does not fit is
// refused with 0xA700 (Refused: Out of resources) and an Error Comment
// saying "no space left on device"; nothing half-written is visible (tmp/
// and pending/ empty, index and objects/ agree); once space is freed the
// same objects are stored. Once with the sqlite index on the full disk
// (the default layout: either the blob or the index fills it), once with
// the index elsewhere (only the blob store fills); both with the free-space
// reserve off, so that the disk does fill. A third time with a reserve of
// 600 KiB (on this 2 MiB disk; the default is 1 GiB, or 5 % of a small
// disk, which here the index's write-ahead log alone outgrows): the store
// that would eat into it is refused the same way before anything is
// written, saying so.
func TestDiskFull(t *testing.T) {
	requireTool(t, "storescu")
	for _, tc := range []struct {
		name                 string
		indexOnDisk, reserve bool
		comment              string
	}{
		{"index on the full disk", true, false, "no space left on device"},
		{"index elsewhere", false, false, "no space left on device"},
		{"reserve", true, true, "KiB reserve (min_free)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tinyFS(t)
			work := t.TempDir()
			indexPath := filepath.Join(dir, "index.db")
			toml := "[storage]\nmin_free = \"0\"\n"
			if tc.reserve {
				toml = "[storage]\nmin_free = \"600KiB\"\n"
			}
			if !tc.indexOnDisk {
				indexPath = filepath.Join(work, "index.db")
				toml += fmt.Sprintf("index = \"sqlite\"\nindex_dsn = %q\n", indexPath)
			}
			cfg := filepath.Join(work, "ward.toml")
			if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
				t.Fatal(err)
			}
			extra := []string{"--config", cfg}
			w := startWard(t, dir, freePort(t), extra...)
			// Ballast leaves room for about a dozen objects; removing it
			// is "freeing space".
			ballast := filepath.Join(dir, "ballast")
			if err := os.WriteFile(ballast, make([]byte, 1<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			batch := makeInstances(t, filepath.Join(work, "in"), fmt.Sprintf("1.2.826.0.1.3680043.10.543.8.%d", time.Now().UnixNano()%1e9), 80)
			byPath := map[string]*instance{}
			var paths []string
			for _, in := range batch {
				byPath[in.path] = in
				paths = append(paths, in.path)
			}
			// -d (debug) prints the response's Error Comment; storescu
			// releases the association after a refused store.
			s := startStorescu(t, w.Port, paths, nil, "-d")
			s.wait(t, 30*time.Second)
			out := s.log.String()
			acked := map[string]*instance{}
			for _, p := range s.log.ackedFiles() {
				acked[byPath[p].uid] = byPath[p]
			}
			if len(acked) == 0 || len(acked) == len(batch) {
				t.Fatalf("%d of %d stored before the disk was full; want some, not all:\n%s", len(acked), len(batch), tail(out, 40))
			}
			if !strings.Contains(out, "DIMSE Status                  : 0xa700: Refused: Out of resources") {
				t.Fatalf("no A700 response in storescu's output:\n%s", tail(out, 40))
			}
			comment := ""
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, "ErrorComment") {
					comment = line
				}
			}
			// The audit log shares the full disk: when its append fails
			// first, the stores after it are refused for that reason.
			if !strings.Contains(comment, tc.comment) && !strings.Contains(comment, "audit trail cannot be written") {
				t.Errorf("error comment %q does not say %q", comment, tc.comment)
			}
			t.Logf("%d stored before the disk was full; refused: %s", len(acked), strings.TrimSpace(comment))

			// Nothing half-written is visible while Ward runs.
			checkNothingHalfWritten(t, dir)

			// Free space: the rest is stored (once Ward's reading of the free
			// space, trusted for a second, is renewed).
			if err := os.Remove(ballast); err != nil {
				t.Fatal(err)
			}
			if tc.reserve {
				time.Sleep(1100 * time.Millisecond)
			}
			var rest []string
			for _, in := range batch {
				if acked[in.uid] == nil {
					rest = append(rest, in.path)
				}
			}
			rest = rest[:min(len(rest), 8)]
			s = startStorescu(t, w.Port, rest, nil)
			s.wait(t, 30*time.Second)
			got := s.log.ackedFiles()
			if len(got) != len(rest) {
				t.Fatalf("after freeing space %d of %d stored:\n%s", len(got), len(rest), tail(s.log.String(), 40))
			}
			for _, p := range got {
				acked[byPath[p].uid] = byPath[p]
			}

			if err, _ := w.Stop(t, syscall.SIGTERM, 15*time.Second); err != nil {
				t.Fatalf("ward exit: %v", err)
			}
			if n := verifyIndex(t, dir, indexPath, acked); n != int64(len(acked)) {
				t.Errorf("%d instances indexed, %d acknowledged", n, len(acked))
			}
		})
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	var keep []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "XMIT") {
			keep = append(keep, l)
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "\n")
}

// checkNothingHalfWritten checks a running Ward's blob directory once the
// work it does after responses (publishing) has drained: tmp/ is empty and
// pending/ holds no bytes. Empty files may be there: fsblob creates slots
// for new blobs ahead of time (and removes unused ones at Close).
func checkNothingHalfWritten(t *testing.T, dir string) {
	t.Helper()
	var bad []string
	deadline := time.Now().Add(3 * time.Second)
	for {
		bad = bad[:0]
		for _, f := range files(t, filepath.Join(dir, "tmp")) {
			bad = append(bad, "tmp/"+f)
		}
		for _, f := range files(t, filepath.Join(dir, "pending")) {
			if fi, err := os.Stat(filepath.Join(dir, "pending", f)); err == nil && fi.Size() > 0 {
				bad = append(bad, "pending/"+f)
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("files left after refused stores: %v", bad)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
