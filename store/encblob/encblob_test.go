package encblob

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/store"
	_ "github.com/ward-pacs/ward/store/fsblob"
	"github.com/ward-pacs/ward/store/storetest"
)

func keys(t testing.TB, ids ...string) string {
	t.Helper()
	var s strings.Builder
	for i, id := range ids {
		l, err := NewKeyLine(id, i == len(ids)-1)
		if err != nil {
			t.Fatal(err)
		}
		s.WriteString(l + "\n")
	}
	return s.String()
}

func ring(t testing.TB, text string) *Keyring {
	t.Helper()
	k, err := ParseKeys([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openFS(t testing.TB, dir string) store.Blobs {
	t.Helper()
	bs, err := store.OpenBlobs(context.Background(), "fs", dir)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

func wrapFS(t testing.TB, dir, keyText string) (*Blobs, error) {
	t.Helper()
	inner := openFS(t, dir)
	b, err := Wrap(context.Background(), inner, ring(t, keyText))
	if err != nil {
		inner.Close()
	}
	return b, err
}

func mustWrap(t testing.TB, dir, keyText string) *Blobs {
	t.Helper()
	b, err := wrapFS(t, dir, keyText)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func put(t testing.TB, bs store.Blobs, key string, data []byte) {
	t.Helper()
	ctx := context.Background()
	w, err := bs.Create(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := bs.Publish(ctx, key); err != nil {
		t.Fatal(err)
	}
}

func read(bs store.Blobs, key string) ([]byte, error) {
	rc, err := bs.Open(context.Background(), key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// storedPath is the file of a published blob of the fs backend.
func storedPath(t testing.TB, dir, key string) string {
	t.Helper()
	var found string
	filepath.WalkDir(filepath.Join(dir, "objects"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), key) {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no file for %s", key)
	}
	return found
}

// TestConformance: the wrapper over files passes the Blobs suite.
func TestConformance(t *testing.T) {
	text := keys(t, "k1")
	storetest.TestBlobs(t, func(t *testing.T) store.Blobs {
		b, err := wrapFS(t, t.TempDir(), text)
		if err != nil {
			t.Fatal(err)
		}
		return b.Store()
	})
}

// TestCapabilities: the wrapper passes on SpaceReporter,
// UnfinishedRemover and NodeScoper exactly when its inner store has them.
func TestCapabilities(t *testing.T) {
	b := mustWrap(t, t.TempDir(), keys(t, "k1"))
	full := b.Store()
	for name, ok := range map[string]bool{
		"SpaceReporter":     func() bool { _, ok := full.(store.SpaceReporter); return ok }(),
		"UnfinishedRemover": func() bool { _, ok := full.(store.UnfinishedRemover); return ok }(),
		"NodeScoper":        func() bool { _, ok := full.(store.NodeScoper); return ok }(),
		"StoredCopier":      func() bool { _, ok := full.(store.StoredCopier); return ok }(),
		"From":              func() bool { e, ok := From(full); return ok && e == b }(),
	} {
		if !ok {
			t.Errorf("over files: no %s", name)
		}
	}
	bare := &Blobs{inner: struct {
		store.Blobs
		store.BlobWalker
	}{b.inner, b.walk}, walk: b.walk, ring: b.ring}
	got := bare.Store()
	if _, ok := got.(store.SpaceReporter); ok {
		t.Error("SpaceReporter over a store without it")
	}
	if _, ok := got.(store.UnfinishedRemover); ok {
		t.Error("UnfinishedRemover over a store without it")
	}
	if _, ok := got.(store.NodeScoper); ok {
		t.Error("NodeScoper over a store without it")
	}
}

// TestRoundTripSizes: objects of sizes around chunk boundaries read back
// equal, streamed and seeked, and the stored bytes are not the plaintext.
func TestRoundTripSizes(t *testing.T) {
	dir := t.TempDir()
	b := mustWrap(t, dir, keys(t, "k1"))
	c := 1 << chunkLog
	for _, n := range []int{0, 1, 100, c - 1, c, c + 1, 2 * c, 3*c + 7} {
		key := storetest.NewKey()
		data := storetest.Data(key, n)
		copy(data, "PATIENT^SECRET")
		put(t, b, key, data)
		got, err := read(b, key)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: read back %d, %v", n, len(got), err)
		}
		raw, err := os.ReadFile(storedPath(t, dir, key))
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 && bytes.Contains(raw, []byte("PATIENT^SECRET")) {
			t.Errorf("%d bytes: the plaintext is on disk", n)
		}
		// Through an unseekable reader too.
		rc, _ := b.Inner().Open(context.Background(), key)
		r, err := b.open(context.Background(), key, struct{ io.ReadCloser }{rc})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := r.(io.Seeker); ok {
			t.Error("unseekable inner gave a seeker")
		}
		got, err = io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes streamed: %d, %v", n, len(got), err)
		}
	}
}

// TestSeek: ranged reads (as frames are read) give the plaintext's bytes.
func TestSeek(t *testing.T) {
	b := mustWrap(t, t.TempDir(), keys(t, "k1"))
	key := storetest.NewKey()
	data := storetest.Data(key, 5<<16+123)
	put(t, b, key, data)
	rc, err := b.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rs, ok := rc.(io.ReadSeeker)
	if !ok {
		t.Fatal("not seekable over files")
	}
	if end, err := rs.Seek(0, io.SeekEnd); err != nil || end != int64(len(data)) {
		t.Fatalf("size %d, %v; want %d", end, err, len(data))
	}
	for _, at := range []int64{0, 1, 65535, 65536, 200000, int64(len(data)) - 5, 70000, 3} {
		if _, err := rs.Seek(at, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 70000)
		n, err := io.ReadFull(rs, buf)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], data[at:min(int(at)+70000, len(data))]) {
			t.Fatalf("at %d: bytes differ", at)
		}
	}
	cur, _ := rs.Seek(-10, io.SeekCurrent)
	if _, err := rs.Seek(0, io.SeekStart); err != nil || cur < 0 {
		t.Fatal(err)
	}
	// After Close (its buffers pooled again) every call fails cleanly.
	rc.Close()
	if _, err := rs.Seek(0, io.SeekStart); err == nil {
		t.Error("Seek after Close succeeded")
	}
	if _, err := rs.Read(make([]byte, 10)); err == nil {
		t.Error("Read after Close succeeded")
	}
}

// TestTamper: a byte flipped anywhere, a cut, chunks swapped within or
// between objects, headers swapped, whole objects swapped: reading fails
// with ErrCorrupt (or ErrNotEncrypted), and no plaintext of a bad chunk
// is returned.
func TestTamper(t *testing.T) {
	dir := t.TempDir()
	b := mustWrap(t, dir, keys(t, "k1"))
	c := 1 << chunkLog
	full := c + tagLen
	ka, kb := storetest.NewKey(), storetest.NewKey()
	da, db := storetest.Data(ka, 3*c+100), storetest.Data(kb, 3*c+100)
	put(t, b, ka, da)
	put(t, b, kb, db)
	pa, pb := storedPath(t, dir, ka), storedPath(t, dir, kb)
	ra, _ := os.ReadFile(pa)
	rb, _ := os.ReadFile(pb)
	h, err := readHeader(bytes.NewReader(ra))
	if err != nil {
		t.Fatal(err)
	}
	hl := int(h.len())
	chunk := func(raw []byte, i int) []byte { return raw[hl+i*full : min(hl+(i+1)*full, len(raw))] }
	cases := map[string]func() []byte{
		"flip in header prefix": func() []byte { x := bytes.Clone(ra); x[13] ^= 1; return x },
		"flip in chunk size":    func() []byte { x := bytes.Clone(ra); x[9] = 15; return x },
		"flip in wrapped key":   func() []byte { x := bytes.Clone(ra); x[hl-3] ^= 1; return x },
		"flip in chunk 1":       func() []byte { x := bytes.Clone(ra); x[hl+full+10] ^= 0x80; return x },
		"flip in last tag":      func() []byte { x := bytes.Clone(ra); x[len(x)-1] ^= 1; return x },
		"cut at a chunk":        func() []byte { return bytes.Clone(ra[:hl+2*full]) },
		"cut inside a chunk":    func() []byte { return bytes.Clone(ra[:hl+2*full+50]) },
		"cut in the last tag":   func() []byte { return bytes.Clone(ra[:len(ra)-3]) },
		"last chunk dropped":    func() []byte { return bytes.Clone(ra[:hl+3*full]) },
		"byte appended":         func() []byte { return append(bytes.Clone(ra), 0) },
		"chunks 0 and 1 swapped": func() []byte {
			x := bytes.Clone(ra[:hl])
			x = append(x, chunk(ra, 1)...)
			x = append(x, chunk(ra, 0)...)
			return append(x, ra[hl+2*full:]...)
		},
		"chunk 1 from the other object": func() []byte {
			x := bytes.Clone(ra)
			copy(x[hl+full:], chunk(rb, 1))
			return x
		},
		"header of the other object": func() []byte {
			return append(bytes.Clone(rb[:hl]), ra[hl:]...)
		},
		"the other object whole": func() []byte { return bytes.Clone(rb) },
		"plaintext":              func() []byte { return bytes.Clone(da) },
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(pa, mk(), 0o600); err != nil {
				t.Fatal(err)
			}
			defer os.WriteFile(pa, ra, 0o600)
			got, err := read(b, ka)
			if err == nil {
				t.Fatalf("read %d bytes of a tampered object without error", len(got))
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotEncrypted) {
				t.Errorf("error %v, want ErrCorrupt", err)
			}
			// What was returned before the error is a prefix of the
			// plaintext: no garbage.
			if !bytes.HasPrefix(da, got) {
				t.Errorf("%d bytes returned that are not the object's", len(got))
			}
		})
	}
	if got, err := read(b, ka); err != nil || !bytes.Equal(got, da) {
		t.Fatalf("restored object: %v", err)
	}
}

// TestWrongKey: a key file with another key under the same ID, or only
// other IDs, is refused at start (the key check), not at the first read;
// the right one opens the store.
func TestWrongKey(t *testing.T) {
	dir := t.TempDir()
	right := keys(t, "k1")
	b := mustWrap(t, dir, right)
	key := storetest.NewKey()
	put(t, b, key, storetest.Data(key, 1000))
	b.Close()
	if _, err := wrapFS(t, dir, keys(t, "k1")); err == nil || !strings.Contains(err.Error(), "not the key k1") {
		t.Errorf("wrong key, same ID: %v", err)
	}
	if _, err := wrapFS(t, dir, keys(t, "other")); err == nil || !strings.Contains(err.Error(), "encrypted under key(s) k1") {
		t.Errorf("other key ID: %v", err)
	}
	b2 := mustWrap(t, dir, right)
	if got, err := read(b2, key); err != nil || !bytes.Equal(got, storetest.Data(key, 1000)) {
		t.Errorf("right key: %v", err)
	}
	if ok, err := Marked(context.Background(), b2.Inner()); !ok || err != nil {
		t.Errorf("Marked = %v, %v", ok, err)
	}
}

// TestUnencryptedArchiveRefused: a store that holds objects written
// without encryption is refused, not mixed.
func TestUnencryptedArchiveRefused(t *testing.T) {
	dir := t.TempDir()
	inner := openFS(t, dir)
	put(t, inner, "plain", []byte("PATIENT^PLAIN"))
	inner.Close()
	if _, err := wrapFS(t, dir, keys(t, "k1")); err == nil || !strings.Contains(err.Error(), "without encryption") {
		t.Fatalf("wrapping an unencrypted archive: %v", err)
	}
}

// TestIntentEncrypted: intent records are kept encrypted and read back.
func TestIntentEncrypted(t *testing.T) {
	dir := t.TempDir()
	b := mustWrap(t, dir, keys(t, "k1"))
	ctx := context.Background()
	w, err := b.Create(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.(store.IntentWriter).SetIntent([]byte("PATIENT^INTENT")); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	raw, err := b.Inner().(store.IntentReader).Intent(ctx, "obj")
	if err != nil || bytes.Contains(raw, []byte("PATIENT")) {
		t.Fatalf("stored intent holds the plaintext (%v)", err)
	}
	if got, err := b.Intent(ctx, "obj"); err != nil || string(got) != "PATIENT^INTENT" {
		t.Fatalf("Intent = %q, %v", got, err)
	}
}

// TestRotate: after a new KEK is added, Rotate writes key records; an
// interrupted run is resumed by the next; once done, the old KEK can
// leave the key file and every object still reads.
func TestRotate(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	l1, _ := NewKeyLine("k1", false)
	l2, _ := NewKeyLine("k2", true)
	b := mustWrap(t, dir, l1+"\n")
	var ks []string
	for range 10 {
		k := storetest.NewKey()
		put(t, b, k, storetest.Data(k, 70000))
		ks = append(ks, k)
	}
	b.Close()

	b = mustWrap(t, dir, l1+"\n"+l2+"\n")
	k2 := storetest.NewKey()
	put(t, b, k2, storetest.Data(k2, 500)) // under k2 already
	// Interrupted after four objects.
	cctx, cancel := context.WithCancel(ctx)
	rep, err := b.Rotate(cctx, nil, func(r RotateReport) {
		if r.Objects == 4 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || rep.Objects != 4 {
		t.Fatalf("interrupted rotation: %+v, %v", rep, err)
	}
	first := rep.Rewrapped
	rep, err = b.Rotate(ctx, func(k string, err error) { t.Errorf("%s: %v", k, err) }, nil)
	if err != nil || rep.Objects != 11 || rep.Rewrapped+first != 10 || rep.Done != 11-rep.Rewrapped {
		t.Fatalf("resumed rotation: %+v (first run %d), %v", rep, first, err)
	}
	if rep, err := b.Rotate(ctx, nil, nil); err != nil || rep.Rewrapped != 0 || rep.Done != 11 {
		t.Fatalf("third run: %+v, %v", rep, err)
	}
	b.Close()

	// The old key retired.
	b = mustWrap(t, dir, l2+"\n")
	for _, k := range append(ks, k2) {
		n := 70000
		if k == k2 {
			n = 500
		}
		if got, err := read(b, k); err != nil || !bytes.Equal(got, storetest.Data(k, n)) {
			t.Fatalf("%s after the old key left: %v", k, err)
		}
	}
	// Deleting an object removes its key record.
	if err := b.Delete(ctx, ks[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Inner().Open(ctx, recordKey(ks[0], "k2")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("key record left after Delete: %v", err)
	}
	// Without rotation, an object under a retired key is refused clearly.
	b.Close()
	b = mustWrap(t, dir, l1+"\n"+l2+"\n")
	k1 := storetest.NewKey()
	// Write under k1 by making it current.
	old := b.ring.current
	b.ring.current = "k1"
	put(t, b, k1, []byte("x"))
	b.ring.current = old
	b.Close()
	b = mustWrap(t, dir, l2+"\n")
	if _, err := read(b, k1); !errors.Is(err, ErrKey) {
		t.Errorf("object under a retired key, not rotated: %v", err)
	}
}

// TestKeyFile: init refuses to overwrite and makes the file 0600; a file
// others may read is refused; AddKey moves the current mark.
func TestKeyFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ward.key")
	if err := InitKeyFile(p, "k1"); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	if err := InitKeyFile(p, "k1"); err == nil {
		t.Error("init overwrote a key file")
	}
	if err := AddKey(p, "k2"); err != nil {
		t.Fatal(err)
	}
	k, err := ReadKeyFile(p)
	if err != nil || k.Current() != "k2" || len(k.IDs()) != 2 {
		t.Fatalf("after AddKey: %v %v", k, err)
	}
	os.Chmod(p, 0o640)
	if _, err := ReadKeyFile(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("group-readable key file: %v", err)
	}
	b, _ := os.ReadFile(p)
	for _, bad := range []string{"", "ward-kek-v1:K:AAAA", "ward-kek-v1:k:AAAA", "nonsense"} {
		if _, err := ParseKeys([]byte(bad)); err == nil {
			t.Errorf("ParseKeys(%q) accepted", bad)
		}
		_ = b
	}
	if _, err := ParseKeys([]byte(string(b) + "\n" + strings.Replace(string(b), "k1", "k1", 1))); err == nil {
		t.Error("duplicate IDs accepted")
	}
}

// FuzzOpen: any stored bytes give an error or plaintext, never a panic,
// and the header and chunk decoders allocate within their bounds.
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	text := keys(f, "k1")
	b := mustWrap(f, dir, text)
	// Seeds stored under the key the target opens ("fuzz"), so that they
	// decrypt and mutations reach the chunk decoder.
	for _, n := range []int{0, 10, 1 << chunkLog, 1<<chunkLog + 5, 2 << chunkLog} {
		put(f, b, "fuzz", storetest.Data("fuzz", n))
		raw, err := os.ReadFile(storedPath(f, dir, "fuzz"))
		if err != nil {
			f.Fatal(err)
		}
		if err := b.Delete(context.Background(), "fuzz"); err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte(magic))
	f.Add([]byte(keyMagic + "\x02k1"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ctx := context.Background()
		for _, seek := range []bool{false, true} {
			var rc io.ReadCloser = io.NopCloser(bytes.NewReader(raw))
			if seek {
				rc = struct {
					io.ReadSeeker
					io.Closer
				}{bytes.NewReader(raw), io.NopCloser(nil)}
			}
			r, err := b.open(ctx, "fuzz", rc)
			if err == nil {
				got, err := io.ReadAll(r)
				if err == nil && !bytes.Equal(got, storetest.Data("fuzz", len(got))) {
					// Only seeds' own bytes authenticate.
					t.Fatalf("%d bytes decrypted that no writer wrote", len(got))
				}
				if rs, ok := r.(io.ReadSeeker); ok {
					rs.Seek(int64(len(raw)/3), io.SeekStart)
					io.Copy(io.Discard, rs)
				}
				r.Close()
			}
		}
		_, _, _ = parseKeyRecord(raw)
	})
}

// TestOpenStored: a backup's copy is the stored bytes, and as they are
// read the plaintext they stand for is checked and handed on; a tampered
// or cut object fails the read; the wrapper's records come as stored.
func TestOpenStored(t *testing.T) {
	dir := t.TempDir()
	b := mustWrap(t, dir, keys(t, "k1"))
	ctx := context.Background()
	key := storetest.NewKey()
	data := storetest.Data(key, 3<<16+99)
	put(t, b, key, data)
	p := storedPath(t, dir, key)
	raw, _ := os.ReadFile(p)
	var plain bytes.Buffer
	rc, err := b.OpenStored(ctx, key, &plain)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, raw) || !bytes.Equal(plain.Bytes(), data) {
		t.Fatalf("OpenStored: %d stored bytes (want %d), %d plain (want %d), %v", len(got), len(raw), plain.Len(), len(data), err)
	}
	if n, err := b.PlainSize(bytes.NewReader(raw), int64(len(raw))); err != nil || n != int64(len(data)) {
		t.Errorf("PlainSize = %d, %v; want %d", n, err, len(data))
	}
	for name, bad := range map[string][]byte{
		"flipped": func() []byte { x := bytes.Clone(raw); x[len(x)-100] ^= 4; return x }(),
		"cut":     raw[:len(raw)-(99+tagLen)],
	} {
		os.WriteFile(p, bad, 0o600)
		rc, err := b.OpenStored(ctx, key, io.Discard)
		if err == nil {
			_, err = io.ReadAll(rc)
			rc.Close()
		}
		if !errors.Is(err, ErrCorrupt) || !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	var recs []string
	if err := b.Records(ctx, func(k string) error { recs = append(recs, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 { // the marker and k1's key check
		t.Errorf("records %v", recs)
	}
	for _, k := range recs {
		rc, err := b.OpenStored(ctx, k, nil)
		if err != nil {
			t.Fatalf("record %s: %v", k, err)
		}
		rc.Close()
	}
}
