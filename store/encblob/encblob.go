// Package encblob is the "encrypt" blobs wrapper (store.RegisterBlobsWrapper):
// every object is encrypted as it is written, AES-256-GCM in chunks under
// a data key of its own, which a key-encryption key (KEK) of the key file
// wraps (format.go). It works over any Blobs through the Blobs interface
// alone: files and S3 alike.
//
// Its configuration (the wrapper's DSN) is the key file's path, or the
// key file's content itself (a key taken from the environment). An empty
// DSN turns encryption off: the wrapper then returns the inner store as
// it is, after checking that it was not written encrypted (ErrNeedKey).
//
// Besides the objects, the wrapper keeps records of its own in the inner
// store, under keys starting with "_enc." (which callers may not use):
// a marker that the store is encrypted, a key check per KEK (a small
// object encrypted under it, so that a wrong key is found at start, not
// at the first read) and the key records ward key rotate writes (an
// object's data key wrapped by a newer KEK). Walks and Recover hide them
// from the caller.
package encblob

import (
	"context"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ward-pacs/ward/store"
)

// Name is the wrapper's registered name.
const Name = "encrypt"

func init() {
	store.RegisterBlobsWrapper(Name, func(ctx context.Context, inner store.Blobs, dsn string) (store.Blobs, error) {
		if dsn == "" {
			// No key: the store is served as it is, unless it was
			// written encrypted.
			marked, err := Marked(ctx, inner)
			if err != nil {
				return nil, fmt.Errorf("encryption check: %w", err)
			}
			if marked {
				return nil, ErrNeedKey
			}
			return inner, nil
		}
		ring, err := ringFromDSN(dsn)
		if err != nil {
			return nil, err
		}
		b, err := Wrap(ctx, inner, ring)
		if err != nil {
			return nil, err
		}
		return b.Store(), nil
	})
}

// ringFromDSN reads the keys a DSN gives: the key file's content, or its
// path.
func ringFromDSN(dsn string) (*Keyring, error) {
	if strings.Contains(dsn, keyLinePrefix) {
		return ParseKeys([]byte(dsn))
	}
	if dsn == "" {
		return nil, errors.New("encryption: no key file given")
	}
	return ReadKeyFile(dsn)
}

// Reserved keys in the inner store.
const (
	reservedPrefix = "_enc."
	markerKey      = "_enc.marker"
	checkPrefix    = "_enc.check."
)

// checkPlain is what a key check decrypts to.
const checkPlain = "ward encryption key check v1"

func reserved(key string) bool { return strings.HasPrefix(key, reservedPrefix) }

// recordKey is the inner key of the key record of blobKey under kekID.
func recordKey(blobKey, kekID string) string {
	h := sha256.Sum256([]byte(blobKey))
	return reservedPrefix + hex.EncodeToString(h[:20]) + "." + kekID
}

// Blobs is the wrapper. Its capabilities: BlobWalker (the keys only,
// its own records hidden; the inner store must have it) and
// BatchPublisher (Publish one by one when the inner store lacks it);
// SpaceReporter, UnfinishedRemover and NodeScoper where the inner store
// has them (Store). IntentReader and the writers'
// IntentWriter are the wrapper's own: an intent record holds facts taken
// from the object (patient, study), so it is encrypted with the object's
// data key. The writers' DurableNamer is passed on (it says when the
// inner file's name is durable).
type Blobs struct {
	inner store.Blobs
	walk  store.BlobWalker
	ring  *Keyring
}

var (
	_ store.Blobs          = (*Blobs)(nil)
	_ store.BlobWalker     = (*Blobs)(nil)
	_ store.IntentReader   = (*Blobs)(nil)
	_ store.BatchPublisher = (*Blobs)(nil)
	_ store.IntentWriter   = (*writer)(nil)
	_ store.DurableNamer   = (*writer)(nil)
)

