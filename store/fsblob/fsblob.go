// Package fsblob stores blobs as files in a directory. It registers the
// "fs" Blobs backend; the data source name is the directory, created if
// missing.
//
// Layout under the directory:
//
//	tmp/<key>.dcm                   being written (removed by Recover)
//	tmp/<node>/<key>.dcm            being written by node (store.NodeScoper)
//	pending/<s1><s2>/<key>.dcm      committed, not yet published
//	objects/<s1>/<s2>/<key>.dcm     published
//
// where s1 and s2 are the key's first and second pairs of characters, with
// '.' replaced by '_' and short keys padded with '_' (so a shard directory
// is never "." or ".."). tmp -> pending is a rename followed by an fsync of
// the pending shard directory, so a committed blob is durable there;
// pending -> objects is a rename (atomic), so after a crash each blob is in
// exactly one of the three states. Blob bytes are written by the caller
// (DICOM Part 10); this package never parses them.
//
// Create with an empty key takes the fast path: the store chooses the key
// and hands out a "slot", an empty file created ahead of time directly in
// pending/ whose directory entry was already made durable (one directory
// fsync for a batch of slots). Committing it is then a single fsync of the
// file: no create, rename or directory fsync on the C-STORE's critical path.
// A slot left unused or half-written by a crash is in pending/ without an
// index row, so Recover removes it like any unreferenced pending blob.
//
// The slots of one batch share a key prefix, so they share a pending shard
// directory (made for the batch, removed once the batch has left it) and
// an objects/ shard directory. On ext4, pending/ carries the "top of a
// directory tree" flag (chattr +T), so each batch directory, and with it
// the inodes of its files, is placed in a block group chosen afresh. Files
// created next to many recently deleted ones are slow to create on an ext4
// without a journal: the allocator skips inodes freed in the last minutes
// one at a time, reading each from the inode table.
//
// Several nodes may share the directory (store.NodeScoper): each writes in
// tmp/<node>/, and the keys the store chooses for a node end in ".<node>".
// Recover then removes only what this node left: its own unfinished and
// unreferenced pending blobs; another node's are left to that node's
// restart, and an unreferenced pending blob of a key given by a caller
// (no node in it) only once it is older than NodeGuard. The directory is
// shared once another node has a tmp/<node>/; until then, and without
// SetNode, the store serves one node: Recover decides on every pending
// blob, whatever node its key names, and without SetNode removes every
// unfinished one. A node retired for good leaves
// tmp/<node>/: remove it by hand, with its blobs, once it is stopped.
package fsblob

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-pacs/ward/durable"
	"github.com/ward-pacs/ward/store"
)

func init() {
	store.RegisterBlobs("fs", func(ctx context.Context, dsn string) (store.Blobs, error) {
		return Open(ctx, dsn)
	})
}

const ext = ".dcm"

// MaxKeyLen is the longest key accepted.
const MaxKeyLen = 128

// Store is a filesystem Blobs backend. It is safe for concurrent use.
type Store struct {
	dir     string
	objects string
	pending string
	tmp     string
	closed  atomic.Bool

	// node is the node ID given by SetNode ("" without one); tmpDir is
	// where this node writes: tmp/ or tmp/<node>/.
	node   string
	tmpDir string

	dirs sync.Map // shard directories known to exist (and be durable)

	// pendingMu orders making and filling a pending shard directory
	// against removing it once empty; batches holds the shard names of
	// the slot batches being made.
	pendingMu sync.Mutex
	batches   map[string]bool

	slotOnce sync.Once
	slots    chan *slot
	unused   sync.Map // key -> struct{}: slots created and not yet handed out
	refill   chan struct{}
	stop     chan struct{}
	refiller sync.WaitGroup
}

// slot is a pre-created empty file in pending/.
type slot struct {
	key string
	f   *os.File
}

// Slot pool size: enough to absorb a burst between two refills.
const (
	slotPool  = 256
	slotBatch = 64
)

