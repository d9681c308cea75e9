package audit

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzQueueState: whatever DIR/forward/state.json holds, opening the queue
// neither panics nor trusts offsets that do not fit the log.
func FuzzQueueState(f *testing.F) {
	// Two unkeyed records then a keyed one (format 2): the queue reads
	// both formats.
	dir := f.TempDir()
	newLog(f, dir, 2)
	newKeyedLog(f, dir, filepath.Join(f.TempDir(), KeyFileName), 1)
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		f.Fatal(err)
	}
	size := fi.Size()
	lines := readLines(f, dir)
	var last Record
	if err := jsonUnmarshal(lines[2], &last); err != nil {
		f.Fatal(err)
	}
	first := int64(len(lines[0]) + 1)
	f.Add([]byte(`{"seq":0,"offset":0,"hash":"","frontier":0,"frontier_seq":0}`))
	f.Add([]byte(`{"seq":3,"offset":` + itoa(size) + `,"hash":"` + last.Hash + `","frontier":` + itoa(size) + `,"frontier_seq":3}`))
	f.Add([]byte(`{"seq":1,"offset":` + itoa(first) + `,"hash":"","frontier":` + itoa(size) + `,"frontier_seq":3,"gaps":[{"from":` + itoa(first) + `,"to":` + itoa(size) + `,"first":2,"last":3}]}`))
	f.Add([]byte(`{"seq":9,"offset":-5,"frontier":99999}`))
	f.Add([]byte(`not json`))
	f.Add([]byte(`{"seq":2,"offset":` + itoa(first+int64(len(lines[1])+1)) + `,"hash":"","frontier":` + itoa(size) + `,"frontier_seq":3}`))
	f.Fuzz(func(t *testing.T, state []byte) {
		qdir := filepath.Join(dir, QueueDir)
		os.MkdirAll(qdir, 0o700)
		if err := os.WriteFile(filepath.Join(qdir, StateFile), state, 0o600); err != nil {
			t.Fatal(err)
		}
		q, err := openQueue(dir, filepath.Join(dir, FileName), 1<<20, discard(), size, last.Seq, last.Hash, func() {})
		if err != nil {
			t.Fatal(err)
		}
		defer q.logf.Close()
		st := q.st
		if st.Offset < 0 || st.Offset > st.Frontier || st.Frontier != size || st.FrontierSeq != last.Seq {
			t.Fatalf("state %+v with a log of %d bytes", st, size)
		}
		for b, err := q.next(1 << 20); b != nil; b, err = q.next(1 << 20) {
			if err != nil {
				t.Fatal(err)
			}
			if b.end <= q.st.Offset || b.end > size {
				t.Fatalf("batch to %d from %d", b.end, q.st.Offset)
			}
			q.mu.Lock()
			q.st.Offset = b.end
			if b.gap != nil {
				q.st.Gaps = q.st.Gaps[1:]
			}
			q.mu.Unlock()
		}
	})
}