// Wrap wraps inner, checking the keys against the store (CheckKeys).
func Wrap(ctx context.Context, inner store.Blobs, ring *Keyring) (*Blobs, error) {
	w, ok := inner.(store.BlobWalker)
	if !ok {
		return nil, errors.New("encryption: the blob store cannot list its blobs (needed for the key check and key rotation)")
	}
	b := &Blobs{inner: inner, walk: w, ring: ring}
	if err := b.CheckKeys(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// Inner is the store the wrapper writes into: for copying objects as
// stored (encrypted), as a backup does.
func (b *Blobs) Inner() store.Blobs { return b.inner }

// Keyring is the keys the wrapper was opened with.
func (b *Blobs) Keyring() *Keyring { return b.ring }

// Marked reports whether the blobs in inner were written encrypted: the
// marker the wrapper writes at its first start is there. A store that is
// marked must not be opened without the wrapper.
func Marked(ctx context.Context, inner store.Blobs) (bool, error) {
	rc, err := inner.Open(ctx, markerKey)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	rc.Close()
	return true, nil
}

// CheckKeys checks the key file against the store, at start: every KEK
// of the file with a key check in the store must decrypt it (else: a
// wrong key); at least one must have one, unless the store is new (then
// the marker is written); the current KEK gets a key check if it has
// none. A store that holds blobs and no marker was written without
// encryption: it is refused (see docs/security.md).
func (b *Blobs) CheckKeys(ctx context.Context) error { return b.checkKeys(ctx, true) }

func (b *Blobs) checkKeys(ctx context.Context, again bool) error {
	marked, err := Marked(ctx, b.inner)
	if err != nil {
		return fmt.Errorf("encryption key check: %w", err)
	}
	if !marked {
		any := false
		stop := errors.New("stop")
		err := b.walk.WalkBlobs(ctx, func(key string, _ bool) error {
			if reserved(key) {
				return nil // another node starting on the same new store
			}
			any = true
			return stop
		})
		if err != nil && !errors.Is(err, stop) {
			return fmt.Errorf("encryption key check: %w", err)
		}
		if any {
			return errors.New("encryption: this archive holds objects stored without encryption; encryption is for new archives (see docs/security.md: copy the archive into a new, encrypted one)")
		}
		if err := b.putRecord(ctx, markerKey, nil); err != nil && !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("encryption: writing the marker: %w", err)
		}
	}
	checked := false
	for _, id := range b.ring.IDs() {
		rc, err := b.inner.Open(ctx, checkPrefix+id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("encryption key check: %w", err)
		}
		got, err := b.decryptAll(ctx, rc, checkPrefix+id, id)
		rc.Close()
		if err != nil || string(got) != checkPlain {
			return fmt.Errorf("encryption: the key %s of the key file is not the key %s this archive was encrypted with (wrong key file?)", id, id)
		}
		checked = true
	}
	if !checked && marked {
		var known []string
		_ = b.walk.WalkBlobs(ctx, func(key string, _ bool) error {
			if id, ok := strings.CutPrefix(key, checkPrefix); ok {
				known = append(known, id)
			}
			return nil
		})
		return fmt.Errorf("encryption: this archive is encrypted under key(s) %s; the key file holds %s", strings.Join(known, ", "), strings.Join(b.ring.IDs(), ", "))
	}
	cur := checkPrefix + b.ring.Current()
	rc, err := b.inner.Open(ctx, cur)
	switch {
	case err == nil:
		rc.Close()
	case errors.Is(err, store.ErrNotFound):
		w, err := b.create(ctx, cur)
		if errors.Is(err, store.ErrExists) {
			if again {
				// Another node wrote it meanwhile: check it.
				return b.checkKeys(ctx, false)
			}
			// Being written (by another node, or left unfinished by a
			// killed one, removed by recovery): written at a later start.
			if checked {
				return nil
			}
		}
		if err == nil {
			if _, err = w.Write([]byte(checkPlain)); err == nil {
				err = w.Commit()
			} else {
				w.Abort()
			}
		}
		if err == nil {
			err = b.inner.Publish(ctx, cur)
		}
		if err != nil {
			return fmt.Errorf("encryption: writing the key check: %w", err)
		}
	default:
		return fmt.Errorf("encryption key check: %w", err)
	}
	return nil
}

// decryptAll decrypts a small object of the wrapper's own, with the KEK
// id only.
func (b *Blobs) decryptAll(ctx context.Context, rc io.Reader, key, id string) ([]byte, error) {
	h, err := readHeader(rc)
	if err != nil {
		return nil, err
	}
	if h.kekID != id {
		return nil, ErrKey
	}
	dek, err := unwrapKey(b.ring.key(id), h.wrap, wrapAAD(h.raw[:fixedLen], id, key))
	if err != nil {
		return nil, err
	}
	r, err := newReader(rc, nil, h, dek, -1)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(r, 1<<16))
}