var (
	_ store.Blobs             = (*Store)(nil)
	_ store.BlobWalker        = (*Store)(nil)
	_ store.BlobWriter        = (*writer)(nil)
	_ store.DurableNamer      = (*writer)(nil)
	_ store.IntentWriter      = (*writer)(nil)
	_ store.SpaceReporter     = (*Store)(nil)
	_ store.IntentReader      = (*Store)(nil)
	_ store.BatchPublisher    = (*Store)(nil)
	_ store.UnfinishedRemover = (*Store)(nil)
	_ store.NodeScoper        = (*Store)(nil)
)

// NodeGuard is how old an unreferenced pending blob whose key names no
// node must be before Recover removes it from a directory several nodes
// share: another node may be between its Commit and its index row.
const NodeGuard = time.Hour

var errNoIntent = fmt.Errorf("fsblob: no intent record: %w", store.ErrNotFound)

// Open opens (creating if needed) the blob directory dir.
func Open(ctx context.Context, dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("fsblob: empty directory name")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fsblob: %w", err)
	}
	s := &Store{
		dir:     abs,
		objects: filepath.Join(abs, "objects"),
		pending: filepath.Join(abs, "pending"),
		tmp:     filepath.Join(abs, "tmp"),
		batches: map[string]bool{},
	}
	s.tmpDir = s.tmp
	for _, d := range []string{s.objects, s.pending, s.tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("fsblob: open: %w", err)
		}
	}
	// A placement hint only: where it cannot be set, nothing changes.
	_ = spreadSubdirs(s.pending)
	for _, d := range []string{abs, filepath.Dir(abs)} {
		if err := durable.Sync(d); err != nil {
			return nil, fmt.Errorf("fsblob: open: %w", err)
		}
	}
	return s, nil
}

// ValidKey reports whether key matches [A-Za-z0-9._-]{1,128}.
func ValidKey(key string) bool {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func checkKey(key string) error {
	if !ValidKey(key) {
		return fmt.Errorf("fsblob: key %q: %w", key, store.ErrInvalidKey)
	}
	return nil
}

func shard(key string) (string, string) {
	b := []byte((key + "____")[:4])
	for i, c := range b {
		if c == '.' {
			b[i] = '_'
		}
	}
	return string(b[:2]), string(b[2:4])
}

func (s *Store) objectDir(key string) string {
	a, b := shard(key)
	return filepath.Join(s.objects, a, b)
}

func (s *Store) objectPath(key string) string {
	return filepath.Join(s.objectDir(key), key+ext)
}

// pendingDir is the pending shard directory of key.
func (s *Store) pendingDir(key string) string {
	a, b := shard(key)
	return filepath.Join(s.pending, a+b)
}

func (s *Store) pendingPath(key string) string {
	return filepath.Join(s.pendingDir(key), key+ext)
}
func (s *Store) tmpPath(key string) string { return filepath.Join(s.tmpDir, key+ext) }

// SetNode implements store.NodeScoper: id writes in tmp/<id>/ and the keys
// the store chooses end in ".<id>". id is 1 to 64 of A-Z a-z 0-9 _ -.
func (s *Store) SetNode(id string) error {
	if len(id) == 0 || len(id) > 64 || strings.ContainsAny(id, ".") || !ValidKey(id) {
		return fmt.Errorf("fsblob: %q cannot name a node", id)
	}
	dir := filepath.Join(s.tmp, id)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("fsblob: %w", err)
	}
	if err := durable.Sync(s.tmp); err != nil {
		return fmt.Errorf("fsblob: %w", err)
	}
	s.node, s.tmpDir = id, dir
	return nil
}

// ownKey makes a key the store chose its node's.
func (s *Store) ownKey(key string) string {
	if s.node == "" {
		return key
	}
	return key + "." + s.node
}

// keyNode is the node a key the store chose belongs to: "" for a key a
// caller gave or one chosen without a node.
func keyNode(key string) string {
	if len(key) > 33 && key[32] == '.' {
		return key[33:]
	}
	return ""
}

func (s *Store) check(key string) error {
	if s.closed.Load() {
		return fmt.Errorf("fsblob: %w", store.ErrClosed)
	}
	return checkKey(key)
}

