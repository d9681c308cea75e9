package encblob

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/ward-pacs/ward/store"
)

// The stored form of an object (format version 1), all integers big
// endian:
//
//	header:
//	  0   8  magic "WARD-ENC"
//	  8   1  format version, 1
//	  9   1  chunk size as a power of two (16: 64 KiB of plaintext)
//	  10  2  header length in bytes, this field included
//	  12  4  nonce prefix, random per object
//	  16  1  KEK ID length n, then n bytes of KEK ID
//	  ..  60 the data key wrapped by that KEK: AES-256-GCM with a random
//	         12-byte nonce (nonce, then 32 bytes of key, then the tag)
//	chunks: each AES-256-GCM under the data key, nonce = prefix and the
//	  chunk's number (8 bytes, from 0), additional data one byte: 1 for
//	  the last chunk, 0 for the others. Every chunk but the last holds
//	  a full chunk of plaintext; the last holds less (0 bytes when the
//	  plaintext is a multiple of the chunk size, or empty).
//
// The data key's wrapping authenticates the header's first 16 bytes,
// the KEK ID and the blob's key (additional data "ward-enc-v1 wrap",
// then those): a header changed, or a whole object moved under another
// key, fails to unwrap. A chunk changed, dropped, moved or taken from
// another object fails its tag; the stream cut at a chunk boundary lacks
// its last chunk and fails too.
//
// A wrap kept apart from the object (by ward key rotate, under a KEK
// other than the header's) is a key record:
//
//	0  8  magic "WARD-KEY"
//	8  1  KEK ID length n, n bytes of KEK ID
//	.. 60 the data key wrapped by that KEK, authenticated as above
const (
	magic        = "WARD-ENC"
	keyMagic     = "WARD-KEY"
	version      = 1
	chunkLog     = 16
	fixedLen     = 16
	wrappedLen   = 12 + 32 + 16
	tagLen       = 16
	maxHeaderLen = fixedLen + 1 + 32 + wrappedLen
	wrapLabel    = "ward-enc-v1 wrap"
)

// Errors; each wraps ErrCorrupt or ErrKey so that callers tell them
// apart with errors.Is.
var (
	// ErrCorrupt: the stored bytes are not an object this wrapper wrote
	// under this key, whole and unchanged (tampering, truncation,
	// damage): nothing of it is served.
	ErrCorrupt = fmt.Errorf("encrypted object fails authentication (%w)", store.ErrCorrupt)
	// ErrKey: no KEK given can unwrap the object's data key.
	ErrKey = errors.New("no encryption key given fits")
	// ErrNotEncrypted: the stored bytes are not encrypted at all.
	ErrNotEncrypted = errors.New("stored object is not encrypted")
	// ErrNeedKey: the store was written encrypted and no key is given.
	ErrNeedKey = errors.New("this archive's objects are encrypted: give its key (ward serve --encryption-key-file FILE, [storage.encryption] key_file, or " + EnvKey + ")")
)

// header is a parsed object header.
type header struct {
	raw    []byte // the whole header as stored
	chunk  int    // plaintext bytes per chunk
	prefix [4]byte
	kekID  string
	wrap   []byte
}

func (h *header) len() int64 { return int64(len(h.raw)) }

// newHeader makes the header of a new object: a data key wrapped by the
// current KEK of ring, for the blob key.
func newHeader(ring *Keyring, blobKey string) (*header, []byte, error) {
	dek := make([]byte, 32)
	if _, err := rand.Read(dek); err != nil {
		return nil, nil, err
	}
	id := ring.Current()
	raw := make([]byte, 0, fixedLen+1+len(id)+wrappedLen)
	raw = append(raw, magic...)
	raw = append(raw, version, chunkLog)
	raw = binary.BigEndian.AppendUint16(raw, uint16(fixedLen+1+len(id)+wrappedLen))
	var prefix [4]byte
	if _, err := rand.Read(prefix[:]); err != nil {
		return nil, nil, err
	}
	raw = append(raw, prefix[:]...)
	raw = append(raw, byte(len(id)))
	raw = append(raw, id...)
	wrap, err := wrapKey(ring.key(id), dek, wrapAAD(raw[:fixedLen], id, blobKey))
	if err != nil {
		return nil, nil, err
	}
	raw = append(raw, wrap...)
	return &header{raw: raw, chunk: 1 << chunkLog, prefix: prefix, kekID: id, wrap: wrap}, dek, nil
}