// putRecord writes and publishes a small record of the wrapper's own,
// as is.
func (b *Blobs) putRecord(ctx context.Context, key string, data []byte) error {
	w, err := b.inner.Create(ctx, key)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return err
	}
	if err := w.Commit(); err != nil {
		w.Abort()
		return err
	}
	return b.inner.Publish(ctx, key)
}

func checkOuter(key string) error {
	if reserved(key) {
		return fmt.Errorf("encblob: key %q is reserved: %w", key, store.ErrInvalidKey)
	}
	return nil
}

// Create starts an encrypted blob.
func (b *Blobs) Create(ctx context.Context, key string) (store.BlobWriter, error) {
	if err := checkOuter(key); err != nil {
		return nil, err
	}
	return b.create(ctx, key)
}

func (b *Blobs) create(ctx context.Context, key string) (*writer, error) {
	iw, err := b.inner.Create(ctx, key)
	if err != nil {
		return nil, err
	}
	h, dek, err := newHeader(b.ring, iw.Key())
	if err != nil {
		iw.Abort()
		return nil, err
	}
	g, err := gcm(dek)
	if err != nil {
		iw.Abort()
		return nil, err
	}
	w := &writer{inner: iw, h: h, aead: g, bufMem: getChunk(h.chunk), outMem: getChunk(h.chunk)}
	w.buf, w.out = w.bufMem[:0:h.chunk], w.outMem[:0]
	if _, err := iw.Write(h.raw); err != nil {
		iw.Abort()
		return nil, err
	}
	return w, nil
}

// Publish publishes the blob.
func (b *Blobs) Publish(ctx context.Context, key string) error {
	if err := checkOuter(key); err != nil {
		return err
	}
	return b.inner.Publish(ctx, key)
}