// Create starts writing a new blob in tmp/. It fails with store.ErrExists if
// the key is being written, pending or published.
func (s *Store) Create(ctx context.Context, key string) (store.BlobWriter, error) {
	if key == "" {
		if s.closed.Load() {
			return nil, fmt.Errorf("fsblob: %w", store.ErrClosed)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if sl := s.takeSlot(); sl != nil {
			return &writer{s: s, key: sl.key, f: sl.f, tmp: s.pendingPath(sl.key), slot: true}, nil
		}
		key = s.ownKey(newKey()) // pool empty: the ordinary path, with a fresh key
	}
	if err := s.check(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	tmp := s.tmpPath(key)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("fsblob: create %s: %w", key, store.ErrExists)
		}
		return nil, fmt.Errorf("fsblob: create: %w", err)
	}
	// Holding tmp/<key> excludes every other writer of the key, and a blob
	// only moves tmp -> pending -> objects, so checking pending before
	// objects cannot miss one.
	for _, p := range []string{s.pendingPath(key), s.objectPath(key)} {
		if _, err := os.Lstat(p); err == nil || !errors.Is(err, fs.ErrNotExist) {
			f.Close()
			os.Remove(tmp)
			if err == nil {
				return nil, fmt.Errorf("fsblob: create %s: %w", key, store.ErrExists)
			}
			return nil, fmt.Errorf("fsblob: create: %w", err)
		}
	}
	return &writer{s: s, key: key, f: f, tmp: tmp}, nil
}

type writer struct {
	s    *Store
	key  string
	f    *os.File
	tmp  string
	err  error // first write error, sticky
	done bool  // committed or aborted
	// off is the bytes written; flushed is how far writeback was started.
	off, flushed int64
	// slot: the file is a pre-created slot already in pending/.
	slot bool
}

// Key is the blob's key (chosen by the store when Create got none).
func (w *writer) Key() string { return w.key }

// NameDurable implements store.DurableNamer: true for a slot, created in
// pending/ and made durable there before it was handed out.
func (w *writer) NameDurable() bool { return w.slot }

// SetIntent implements store.IntentWriter: the record is an extended
// attribute of the file, which Commit's fsync makes durable with the
// bytes. It fails where the filesystem keeps no user extended attributes.
func (w *writer) SetIntent(b []byte) error {
	if w.done {
		return fmt.Errorf("fsblob: intent of %s after commit or abort", w.key)
	}
	if err := setIntent(w.f, b); err != nil {
		return fmt.Errorf("fsblob: intent of %s: %w", w.key, err)
	}
	return nil
}

// Intent implements store.IntentReader.
func (s *Store) Intent(ctx context.Context, key string) ([]byte, error) {
	if err := s.check(key); err != nil {
		return nil, err
	}
	for _, p := range []string{s.pendingPath(key), s.objectPath(key)} {
		b, err := getIntent(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		return b, err
	}
	return nil, fmt.Errorf("fsblob: intent %s: %w", key, store.ErrNotFound)
}

// writebackChunk is how much written data is handed to the kernel for
// writeback while the rest of the object still arrives, so that Commit's
// fsync has little left to wait for.
const writebackChunk = 128 << 10

// writebackAlign: writeback is started on whole pages only. A page
// written back while partly filled is dirtied again by the next write and
// goes to disk a second time, in a request of its own: about one more
// write request per object (docs/PERFORMANCE.md, "Requests per object").
const writebackAlign = 4096

// maxWrite caps one write(2) into the page cache. Linux sizes the folio a
// buffered write allocates by the write's length: up to 32 KiB (order 3,
// PAGE_ALLOC_COSTLY_ORDER) it comes from the per-CPU free lists, which
// hold the pages freed most recently (by the socket buffers the object
// arrived in, among others); larger ones are split from the buddy
// allocator's big free blocks. On a virtual machine that reports its free
// memory to the host (virtio free page reporting), those big blocks are
// the ones the host took back, and the copy into them faults every page
// in again. On the project's machine 256 KiB writes made the kernel's copy
// of the object a third of the server's CPU (docs/PERFORMANCE.md, "Write
// size and the page cache"); callers do best to write 32 KiB at a time,
// interleaved with their reads, as the archive does.
const maxWrite = 32 << 10

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("fsblob: write %s after commit or abort", w.key)
	}
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		n, err := w.f.Write(p[:min(len(p), maxWrite)])
		p = p[n:]
		written += n
		w.off += int64(n)
		if err != nil {
			w.err = fmt.Errorf("fsblob: write %s: %w", w.key, err)
			return written, w.err
		}
		if w.off-w.flushed >= writebackChunk {
			// Start writeback of the whole pages written; Commit's fsync
			// still makes them durable. An error here is only a lost hint.
			end := w.off &^ (writebackAlign - 1)
			_ = startWriteback(w.f, w.flushed, end-w.flushed)
			w.flushed = end
		}
	}
	return written, nil
}