// readHeader reads and checks the shape of an object header (nothing is
// authenticated until the data key is unwrapped).
func readHeader(r io.Reader) (*header, error) {
	fixed := make([]byte, fixedLen, maxHeaderLen)
	if _, err := io.ReadFull(r, fixed); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrNotEncrypted
		}
		return nil, err
	}
	if string(fixed[:8]) != magic {
		return nil, ErrNotEncrypted
	}
	if fixed[8] != version {
		return nil, fmt.Errorf("%w: format version %d, this Ward reads %d", ErrCorrupt, fixed[8], version)
	}
	if fixed[9] < 12 || fixed[9] > 24 {
		return nil, fmt.Errorf("%w: chunk size 2^%d", ErrCorrupt, fixed[9])
	}
	n := int(binary.BigEndian.Uint16(fixed[10:12]))
	if n < fixedLen+2+wrappedLen || n > maxHeaderLen {
		return nil, fmt.Errorf("%w: header length %d", ErrCorrupt, n)
	}
	raw := fixed[:n]
	if _, err := io.ReadFull(r, raw[fixedLen:]); err != nil {
		return nil, fmt.Errorf("%w: the header is cut short", ErrCorrupt)
	}
	idLen := int(raw[fixedLen])
	if fixedLen+1+idLen+wrappedLen != n || !ValidKeyID(string(raw[fixedLen+1:fixedLen+1+idLen])) {
		return nil, fmt.Errorf("%w: the header's key ID is malformed", ErrCorrupt)
	}
	h := &header{raw: raw, chunk: 1 << fixed[9], kekID: string(raw[fixedLen+1 : fixedLen+1+idLen])}
	copy(h.prefix[:], raw[12:16])
	h.wrap = raw[fixedLen+1+idLen:]
	return h, nil
}

func wrapAAD(fixed []byte, kekID, blobKey string) []byte {
	a := make([]byte, 0, len(wrapLabel)+len(fixed)+2+len(kekID)+len(blobKey))
	a = append(a, wrapLabel...)
	a = append(a, fixed...)
	a = append(a, byte(len(kekID)))
	a = append(a, kekID...)
	a = append(a, byte(len(blobKey)))
	a = append(a, blobKey...)
	return a
}

func gcm(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func wrapKey(kek, dek, aad []byte) ([]byte, error) {
	g, err := gcm(kek)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 12, wrappedLen)
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return g.Seal(out, out[:12], dek, aad), nil
}

func unwrapKey(kek, wrap, aad []byte) ([]byte, error) {
	if len(wrap) != wrappedLen {
		return nil, ErrCorrupt
	}
	g, err := gcm(kek)
	if err != nil {
		return nil, err
	}
	dek, err := g.Open(nil, wrap[:12], wrap[12:], aad)
	if err != nil || len(dek) != 32 {
		return nil, ErrCorrupt
	}
	return dek, nil
}

// keyRecord is a data key wrapped apart from its object.
func keyRecord(kekID string, wrap []byte) []byte {
	b := make([]byte, 0, 9+len(kekID)+len(wrap))
	b = append(b, keyMagic...)
	b = append(b, byte(len(kekID)))
	b = append(b, kekID...)
	return append(b, wrap...)
}

func parseKeyRecord(b []byte) (string, []byte, error) {
	if len(b) < 9 || string(b[:8]) != keyMagic {
		return "", nil, fmt.Errorf("%w: a key record is malformed", ErrCorrupt)
	}
	n := int(b[8])
	if len(b) != 9+n+wrappedLen || !ValidKeyID(string(b[9:9+n])) {
		return "", nil, fmt.Errorf("%w: a key record is malformed", ErrCorrupt)
	}
	return string(b[9 : 9+n]), b[9+n:], nil
}

// chunkPool holds buffers of one chunk of ciphertext at the standard
// chunk size, for writers and readers (a plaintext chunk fits too).
var chunkPool = sync.Pool{New: func() any { b := make([]byte, 1<<chunkLog+tagLen); return &b }}

// getChunk returns a buffer of c+tagLen bytes, pooled for the standard c.
func getChunk(c int) []byte {
	if c == 1<<chunkLog {
		return *chunkPool.Get().(*[]byte)
	}
	return make([]byte, c+tagLen)
}

// putChunk returns a buffer of getChunk to the pool.
func putChunk(b []byte) {
	if cap(b) == 1<<chunkLog+tagLen {
		b = b[:cap(b)]
		chunkPool.Put(&b)
	}
}

// chunkNonce is the nonce of chunk i of an object.
func chunkNonce(prefix [4]byte, i uint64) []byte {
	n := make([]byte, 12)
	copy(n, prefix[:])
	binary.BigEndian.PutUint64(n[4:], i)
	return n
}

// intentNonce is the nonce of an object's intent record: a chunk number
// no object reaches.
func intentNonce(prefix [4]byte) []byte { return chunkNonce(prefix, ^uint64(0)) }

var (
	aadMore  = []byte{0}
	aadFinal = []byte{1}
	aadIntnt = []byte("intent")
)

// plainSize is the plaintext size of chunks stored in n bytes of chunks
// of plaintext size c, or an error when no object has that length.
func plainSize(n int64, c int) (int64, error) {
	full := int64(c + tagLen)
	last := n % full
	if n < 0 || last < tagLen {
		return 0, fmt.Errorf("%w: the object is cut short", ErrCorrupt)
	}
	chunks := n/full + 1
	return n - chunks*tagLen, nil
}