// PublishAll publishes many blobs, through the inner store's
// BatchPublisher when it has one.
func (b *Blobs) PublishAll(ctx context.Context, keys []string) error {
	for _, k := range keys {
		if err := checkOuter(k); err != nil {
			return err
		}
	}
	if bp, ok := b.inner.(store.BatchPublisher); ok {
		return bp.PublishAll(ctx, keys)
	}
	var first error
	for _, k := range keys {
		if err := b.inner.Publish(ctx, k); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Delete deletes the blob, then the key records rotations made for it
// under the KEKs of the key file.
func (b *Blobs) Delete(ctx context.Context, key string) error {
	if err := checkOuter(key); err != nil {
		return err
	}
	if err := b.inner.Delete(ctx, key); err != nil {
		return err
	}
	for _, id := range b.ring.IDs() {
		if err := b.inner.Delete(ctx, recordKey(key, id)); err != nil {
			return err
		}
	}
	return nil
}

// Recover recovers the inner store; its own records left pending are
// kept (they are whole once committed).
func (b *Blobs) Recover(ctx context.Context, keep func(key string) (bool, error)) error {
	return b.inner.Recover(ctx, func(key string) (bool, error) {
		if reserved(key) {
			return true, nil
		}
		return keep(key)
	})
}

// Close closes the inner store.
func (b *Blobs) Close() error { return b.inner.Close() }

// WalkBlobs walks the inner store's blobs, without the wrapper's own.
func (b *Blobs) WalkBlobs(ctx context.Context, fn func(key string, published bool) error) error {
	return b.walk.WalkBlobs(ctx, func(key string, published bool) error {
		if reserved(key) {
			return nil
		}
		return fn(key, published)
	})
}

// Store is b with those capabilities of its inner store that it passes
// on, each only when the inner store has it: SpaceReporter,
// UnfinishedRemover and NodeScoper (none of them reads or writes an
// object's bytes). This is what the registered wrapper returns.
func (b *Blobs) Store() store.Blobs {
	_, sp := b.inner.(store.SpaceReporter)
	_, ur := b.inner.(store.UnfinishedRemover)
	_, ns := b.inner.(store.NodeScoper)
	s, u, n := spaceCap{b}, unfinishedCap{b}, nodeCap{b}
	switch {
	case sp && ur && ns:
		return &struct {
			*Blobs
			spaceCap
			unfinishedCap
			nodeCap
		}{b, s, u, n}
	case sp && ur:
		return &struct {
			*Blobs
			spaceCap
			unfinishedCap
		}{b, s, u}
	case sp && ns:
		return &struct {
			*Blobs
			spaceCap
			nodeCap
		}{b, s, n}
	case ur && ns:
		return &struct {
			*Blobs
			unfinishedCap
			nodeCap
		}{b, u, n}
	case sp:
		return &struct {
			*Blobs
			spaceCap
		}{b, s}
	case ur:
		return &struct {
			*Blobs
			unfinishedCap
		}{b, u}
	case ns:
		return &struct {
			*Blobs
			nodeCap
		}{b, n}
	}
	return b
}

// From is the wrapper under bs, if bs is one (as Store returns it).
func From(bs store.Blobs) (*Blobs, bool) {
	e, ok := bs.(interface{ encrypted() *Blobs })
	if !ok {
		return nil, false
	}
	return e.encrypted(), true
}

func (b *Blobs) encrypted() *Blobs { return b }

type spaceCap struct{ b *Blobs }

// Space is the inner store's.
func (c spaceCap) Space(ctx context.Context) (int64, int64, error) {
	return c.b.inner.(store.SpaceReporter).Space(ctx)
}

type unfinishedCap struct{ b *Blobs }

// RemoveUnfinished is the inner store's.
func (c unfinishedCap) RemoveUnfinished(ctx context.Context) error {
	return c.b.inner.(store.UnfinishedRemover).RemoveUnfinished(ctx)
}

type nodeCap struct{ b *Blobs }

// SetNode is the inner store's (store.Open has called it on the inner
// store already).
func (c nodeCap) SetNode(id string) error {
	return c.b.inner.(store.NodeScoper).SetNode(id)
}

// dataKey unwraps the data key of the object stored under key with
// header h: by the header's KEK when the key file has it, else from a key
// record a rotation wrote under one of the key file's KEKs.
func (b *Blobs) dataKey(ctx context.Context, key string, h *header) ([]byte, error) {
	if kek := b.ring.key(h.kekID); kek != nil {
		dek, err := unwrapKey(kek, h.wrap, wrapAAD(h.raw[:fixedLen], h.kekID, key))
		if err != nil {
			return nil, fmt.Errorf("encblob: %s: the data key does not unwrap under key %s: %w", key, h.kekID, ErrCorrupt)
		}
		return dek, nil
	}
	ids := b.ring.IDs()
	for i := len(ids) - 1; i >= 0; i-- {
		id := ids[i]
		rec, err := b.readRecord(ctx, recordKey(key, id))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		recID, wrap, err := parseKeyRecord(rec)
		if err != nil || recID != id {
			return nil, fmt.Errorf("encblob: %s: a key record is damaged: %w", key, ErrCorrupt)
		}
		dek, err := unwrapKey(b.ring.key(id), wrap, wrapAAD(h.raw[:fixedLen], id, key))
		if err != nil {
			return nil, fmt.Errorf("encblob: %s: the key record under key %s does not unwrap: %w", key, id, ErrCorrupt)
		}
		return dek, nil
	}
	return nil, fmt.Errorf("encblob: %s is encrypted under key %s, which the key file lacks (and no rotation re-wrapped it): %w", key, h.kekID, ErrKey)
}

func (b *Blobs) readRecord(ctx context.Context, key string) ([]byte, error) {
	rc, err := b.inner.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, 256))
}

// Open opens the blob for reading its plaintext. The reader is an
// io.ReadSeeker when the inner store's is: a seek decrypts only the
// chunks read after it. A read that meets a chunk that fails
// authentication returns an error wrapping ErrCorrupt; no byte of that
// chunk is returned.
func (b *Blobs) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkOuter(key); err != nil {
		return nil, err
	}
	rc, err := b.inner.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	r, err := b.open(ctx, key, rc)
	if err != nil {
		rc.Close()
		return nil, err
	}
	return r, nil
}