// Commit fsyncs the file, renames it into its pending shard directory and
// fsyncs that directory (and pending/, which may have just got it). On any
// error the temporary file is removed and Abort becomes a no-op.
func (w *writer) Commit() error {
	if w.done {
		return fmt.Errorf("fsblob: commit %s after commit or abort", w.key)
	}
	w.done = true
	fail := func(err error) error {
		w.f.Close()
		os.Remove(w.tmp)
		return err
	}
	if w.err != nil {
		return fail(w.err)
	}
	if w.slot {
		fail = func(err error) error {
			w.f.Close()
			w.s.removePending(w.key)
			return err
		}
	}
	if err := w.f.Sync(); err != nil {
		return fail(fmt.Errorf("fsblob: commit %s: %w", w.key, err))
	}
	if err := w.f.Close(); err != nil {
		return fail(fmt.Errorf("fsblob: commit %s: %w", w.key, err))
	}
	if w.slot {
		// Already in pending/ with a durable directory entry: the file's
		// fsync made the bytes durable, nothing more to do.
		return nil
	}
	if err := w.s.movePending(w.tmp, w.key); err != nil {
		return fail(fmt.Errorf("fsblob: commit %s: %w", w.key, err))
	}
	return nil
}

// movePending renames a file into key's pending shard directory, making
// the directory if needed, and makes the new entry durable.
func (s *Store) movePending(from, key string) error {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	dir := s.pendingDir(key)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := os.Rename(from, filepath.Join(dir, key+ext)); err != nil {
		return err
	}
	for _, d := range []string{dir, s.pending} {
		if err := durable.Sync(d); err != nil {
			os.Remove(filepath.Join(dir, key+ext))
			return err
		}
	}
	return nil
}

// leftPending removes key's pending shard directory if that was its last
// file and no slot batch is being made in it. An empty directory left
// behind by a crash is removed by Recover; so this needs no fsync.
func (s *Store) leftPending(key string) {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	a, b := shard(key)
	if !s.batches[a+b] {
		_ = os.Remove(s.pendingDir(key)) // fails while not empty
	}
}

// removePending removes key's file from pending/, then its directory if
// that is now empty.
func (s *Store) removePending(key string) {
	os.Remove(s.pendingPath(key))
	s.leftPending(key)
}

// Abort removes the temporary file. It is a no-op after Commit.
func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close()
	if err := os.Remove(w.tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("fsblob: abort %s: %w", w.key, err)
	}
	if w.slot {
		w.s.leftPending(w.key)
	}
	return nil
}

// Publish moves a pending blob into objects/. Publishing a published blob is
// a no-op; a key that is neither pending nor published is store.ErrNotFound.
func (s *Store) Publish(ctx context.Context, key string) error {
	return s.PublishAll(ctx, []string{key})
}

