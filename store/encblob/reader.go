package encblob

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
)

// reader decrypts an object's chunks as they are read. With rs (the inner
// reader is seekable, size known) it seeks: only the chunks read are
// fetched and decrypted.
type reader struct {
	r    io.Reader
	rs   io.ReadSeeker
	c    io.Closer
	key  string
	h    *header
	aead cipher.AEAD
	size int64 // plaintext size; -1 unknown (not seekable)

	ct    []byte // ciphertext of one chunk
	plain []byte // plaintext of chunk cur
	// ctMem and plainMem are ct's and plain's buffers, pooled.
	ctMem, plainMem []byte
	cur             int64 // chunk in plain; -1 none
	next            int64 // chunk the inner reader is at
	pos             int64 // plaintext position
	final           bool  // chunk cur is the last
	err             error
	closed          bool // Close returned the buffers: every later call fails
}

func newReader(r io.Reader, rs io.ReadSeeker, h *header, dek []byte, size int64) (*reader, error) {
	g, err := gcm(dek)
	if err != nil {
		return nil, err
	}
	r2 := &reader{r: r, rs: rs, h: h, aead: g, size: size, cur: -1, ctMem: getChunk(h.chunk), plainMem: getChunk(h.chunk)}
	r2.ct, r2.plain = r2.ctMem[:h.chunk+tagLen], r2.plainMem[:0:h.chunk]
	return r2, nil
}

func (r *reader) fail(err error) error {
	if r.key != "" {
		err = fmt.Errorf("encblob: %s: %w", r.key, err)
	}
	r.err = err
	return err
}

// load reads and decrypts chunk i.
func (r *reader) load(i int64) error {
	full := int64(r.h.chunk + tagLen)
	if i != r.next {
		if r.rs == nil {
			return r.fail(errors.New("encblob: chunk out of order on an unseekable reader"))
		}
		if _, err := r.rs.Seek(r.h.len()+i*full, io.SeekStart); err != nil {
			return r.fail(err)
		}
		r.next = i
	}
	r.cur = -1 // plain is overwritten (cleared when a tag fails)
	n, err := io.ReadFull(r.r, r.ct)
	r.next++
	switch {
	case err == nil:
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		if n < tagLen {
			return r.fail(fmt.Errorf("%w: the object is cut short", ErrCorrupt))
		}
	default:
		r.next = -1 // where the inner reader is: unknown, seek
		return r.fail(err)
	}
	final := int64(n) < full
	aad := aadMore
	if final {
		aad = aadFinal
	}
	p, oerr := r.aead.Open(r.plain[:0], chunkNonce(r.h.prefix, uint64(i)), r.ct[:n], aad)
	if oerr != nil {
		return r.fail(fmt.Errorf("%w: chunk %d", ErrCorrupt, i))
	}
	if final && r.rs == nil {
		// Nothing may follow the last chunk.
		var one [1]byte
		if m, _ := io.ReadFull(r.r, one[:]); m > 0 {
			return r.fail(fmt.Errorf("%w: bytes after the last chunk", ErrCorrupt))
		}
	}
	r.plain, r.cur, r.final = p, i, final
	return nil
}

func (r *reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.size >= 0 && r.pos >= r.size {
		return 0, io.EOF
	}
	c := int64(r.h.chunk)
	i, off := r.pos/c, r.pos%c
	if i != r.cur {
		if r.rs == nil && r.cur >= 0 && r.final {
			return 0, io.EOF
		}
		if err := r.load(i); err != nil {
			return 0, err
		}
	}
	if off >= int64(len(r.plain)) {
		if r.final {
			return 0, io.EOF
		}
		return 0, r.fail(fmt.Errorf("%w: a chunk is short", ErrCorrupt))
	}
	n := copy(p, r.plain[off:])
	r.pos += int64(n)
	return n, nil
}

func (r *reader) Close() error {
	if r.ctMem != nil {
		putChunk(r.ctMem)
		putChunk(r.plainMem)
		r.ctMem, r.plainMem, r.ct, r.plain = nil, nil, nil, nil
		r.err, r.closed = errors.New("encblob: read after close"), true
	}
	if r.c == nil {
		return nil
	}
	return r.c.Close()
}

// seekReader is a reader over a seekable inner reader.
type seekReader struct{ *reader }

func (s *seekReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += s.pos
	case io.SeekEnd:
		off += s.size
	default:
		return 0, errors.New("encblob: bad whence")
	}
	if off < 0 {
		return 0, errors.New("encblob: seek before the start")
	}
	if s.closed {
		return 0, s.err
	}
	if s.err != nil && !errors.Is(s.err, ErrCorrupt) {
		s.err = nil // an inner read error may pass; a failed tag stays
	}
	s.pos = off
	return off, nil
}