func (b *Blobs) open(ctx context.Context, key string, rc io.ReadCloser) (io.ReadCloser, error) {
	h, err := readHeader(rc)
	if errors.Is(err, ErrNotEncrypted) {
		return nil, fmt.Errorf("encblob: %s: %w (refused: not served)", key, ErrNotEncrypted)
	}
	if err != nil {
		return nil, fmt.Errorf("encblob: %s: %w", key, err)
	}
	dek, err := b.dataKey(ctx, key, h)
	if err != nil {
		return nil, err
	}
	rs, _ := rc.(io.ReadSeeker)
	size := int64(-1)
	if rs != nil {
		end, err := rs.Seek(0, io.SeekEnd)
		if err != nil {
			return nil, err
		}
		if size, err = plainSize(end-h.len(), h.chunk); err != nil {
			return nil, fmt.Errorf("encblob: %s: %w", key, err)
		}
		if _, err := rs.Seek(h.len(), io.SeekStart); err != nil {
			return nil, err
		}
	}
	r, err := newReader(rc, rs, h, dek, size)
	if err != nil {
		return nil, err
	}
	r.key, r.c = key, rc
	if rs != nil {
		return &seekReader{r}, nil
	}
	return r, nil
}

// Intent is the intent record the blob was written with, decrypted.
func (b *Blobs) Intent(ctx context.Context, key string) ([]byte, error) {
	if err := checkOuter(key); err != nil {
		return nil, err
	}
	ir, ok := b.inner.(store.IntentReader)
	if !ok {
		return nil, fmt.Errorf("encblob: intent of %s: %w", key, store.ErrNotFound)
	}
	sealed, err := ir.Intent(ctx, key)
	if err != nil {
		return nil, err
	}
	rc, err := b.inner.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	h, err := readHeader(rc)
	if err != nil {
		return nil, fmt.Errorf("encblob: %s: %w", key, err)
	}
	dek, err := b.dataKey(ctx, key, h)
	if err != nil {
		return nil, err
	}
	g, err := gcm(dek)
	if err != nil {
		return nil, err
	}
	plain, err := g.Open(nil, intentNonce(h.prefix), sealed, aadIntnt)
	if err != nil {
		return nil, fmt.Errorf("encblob: the intent record of %s: %w", key, ErrCorrupt)
	}
	return plain, nil
}

// writer encrypts a blob's bytes chunk by chunk: memory is one chunk of
// plaintext and one of ciphertext, whatever the object's size.
type writer struct {
	inner  store.BlobWriter
	h      *header
	aead   cipher.AEAD
	buf    []byte
	out    []byte
	bufMem []byte // buf's and out's buffers, pooled
	outMem []byte
	n      uint64 // chunks written
	err    error
	closed bool
}

func (w *writer) Key() string { return w.inner.Key() }

func (w *writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("encblob: write after commit or abort")
	}
	written := 0
	for len(p) > 0 {
		k := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+k]
		p = p[k:]
		written += k
		if len(w.buf) == cap(w.buf) {
			if err := w.seal(false); err != nil {
				return written - k, err
			}
		}
	}
	return written, nil
}

func (w *writer) seal(final bool) error {
	aad := aadMore
	if final {
		aad = aadFinal
	}
	w.out = w.aead.Seal(w.out[:0], chunkNonce(w.h.prefix, w.n), w.buf, aad)
	w.n++
	w.buf = w.buf[:0]
	if _, err := w.inner.Write(w.out); err != nil {
		w.err = err
		return err
	}
	return nil
}

func (w *writer) Commit() error {
	if w.closed {
		if w.err != nil {
			return w.err
		}
		return errors.New("encblob: commit after commit or abort")
	}
	if w.err != nil {
		return w.err
	}
	if err := w.seal(true); err != nil {
		return err
	}
	w.closed = true
	w.release()
	return w.inner.Commit()
}

func (w *writer) Abort() error {
	w.closed = true
	w.release()
	return w.inner.Abort()
}

// release returns the writer's buffers to the pool (once closed).
func (w *writer) release() {
	if w.bufMem != nil {
		putChunk(w.bufMem)
		putChunk(w.outMem)
		w.bufMem, w.outMem, w.buf, w.out = nil, nil, nil, nil
	}
}