// PublishAll implements store.BatchPublisher. Each blob is linked into
// objects/, the objects/ directories are fsynced, and only then are the
// pending names removed: at every moment the blob has a durable name, even
// where a rename is not atomic across a crash (ext4 without a journal
// writes the two directories' blocks independently). It returns the first
// error; the other keys are published still.
func (s *Store) PublishAll(ctx context.Context, keys []string) error {
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	var linked []string
	dirs := map[string]bool{}
	for _, key := range keys {
		if err := s.check(key); err != nil {
			fail(err)
			continue
		}
		dir := s.objectDir(key)
		if _, ok := s.dirs.Load(dir); !ok {
			if err := mkdirSync(s.objects, dir); err != nil {
				fail(fmt.Errorf("fsblob: publish %s: %w", key, err))
				continue
			}
			s.dirs.Store(dir, struct{}{})
		}
		err := os.Link(s.pendingPath(key), filepath.Join(dir, key+ext))
		switch {
		case err == nil, errors.Is(err, fs.ErrExist):
			// ErrExist: linked before (a crash came before the pending
			// name was removed); keys are never reused, so it is this blob.
			linked = append(linked, key)
			dirs[dir] = true
		case errors.Is(err, fs.ErrNotExist):
			if _, err := os.Lstat(s.objectPath(key)); err != nil {
				fail(fmt.Errorf("fsblob: publish %s: %w", key, store.ErrNotFound))
			}
		default:
			fail(fmt.Errorf("fsblob: publish %s: %w", key, err))
		}
	}
	for dir := range dirs {
		if err := durable.Sync(dir); err != nil {
			// The pending names stay: Recover publishes them again.
			fail(fmt.Errorf("fsblob: publish: %w", err))
			return firstErr
		}
	}
	left := map[string]string{} // pending shard directory -> a key in it
	for _, key := range linked {
		if err := os.Remove(s.pendingPath(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			fail(fmt.Errorf("fsblob: publish %s: %w", key, err))
		}
		left[s.pendingDir(key)] = key
	}
	for _, key := range left {
		s.leftPending(key)
	}
	return firstErr
}

// mkdirSync creates dir (below root, which exists) and fsyncs the parent of
// each directory it creates.
func mkdirSync(root, dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	rel, err := filepath.Rel(root, dir)
	if err != nil {
		return err
	}
	cur := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		next := filepath.Join(cur, part)
		err := os.Mkdir(next, 0o700)
		switch {
		case err == nil:
			if err := durable.Sync(cur); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
		default:
			return err
		}
		cur = next
	}
	return nil
}

// Open returns a published or pending blob.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := s.check(key); err != nil {
		return nil, err
	}
	// objects, pending, objects again: a concurrent Publish moves the file
	// from pending to objects between the first two looks.
	for _, p := range []string{s.objectPath(key), s.pendingPath(key), s.objectPath(key)} {
		f, err := os.Open(p)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("fsblob: open: %w", err)
		}
	}
	return nil, fmt.Errorf("fsblob: open %s: %w", key, store.ErrNotFound)
}

// newKey returns a random 32-hex-digit key.
func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// startSlots starts the goroutine that keeps the slot pool full.
func (s *Store) startSlots() {
	s.slotOnce.Do(func() {
		s.slots = make(chan *slot, slotPool)
		s.refill = make(chan struct{}, 1)
		s.stop = make(chan struct{})
		s.refiller.Add(1)
		go s.refillLoop()
	})
}

func (s *Store) refillLoop() {
	defer s.refiller.Done()
	for {
		for len(s.slots) < slotPool-slotBatch {
			batch, err := s.makeSlots(slotBatch)
			if err != nil {
				break // Create falls back to making its own file
			}
			for _, sl := range batch {
				s.slots <- sl
			}
		}
		select {
		case <-s.refill:
		case <-s.stop:
			return
		}
	}
}

// makeSlots creates n empty files in a new pending shard directory and
// makes their directory entries durable with two fsyncs.
//
// The keys of one batch share their first four hex digits, so their objects
// go to one shard directory, chosen at random for the batch and created
// here, off the C-STORE path: Publish then only renames. (With a random
// shard per key, nearly every object of a young archive made two
// directories and fsynced their parents.) The other 28 hex digits are
// random, as for any key.
func (s *Store) makeSlots(n int) ([]*slot, error) {
	prefix, pdir := s.newBatch()
	defer func() {
		s.pendingMu.Lock()
		delete(s.batches, prefix)
		s.pendingMu.Unlock()
	}()
	dir := s.objectDir(prefix)
	if _, ok := s.dirs.Load(dir); !ok {
		if err := mkdirSync(s.objects, dir); err == nil {
			s.dirs.Store(dir, struct{}{})
		} // else Publish tries again
	}
	batch := make([]*slot, 0, n)
	undo := func() {
		for _, sl := range batch {
			sl.f.Close()
			os.Remove(s.pendingPath(sl.key))
			s.unused.Delete(sl.key)
		}
		os.Remove(pdir)
	}
	if err := os.Mkdir(pdir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	for i := 0; i < n; i++ {
		key := s.ownKey(prefix + newKey()[4:])
		// Known as a slot before its file exists, so that a walk of
		// pending/ never takes it for a blob.
		s.unused.Store(key, struct{}{})
		f, err := os.OpenFile(s.pendingPath(key), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			s.unused.Delete(key)
			break
		}
		batch = append(batch, &slot{key: key, f: f})
	}
	if len(batch) == 0 {
		undo()
		return nil, errors.New("fsblob: cannot create slot files")
	}
	for _, d := range []string{pdir, s.pending} {
		if err := durable.Sync(d); err != nil {
			undo()
			return nil, err
		}
	}
	return spreadInodes(batch), nil
}

// inodesPerBlock is how many inodes share one block of an ext4 inode
// table (4 KiB blocks, 256-byte inodes: the defaults).
const inodesPerBlock = 16

// spreadInodes orders a batch of slots so that slots handed out one after
// another have their inodes in different inode-table blocks. The files of
// a batch are created one after another, so their inodes are mostly
// consecutive, 16 to a block. Each write to a file stores its inode in
// that block and dirties it, and each Commit's fsync writes the block out:
// two associations writing into neighbouring inodes at once make each
// other's fsync write the block a second time, and wait for the other's
// write of it. Where inode numbers are not available the order is kept.
func spreadInodes(batch []*slot) []*slot {
	type slotIno struct {
		sl  *slot
		ino uint64
	}
	byIno := make([]slotIno, 0, len(batch))
	for _, sl := range batch {
		ino, ok := inodeNumber(sl.f)
		if !ok {
			return batch
		}
		byIno = append(byIno, slotIno{sl, ino})
	}
	slices.SortFunc(byIno, func(a, b slotIno) int { return cmp.Compare(a.ino, b.ino) })
	// Group by block, then take one from each block in turn.
	var blocks [][]*slot
	for i, x := range byIno {
		if i == 0 || x.ino/inodesPerBlock != byIno[i-1].ino/inodesPerBlock {
			blocks = append(blocks, nil)
		}
		blocks[len(blocks)-1] = append(blocks[len(blocks)-1], x.sl)
	}
	out := make([]*slot, 0, len(batch))
	for len(out) < len(batch) {
		for i, b := range blocks {
			if len(b) > 0 {
				out = append(out, b[0])
				blocks[i] = b[1:]
			}
		}
	}
	return out
}

// newBatch picks the key prefix of a slot batch: one whose pending shard
// directory no other batch is being made in. Until makeSlots is done,
// leftPending leaves that directory alone.
func (s *Store) newBatch() (prefix, dir string) {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	for {
		prefix = newKey()[:4]
		if !s.batches[prefix] {
			s.batches[prefix] = true
			return prefix, s.pendingDir(prefix)
		}
	}
}

// takeSlot hands out a slot, or nil when the pool is empty.
func (s *Store) takeSlot() *slot {
	s.startSlots()
	select {
	case sl := <-s.slots:
		s.unused.Delete(sl.key)
		if len(s.slots) < slotPool-slotBatch {
			select {
			case s.refill <- struct{}{}:
			default:
			}
		}
		return sl
	default:
		select {
		case s.refill <- struct{}{}:
		default:
		}
		return nil
	}
}

// closeSlots stops the refiller and removes the slots never handed out.
func (s *Store) closeSlots() {
	if s.slots == nil {
		return
	}
	close(s.stop)
	s.refiller.Wait()
	for {
		select {
		case sl := <-s.slots:
			sl.f.Close()
			s.removePending(sl.key)
			s.unused.Delete(sl.key)
		default:
			return
		}
	}
}

// Delete removes a pending or published blob and fsyncs its directory, so
// that once Delete returns the blob does not come back after a crash.
// Deleting a missing blob is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.check(key); err != nil {
		return err
	}
	for _, p := range []string{s.pendingPath(key), s.objectPath(key)} {
		if err := removeSync(p); err != nil {
			return fmt.Errorf("fsblob: delete: %w", err)
		}
	}
	s.leftPending(key)
	return nil
}