// SetIntent keeps b with the blob, encrypted with its data key.
func (w *writer) SetIntent(b []byte) error {
	iw, ok := w.inner.(store.IntentWriter)
	if !ok {
		return errors.New("encblob: the blob store keeps no intent records")
	}
	return iw.SetIntent(w.aead.Seal(nil, intentNonce(w.h.prefix), b, aadIntnt))
}

// NameDurable is the inner writer's (false without it).
func (w *writer) NameDurable() bool {
	d, ok := w.inner.(store.DurableNamer)
	return ok && d.NameDurable()
}

var _ store.StoredCopier = (*Blobs)(nil)

// Records calls fn with the key of each record of the wrapper's own in
// the inner store: the marker, the key checks and the key records.
func (b *Blobs) Records(ctx context.Context, fn func(key string) error) error {
	return b.walk.WalkBlobs(ctx, func(key string, _ bool) error {
		if reserved(key) {
			return fn(key)
		}
		return nil
	})
}

// OpenStored returns the blob's bytes as stored (encrypted); as they are
// read, their chunks are authenticated and the plaintext written to
// plain. A read fails (with ErrCorrupt) at the first chunk that does not
// authenticate, or at the end when the last chunk is missing. The key of
// a record of the wrapper's own (Records) gives the record as stored.
func (b *Blobs) OpenStored(ctx context.Context, key string, plain io.Writer) (io.ReadCloser, error) {
	if reserved(key) {
		return b.inner.Open(ctx, key) // a record, as stored
	}
	rc, err := b.inner.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	h, err := readHeader(rc)
	if err == nil {
		var dek []byte
		if dek, err = b.dataKey(ctx, key, h); err == nil {
			var g cipher.AEAD
			if g, err = gcm(dek); err == nil {
				return &storedReader{rc: rc, key: key, h: h, aead: g, plain: plain, head: h.raw}, nil
			}
		}
	} else {
		err = fmt.Errorf("encblob: %s: %w", key, err)
	}
	rc.Close()
	return nil, err
}

// PlainSize is the plaintext size of a stored object of n bytes whose
// first bytes r gives (nothing is authenticated).
func (b *Blobs) PlainSize(r io.Reader, n int64) (int64, error) {
	h, err := readHeader(r)
	if err != nil {
		return 0, err
	}
	return plainSize(n-h.len(), h.chunk)
}

// storedReader passes on the stored bytes and decrypts them on the side;
// it holds back at most one chunk and the bytes of one read.
type storedReader struct {
	rc    io.ReadCloser
	key   string
	h     *header
	aead  cipher.AEAD
	plain io.Writer
	head  []byte // header bytes not yet returned
	pend  []byte // chunk bytes not yet decrypted
	out   []byte
	n     uint64
	err   error
}

func (s *storedReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if len(s.head) > 0 {
		n := copy(p, s.head)
		s.head = s.head[n:]
		return n, nil
	}
	n, err := s.rc.Read(p)
	s.pend = append(s.pend, p[:n]...)
	full := s.h.chunk + tagLen
	for len(s.pend) > full {
		if ferr := s.open(s.pend[:full], false); ferr != nil {
			return 0, ferr
		}
		s.pend = append(s.pend[:0], s.pend[full:]...)
	}
	if errors.Is(err, io.EOF) {
		if len(s.pend) < tagLen {
			s.err = fmt.Errorf("encblob: %s: %w: the object is cut short", s.key, ErrCorrupt)
			return 0, s.err
		}
		if ferr := s.open(s.pend, true); ferr != nil {
			return 0, ferr
		}
		s.pend = s.pend[:0]
		s.err = io.EOF
	}
	return n, err
}

func (s *storedReader) open(ct []byte, final bool) error {
	aad := aadMore
	if final {
		aad = aadFinal
	}
	var err error
	s.out, err = s.aead.Open(s.out[:0], chunkNonce(s.h.prefix, s.n), ct, aad)
	s.n++
	if err != nil {
		s.err = fmt.Errorf("encblob: %s: %w: chunk %d", s.key, ErrCorrupt, s.n-1)
		return s.err
	}
	if _, err := s.plain.Write(s.out); err != nil {
		s.err = err
		return err
	}
	return nil
}

func (s *storedReader) Close() error { return s.rc.Close() }