func removeSync(p string) error {
	err := os.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return durable.Sync(filepath.Dir(p))
}

// RemoveUnfinished implements store.UnfinishedRemover: it empties tmp/,
// or with a node (SetNode) tmp/<node>/, the files directly in tmp/ (the
// layout before nodes), and another node's files older than NodeGuard.
func (s *Store) RemoveUnfinished(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("fsblob: %w", store.ErrClosed)
	}
	if err := s.removeUnfinished(); err != nil {
		return fmt.Errorf("fsblob: removing unfinished blobs: %w", err)
	}
	return nil
}

func (s *Store) removeUnfinished() error {
	ents, err := os.ReadDir(s.tmp)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range ents {
		p := filepath.Join(s.tmp, e.Name())
		switch {
		case s.node == "" || !e.IsDir():
			if err := os.RemoveAll(p); err != nil {
				return err
			}
			removed = true
		case e.Name() == s.node:
			if err := emptyDir(p, 0); err != nil {
				return err
			}
		default: // another node's
			if err := emptyDir(p, NodeGuard); err != nil {
				return err
			}
		}
	}
	if removed {
		return durable.Sync(s.tmp)
	}
	return nil
}

// emptyDir removes the entries of dir last modified more than age ago
// (all of them for 0) and syncs dir if it removed any.
func emptyDir(dir string, age time.Duration) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range ents {
		if age > 0 {
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // committed or aborted meanwhile
			}
			if err != nil {
				return err
			}
			if time.Since(fi.ModTime()) < age {
				continue
			}
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
		removed = true
	}
	if removed {
		return durable.Sync(dir)
	}
	return nil
}

// shared reports whether another node has written in the directory (has
// a tmp/<node>/ of its own).
func (s *Store) shared() (bool, error) {
	if s.node == "" {
		return false, nil
	}
	ents, err := os.ReadDir(s.tmp)
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		if e.IsDir() && e.Name() != s.node {
			return true, nil
		}
	}
	return false, nil
}

// mine says whether Recover decides on the pending blob key (whose file
// is e): every blob when no other node shares the directory (a backup
// folder served, a data directory given a new node ID: what the keys
// name is then the past); else the blobs of this node, and those of keys
// given by a caller once older than NodeGuard.
func (s *Store) mine(key string, e fs.DirEntry, shared bool) (bool, error) {
	switch n := keyNode(key); {
	case !shared || n == s.node:
		return true, nil
	case n != "":
		return false, nil // another node's: its restart decides
	}
	fi, err := e.Info()
	if err != nil {
		return false, err
	}
	return time.Since(fi.ModTime()) >= NodeGuard, nil
}

// Recover removes the unfinished blobs (RemoveUnfinished), then publishes
// each pending blob for which keep returns true and deletes the others;
// with a node (SetNode), only the pending blobs that are its to decide on
// (see the package comment). Files in pending/ whose
// names are not blob names are removed. An error from keep stops Recover.
func (s *Store) Recover(ctx context.Context, keep func(key string) (bool, error)) error {
	if err := s.RemoveUnfinished(ctx); err != nil {
		return err
	}
	shared, err := s.shared()
	if err != nil {
		return fmt.Errorf("fsblob: recover: %w", err)
	}
	dirs, err := s.pendingDirs()
	if err != nil {
		return fmt.Errorf("fsblob: recover: %w", err)
	}
	for _, dir := range dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("fsblob: recover: %w", err)
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return err
			}
			key, ok := strings.CutSuffix(e.Name(), ext)
			if _, slot := s.unused.Load(key); ok && slot {
				continue // a slot of this run, not yet handed out
			}
			if !ok || !ValidKey(key) || !e.Type().IsRegular() || s.pendingDir(key) != dir {
				if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
					return fmt.Errorf("fsblob: recover: %w", err)
				}
				continue
			}
			if m, err := s.mine(key, e, shared); errors.Is(err, fs.ErrNotExist) || err == nil && !m {
				continue // gone meanwhile, or another node's to decide on
			} else if err != nil {
				return fmt.Errorf("fsblob: recover: %w", err)
			}
			k, err := keep(key)
			if err != nil {
				return fmt.Errorf("fsblob: recover %s: %w", key, err)
			}
			if k {
				err = s.Publish(ctx, key)
			} else {
				err = removeSync(s.pendingPath(key))
			}
			if err != nil {
				return fmt.Errorf("fsblob: recover %s: %w", key, err)
			}
		}
		s.leftPending(filepath.Base(dir))
	}
	return nil
}

// pendingDirs lists the pending shard directories. Whatever else is in
// pending/ is removed, except blob files of the layout before shard
// directories (pending/<key>.dcm), which are moved into theirs.
func (s *Store) pendingDirs() ([]string, error) {
	ents, err := os.ReadDir(s.pending)
	if err != nil {
		return nil, err
	}
	var dirs []string
	seen := map[string]bool{}
	for _, e := range ents {
		p := filepath.Join(s.pending, e.Name())
		if e.IsDir() && len(e.Name()) == 4 {
			if !seen[p] {
				dirs, seen[p] = append(dirs, p), true
			}
			continue
		}
		if key, ok := strings.CutSuffix(e.Name(), ext); ok && ValidKey(key) && e.Type().IsRegular() {
			if err := s.movePending(p, key); err != nil {
				return nil, err
			}
			if d := s.pendingDir(key); !seen[d] {
				dirs, seen[d] = append(dirs, d), true
			}
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return nil, err
		}
	}
	return dirs, nil
}

// WalkBlobs implements store.BlobWalker: fn sees every pending blob
// (published=false), then every published one.
func (s *Store) WalkBlobs(ctx context.Context, fn func(key string, published bool) error) error {
	if s.closed.Load() {
		return fmt.Errorf("fsblob: %w", store.ErrClosed)
	}
	dirs, err := os.ReadDir(s.pending)
	if err != nil {
		return fmt.Errorf("fsblob: walk: %w", err)
	}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(s.pending, d.Name()))
		if err != nil && !errors.Is(err, fs.ErrNotExist) { // removed once emptied
			return fmt.Errorf("fsblob: walk: %w", err)
		}
		for _, e := range ents {
			if key, ok := strings.CutSuffix(e.Name(), ext); ok && ValidKey(key) {
				if _, slot := s.unused.Load(key); slot {
					continue
				}
				if err := fn(key, false); err != nil {
					return err
				}
			}
		}
	}
	return filepath.WalkDir(s.objects, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("fsblob: walk: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if key, ok := strings.CutSuffix(d.Name(), ext); ok && ValidKey(key) {
			return fn(key, true)
		}
		return nil
	})
}

// Close marks the store closed and removes unused slots. Writers already
// created may still finish.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.closeSlots()
	return nil
}

// Space implements store.SpaceReporter for the filesystem of the store.
func (s *Store) Space(ctx context.Context) (free, total int64, err error) {
	free, total, err = space(s.dir)
	if err != nil {
		return 0, 0, fmt.Errorf("fsblob: space: %w", err)
	}
	return free, total, nil
}

// Dir returns the absolute path of the store's directory.
func (s *Store) Dir() string { return s.dir }
