package s3blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
	"github.com/ward-pacs/ward/test/harness"
)

// recorder is an HTTP transport that counts requests by method and the
// largest request body sent, and can corrupt bodies on their way.
type recorder struct {
	mu      sync.Mutex
	methods map[string]int
	maxBody int64
	corrupt atomic.Bool // flip a byte of every body of 100 bytes or more
}

// hop is a recorder in front of one store's transport.
type hop struct {
	r    *recorder
	next http.RoundTripper
}

func (h hop) RoundTrip(rq *http.Request) (*http.Response, error) { return h.r.roundTrip(rq, h.next) }

func (r *recorder) roundTrip(rq *http.Request, next http.RoundTripper) (*http.Response, error) {
	r.mu.Lock()
	if r.methods == nil {
		r.methods = map[string]int{}
	}
	r.methods[rq.Method]++
	r.maxBody = max(r.maxBody, rq.ContentLength)
	r.mu.Unlock()
	if r.corrupt.Load() && rq.Body != nil && rq.ContentLength >= 100 {
		b, err := io.ReadAll(rq.Body)
		rq.Body.Close()
		if err != nil {
			return nil, err
		}
		b[len(b)/2] ^= 0xff
		rq = rq.Clone(rq.Context())
		rq.Body = io.NopCloser(bytes.NewReader(b))
	}
	return next.RoundTrip(rq)
}

func (r *recorder) count(method string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.methods[method]
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.methods, r.maxBody = nil, 0
}

type fixture struct {
	s3  *harness.S3
	dsn string
	rec *recorder
	st  *Store
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	s := harness.StartS3(t)
	s.SetEnv(t)
	f := &fixture{s3: s, dsn: s.URL(s.Bucket(t), "p"), rec: &recorder{}}
	f.st = f.open(t, "n1")
	return f
}

func (f *fixture) open(t *testing.T, node string) *Store {
	t.Helper()
	st, err := open(context.Background(), f.dsn, func(next http.RoundTripper) http.RoundTripper {
		return hop{f.rec, next}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetNode(node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func (f *fixture) uploads(t *testing.T) int {
	t.Helper()
	out, err := f.s3.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &f.st.bucket})
	if err != nil {
		t.Fatal(err)
	}
	return len(out.Uploads)
}

// markers counts the markers in the bucket.
func (f *fixture) markers(t *testing.T) int {
	t.Helper()
	out, err := f.s3.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: &f.st.bucket, Prefix: aws.String(f.st.pendingDir())})
	if err != nil {
		t.Fatal(err)
	}
	return len(out.Contents)
}

func write(t *testing.T, bs store.Blobs, key string, data []byte) store.BlobWriter {
	t.Helper()
	w, err := bs.Create(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; {
		n := min(len(p), 32<<10)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	return w
}

func readAll(t *testing.T, bs store.Blobs, key string) []byte {
	t.Helper()
	r, err := bs.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMultipartBoundedMemory: a blob of several parts streams as a
// multipart upload whose requests carry at most PartSize bytes, and
// reads back whole; one of exactly PartSize goes in one PutObject.
func TestMultipartBoundedMemory(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	key := storetest.NewKey()
	data := storetest.Data(key, 2*PartSize+12345)
	w := write(t, f.st, key, data)
	if f.uploads(t) != 1 {
		t.Errorf("%d multipart uploads in progress before Commit, want 1", f.uploads(t))
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := f.st.Publish(ctx, key); err != nil {
		t.Fatal(err)
	}
	if f.rec.maxBody > PartSize {
		t.Errorf("a request carried %d bytes, more than a part (%d)", f.rec.maxBody, PartSize)
	}
	if got := readAll(t, f.st, key); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, want %d (content differs)", len(got), len(data))
	}
	head, err := f.s3.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: &f.st.bucket, Key: aws.String(f.st.objectName(key))})
	if err != nil || !strings.HasSuffix(strings.Trim(aws.ToString(head.ETag), `"`), "-3") {
		t.Errorf("ETag %v (%v), want a 3-part upload's", aws.ToString(head.ETag), err)
	}
	if f.uploads(t) != 0 {
		t.Errorf("multipart uploads left: %d", f.uploads(t))
	}

	exact := storetest.NewKey()
	f.rec.reset()
	w = write(t, f.st, exact, storetest.Data(exact, PartSize))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := f.rec.count(http.MethodPost); n != 0 {
		t.Errorf("a blob of PartSize bytes made %d POST requests (multipart), want one PutObject", n)
	}
}

// TestCorruptUploadRefused: bytes changed on their way to the store do
// not match the CRC-32C sent with them: the store refuses them, Commit
// fails, and nothing of the blob stays (the key is free again).
func TestCorruptUploadRefused(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, size := range []int{5000, PartSize + 5000} {
		key := storetest.NewKey()
		data := storetest.Data(key, size)
		w := write(t, f.st, key, data[:min(size, PartSize)])
		f.rec.corrupt.Store(true)
		_, err := w.Write(data[min(size, PartSize):])
		if err == nil {
			err = w.Commit()
		} else {
			w.Abort()
		}
		f.rec.corrupt.Store(false)
		if err == nil {
			t.Fatalf("%d bytes: a corrupted upload was committed", size)
		}
		t.Logf("%d bytes: %v", size, err)
		if _, err := f.st.Open(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%d bytes: Open after the refused upload: %v, want ErrNotFound", size, err)
		}
		if f.uploads(t) != 0 {
			t.Errorf("%d bytes: multipart upload left", size)
		}
		w = write(t, f.st, key, data)
		if err := w.Commit(); err != nil {
			t.Fatalf("%d bytes: the key is not free after the refused upload: %v", size, err)
		}
		if got := readAll(t, f.st, key); !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: content differs", size)
		}
	}
}

// TestWriteOnceAcrossNodes: two nodes writing the same key (given by a
// caller) at once: both get past Create (their markers are their own),
// the first Commit wins and the second gets store.ErrExists, its bytes
// gone; in one PutObject and in a multipart upload alike.
func TestWriteOnceAcrossNodes(t *testing.T) {
	f := newFixture(t)
	other := f.open(t, "n2")
	for _, size := range []int{3000, PartSize + 3000} {
		key := storetest.NewKey()
		a := storetest.Data(key, size)
		b := bytes.Repeat([]byte{'b'}, size)
		wa := write(t, f.st, key, a)
		wb := write(t, other, key, b)
		if err := wa.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := wb.Commit(); !errors.Is(err, store.ErrExists) {
			t.Errorf("%d bytes: second Commit = %v, want ErrExists", size, err)
		}
		if got := readAll(t, other, key); !bytes.Equal(got, a) {
			t.Errorf("%d bytes: the first writer's object was changed", size)
		}
		if f.uploads(t) != 0 {
			t.Errorf("%d bytes: multipart upload left", size)
		}
	}
}

// TestAbortMultipart: Abort of a blob whose parts are on the server
// aborts the upload there; so does Recover after a crash in the middle
// of one, and it frees the key.
func TestAbortMultipart(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	key := storetest.NewKey()
	w := write(t, f.st, key, storetest.Data(key, PartSize+10))
	if f.uploads(t) != 1 {
		t.Fatal("no multipart upload in progress")
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if n := f.uploads(t); n != 0 {
		t.Errorf("%d multipart uploads left after Abort", n)
	}

	crashed := storetest.NewKey()
	_ = write(t, f.st, crashed, storetest.Data(crashed, PartSize+10)) // dropped: a crash
	st := f.open(t, "n1")
	asked := 0
	if err := st.Recover(ctx, func(string) (bool, error) { asked++; return false, nil }); err != nil {
		t.Fatal(err)
	}
	if n := f.uploads(t); n != 0 {
		t.Errorf("%d multipart uploads left after Recover", n)
	}
	w, err := st.Create(ctx, crashed)
	if err != nil {
		t.Fatalf("key of the crashed upload not free after Recover: %v", err)
	}
	w.Abort()
}

// TestRecoverScope: Recover lists only this node's markers: it does
// not touch the objects of the bucket, nor another node's fresh work.
func TestRecoverScope(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for range 20 {
		k := storetest.NewKey()
		w := write(t, f.st, k, []byte(k))
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := f.st.Publish(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	mine := storetest.NewKey()
	if err := write(t, f.st, mine, []byte("x")).Commit(); err != nil {
		t.Fatal(err)
	}
	other := f.open(t, "n2")
	theirs := storetest.NewKey()
	if err := write(t, other, theirs, []byte("y")).Commit(); err != nil {
		t.Fatal(err)
	}
	f.rec.reset()
	var asked []string
	if err := f.open(t, "n1").Recover(ctx, func(k string) (bool, error) { asked = append(asked, k); return true, nil }); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 1 || asked[0] != mine {
		t.Errorf("Recover asked about %v, want only %s", asked, mine)
	}
	// The bucket's HEAD at open, one listing of pending/, a HEAD and a
	// DELETE for the one marker, one listing of open/ (no open epoch).
	if n := f.rec.count(http.MethodGet) + f.rec.count(http.MethodHead); n > 4 {
		t.Errorf("Recover made %d GET/HEAD requests for one marker", n)
	}
	if got := readAll(t, other, theirs); string(got) != "y" {
		t.Errorf("another node's pending blob: %q", got)
	}
}

// TestRangedReads: Open reads lazily by ranges; sequential reading of a
// large object takes a few requests, not one per Read; Seek lands where
// it says, forward and back.
func TestRangedReads(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	key := storetest.NewKey()
	data := storetest.Data(key, 20<<20+7)
	if err := write(t, f.st, key, data).Commit(); err != nil {
		t.Fatal(err)
	}
	f.rec.reset()
	r, err := f.st.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 4096)
	var got []byte
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("sequential read differs")
	}
	if n := f.rec.count(http.MethodGet); n > 6 {
		t.Errorf("reading %d bytes 4 KiB at a time took %d GETs", len(data), n)
	}
	rs := r.(io.ReadSeeker)
	for _, off := range []int64{15 << 20, 100, 100 + 4096 + 10, 19 << 20, int64(len(data)) - 5} {
		if at, err := rs.Seek(off, io.SeekStart); err != nil || at != off {
			t.Fatalf("Seek(%d) = %d, %v", off, at, err)
		}
		p := make([]byte, min(3000, int64(len(data))-off))
		if _, err := io.ReadFull(rs, p); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if !bytes.Equal(p, data[off:off+int64(len(p))]) {
			t.Fatalf("bytes at %d differ", off)
		}
	}
	if n, err := rs.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("read at the end = %d, %v", n, err)
	}
	if at, _ := rs.Seek(-10, io.SeekEnd); at != int64(len(data))-10 {
		t.Errorf("Seek from end = %d", at)
	}
}

// TestConnectionsReused: writing, publishing and reading blobs one
// after another keeps using the connection already open; reads that
// stop short of a range's end (Close, or a Seek elsewhere) too, the rest
// of a short range read and discarded.
func TestConnectionsReused(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var dials atomic.Int32
	dial := f.st.tr.DialContext
	f.st.tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dial(ctx, network, addr)
	}
	data := storetest.Data("reuse", 200<<10)
	writeRead := func() {
		w := write(t, f.st, "", data)
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := f.st.Publish(ctx, w.Key()); err != nil {
			t.Fatal(err)
		}
		r, err := f.st.Open(ctx, w.Key())
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 50<<10)
		if _, err := io.ReadFull(r, p); err != nil || !bytes.Equal(p, data[:len(p)]) {
			t.Fatalf("read: %v", err)
		}
		// Back to the start: a new range, the rest of the first dropped.
		if _, err := r.(io.Seeker).Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, p[:10]); err != nil || !bytes.Equal(p[:10], data[:10]) {
			t.Fatalf("read after Seek: %v", err)
		}
		r.Close() // before the end
	}
	writeRead() // opens the connection
	dials.Store(0)
	for range 5 {
		writeRead()
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("5 writes and partial reads opened %d new connections, want 0", n)
	}
}

// stalled is a store that answers a GET with the first bytes of its
// range and then nothing, until the request is cancelled.
type stalled struct{}

type stallBody struct {
	ctx  context.Context
	sent bool
}

func (b *stallBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, "0123456789"), nil
	}
	<-b.ctx.Done()
	return 0, b.ctx.Err()
}
func (b *stallBody) Close() error { return nil }

func (stalled) RoundTrip(rq *http.Request) (*http.Response, error) {
	rsp := &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: http.NoBody, Request: rq}
	if rq.Method == http.MethodGet {
		rsp.StatusCode, rsp.Status = http.StatusPartialContent, "206 Partial Content"
		rsp.Header.Set("Content-Range", "bytes 0-99/100")
		rsp.ContentLength = 100
		rsp.Body = &stallBody{ctx: rq.Context()}
	}
	return rsp, nil
}

// TestCloseOnStalledRange: Close of a reader whose range the server
// stopped sending returns within about drainWait, not the range's
// timeout.
func TestCloseOnStalledRange(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AK")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "SK")
	st, err := open(context.Background(), "s3://bucket/p?endpoint=http://127.0.0.1:9",
		func(http.RoundTripper) http.RoundTripper { return stalled{} })
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err := st.Open(context.Background(), storetest.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 5)
	if _, err := io.ReadFull(r, p); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	start := time.Now()
	go func() { r.Close(); close(done) }()
	select {
	case <-done:
		t.Logf("Close took %s", time.Since(start))
	case <-time.After(drainWait + 10*time.Second):
		t.Fatal("Close blocked on a stalled range")
	}
}

// TestUnavailable: with the store unreachable, writes and reads fail
// soon, wrapping store.ErrUnavailable (the archive's "try later"), and nothing
// of the blob is left; once it is back, everything works again.
func TestUnavailable(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	kept := storetest.NewKey()
	if err := write(t, f.st, kept, []byte("kept")).Commit(); err != nil {
		t.Fatal(err)
	}
	w, err := f.st.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("lost")); err != nil {
		t.Fatal(err)
	}
	if err := w.(*writer).mark(); err != nil { // its epoch's marker is in the store
		t.Fatal(err)
	}
	if w.(store.DurableNamer).NameDurable() {
		t.Fatal("a blob of an epoch is NameDurable: its index row would not wait for its Commit")
	}
	f.s3.Stop()
	start := time.Now()
	if err := w.Commit(); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Commit with the store down: %v, want store.ErrUnavailable", err)
	}
	if _, err := f.st.Open(ctx, kept); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Open with the store down: %v, want store.ErrUnavailable", err)
	}
	if _, err := f.st.Create(ctx, storetest.NewKey()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Create with the store down: %v, want store.ErrUnavailable", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("failing took %s", d)
	}
	f.s3.Start()
	if got := readAll(t, f.st, kept); string(got) != "kept" {
		t.Errorf("after the store came back: %q", got)
	}
	if _, err := f.st.Open(ctx, w.Key()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the blob whose Commit failed: Open = %v, want ErrNotFound", err)
	}
	// The next Publish removes what the failed Commit left (its marker).
	if err := f.st.Publish(ctx, kept); err != nil {
		t.Fatal(err)
	}
	if n := f.markers(t); n != 0 {
		t.Errorf("%d markers left once the store is back and a blob was published", n)
	}
	// Recover after a restart finds and removes what the failed Commit
	// could not (its marker).
	if err := f.open(t, "n1").Recover(ctx, func(k string) (bool, error) { return k == kept, nil }); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, f.st, kept); string(got) != "kept" {
		t.Errorf("after Recover: %q", got)
	}
}

// answerAll is a store that answers every request 200, and records the
// payload hash each PUT with a body was signed with.
type answerAll struct {
	mu     sync.Mutex
	hashes []string
	bodies [][]byte
}

func (a *answerAll) RoundTrip(rq *http.Request) (*http.Response, error) {
	if rq.Method == http.MethodPut && rq.ContentLength > 0 {
		b, err := io.ReadAll(rq.Body)
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		a.hashes = append(a.hashes, rq.Header.Get("X-Amz-Content-Sha256"))
		a.bodies = append(a.bodies, b)
		a.mu.Unlock()
	}
	if rq.Body != nil {
		rq.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Etag": {`"e"`}}, Body: http.NoBody, Request: rq}, nil
}

// TestPayloadSigning: a request body is signed with its SHA-256 only over
// plain HTTP to a host other than loopback; over HTTPS and on loopback
// it goes as UNSIGNED-PAYLOAD (the CRC-32C is still sent and checked).
func TestPayloadSigning(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AK")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "SK")
	data := storetest.Data("signed", 5000)
	sum := sha256.Sum256(data)
	for _, c := range []struct {
		endpoint string
		want     string
	}{
		{"http://192.0.2.1:9000", hex.EncodeToString(sum[:])},
		{"http://s3.example.org", hex.EncodeToString(sum[:])},
		{"https://s3.example.org", "UNSIGNED-PAYLOAD"},
		{"https://192.0.2.1:9000", "UNSIGNED-PAYLOAD"},
		{"http://127.0.0.1:9000", "UNSIGNED-PAYLOAD"},
		{"http://127.3.4.5:9000", "UNSIGNED-PAYLOAD"},
		{"http://[::1]:9000", "UNSIGNED-PAYLOAD"},
		{"http://localhost:9000", "UNSIGNED-PAYLOAD"},
	} {
		a := &answerAll{}
		st, err := open(context.Background(), "s3://bucket/p?endpoint="+c.endpoint,
			func(http.RoundTripper) http.RoundTripper { return a })
		if err != nil {
			t.Fatalf("%s: %v", c.endpoint, err)
		}
		if err := write(t, st, "", data).Commit(); err != nil {
			t.Fatalf("%s: %v", c.endpoint, err)
		}
		st.Close()
		if len(a.hashes) != 1 || a.hashes[0] != c.want || !bytes.Equal(a.bodies[0], data) {
			t.Errorf("%s: bodies signed with %q, want %q", c.endpoint, a.hashes, c.want)
		}
	}
}

// TestDSN: the URL names bucket, prefix, endpoint and region; it may
// not carry credentials; a credentials file must be the owner's alone.
func TestDSN(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("HOME", t.TempDir())
	for _, bad := range []string{
		"s3://id:secret@bucket/p?endpoint=http://127.0.0.1:9",
		"s3://bucket/p?endpoint=http://id:secret@127.0.0.1:9",
		"http://bucket/p",
		"s3:///p",
		"s3://bucket/a/../b",
		"s3://bucket/p?endpoint=ftp://x",
		"s3://bucket/p?secret=x",
	} {
		if _, err := parseDSN(bad); err == nil {
			t.Errorf("%s accepted", bad)
		} else if strings.Contains(err.Error(), "secret") && !strings.Contains(bad, "secret=x") && strings.Contains(err.Error(), "id:secret") {
			t.Errorf("%s: the error repeats the credentials: %v", bad, err)
		}
	}
	if _, err := parseDSN("s3://bucket/p?endpoint=http://127.0.0.1:9"); err == nil || !strings.Contains(err.Error(), "no credentials") {
		t.Errorf("without credentials: %v", err)
	}
	file := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(file, []byte("[other]\naws_access_key_id = X\naws_secret_access_key = Y\n[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dsn := "s3://bucket/a/b/?endpoint=http://127.0.0.1:9/&region=eu-1&credentials_file=" + file
	if _, err := parseDSN(dsn); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Errorf("a credentials file others may read: %v", err)
	}
	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := parseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if c.bucket != "bucket" || c.prefix != "a/b/" || c.endpoint != "http://127.0.0.1:9" || c.region != "eu-1" || c.access != "AK" || c.secret != "SK" {
		t.Errorf("parsed %+v", c)
	}
	if c, err := parseDSN(dsn + "&profile=other"); err != nil || c.access != "X" {
		t.Errorf("profile other: %+v, %v", c, err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "EK")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "ES")
	if c, err := parseDSN("s3://bucket?endpoint=http://127.0.0.1:9"); err != nil || c.access != "EK" || c.prefix != "" || c.signPayload() {
		t.Errorf("from the environment: %+v, %v", c, err)
	}
	if c, _ := parseDSN("s3://bucket?endpoint=http://192.0.2.1:9"); c == nil || !c.signPayload() {
		t.Error("plain HTTP beyond loopback: payload not signed")
	}
}

// racer answers the first n PUTs of a marker with versitygw's 409
// ExistingObjectIsDirectory, as when a Publish removes the node's pending
// folder while the marker is being created in it.
type racer struct {
	n, seen atomic.Int32
	next    http.RoundTripper
}

func (r *racer) RoundTrip(rq *http.Request) (*http.Response, error) {
	if rq.Method == http.MethodPut && strings.Contains(rq.URL.Path, "/open/") && r.n.Add(-1) >= 0 {
		r.seen.Add(1)
		if rq.Body != nil {
			rq.Body.Close()
		}
		body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>ExistingObjectIsDirectory</Code><Message>raced</Message></Error>`
		return &http.Response{StatusCode: http.StatusConflict, Status: "409 Conflict", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/xml"}}, Body: io.NopCloser(strings.NewReader(body)),
			ContentLength: int64(len(body)), Request: rq}, nil
	}
	return r.next.RoundTrip(rq)
}

// TestRacedFolderRetriedAtOnce: a request that lost the race for a
// folder (versitygw's posix back end removing the pending folder a
// Publish emptied) is sent again after a millisecond, not after the
// standard jittered backoff of up to MaxBackoff that held a C-STORE for
// a second now and then (issue 18: PostgreSQL + S3 with one association
// at a quarter of either alone). Other failures still back off.
func TestRacedFolderRetriedAtOnce(t *testing.T) {
	s := harness.StartS3(t)
	s.SetEnv(t)
	r := &racer{}
	r.n.Store(1)
	st, err := open(context.Background(), s.URL(s.Bucket(t), "p"), func(next http.RoundTripper) http.RoundTripper {
		r.next = next
		return r
	})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	raced := &smithy.GenericAPIError{Code: "ExistingObjectIsDirectory", Message: "raced"}
	for attempt := 1; attempt < MaxAttempts; attempt++ {
		d, err := st.c.Options().Retryer.RetryDelay(attempt, raced)
		if err != nil || d > 5*time.Millisecond {
			t.Fatalf("attempt %d after a raced folder: delay %v, %v; want at most a few milliseconds", attempt, d, err)
		}
	}
	var longest time.Duration
	for range 50 {
		d, _ := st.c.Options().Retryer.RetryDelay(1, &smithy.GenericAPIError{Code: "SlowDown"})
		longest = max(longest, d)
	}
	if longest < 50*time.Millisecond {
		t.Fatalf("other failures: longest of 50 delays %v; want a backoff", longest)
	}

	w := write(t, st, "", []byte("raced marker"))
	if err := w.Commit(); err != nil {
		t.Fatalf("commit after a raced marker: %v", err)
	}
	if r.seen.Load() != 1 {
		t.Fatalf("the marker PUT was refused %d times; want 1 (the race injected)", r.seen.Load())
	}
	if got := readAll(t, st, w.Key()); string(got) != "raced marker" {
		t.Fatalf("read back %q", got)
	}
}

// openMarkers lists the epoch markers in the bucket.
func (f *fixture) openMarkers(t *testing.T) []string {
	t.Helper()
	out, err := f.s3.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: &f.st.bucket, Prefix: aws.String(f.st.epochsDir())})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range out.Contents {
		names = append(names, aws.ToString(o.Key))
	}
	return names
}

// TestEpochs: blobs whose key the store chooses cost one request each
// (their epoch's marker is shared); a node killed mid-ingest leaves
// what its restart finds by listing its open epochs alone: the object
// no index row names is removed, the unfinished multipart upload and its
// intent record too, the indexed one kept; a clean Close leaves no epoch
// open.
func TestEpochs(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// Published objects of other epochs and nodes, which Recover must
	// not list.
	other := f.open(t, "n2")
	for range 5 {
		w := write(t, other, "", []byte("other node"))
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := other.Publish(ctx, w.Key()); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}

	killed := f.open(t, "n1")
	f.rec.reset()
	const n = 20
	var indexed, lost []string
	for i := range n {
		w := write(t, killed, "", []byte(fmt.Sprintf("blob %d", i)))
		if w.(store.DurableNamer).NameDurable() {
			t.Fatal("a blob of an epoch is NameDurable")
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if i%4 == 3 {
			lost = append(lost, w.Key()) // crashed before its row committed
			continue
		}
		indexed = append(indexed, w.Key())
	}
	if err := killed.PublishAll(ctx, indexed); err != nil {
		t.Fatal(err)
	}
	// One PUT per blob and one per epoch; publishing sends nothing.
	if puts, epochs := f.rec.count(http.MethodPut), len(f.openMarkers(t)); puts != n+epochs || epochs < 1 || epochs > 2 {
		t.Errorf("%d PUTs for %d blobs in %d epochs", puts, n, epochs)
	}
	if d := f.rec.count(http.MethodDelete) + f.rec.count(http.MethodPost); d != 0 {
		t.Errorf("%d DELETE/POST requests to store and publish", d)
	}
	// A multipart blob whose upload was cut short after its intent record.
	big := write(t, killed, "", bytes.Repeat([]byte{7}, PartSize+1)).(*writer)
	if err := big.SetIntent([]byte("intent")); err != nil {
		t.Fatal(err)
	}
	if f.uploads(t) != 1 {
		t.Fatalf("%d multipart uploads, want 1", f.uploads(t))
	}
	if _, err := killed.c.PutObject(ctx, &s3.PutObjectInput{Bucket: &killed.bucket, Key: aws.String(killed.intentName(big.key)),
		Body: strings.NewReader("intent")}); err != nil {
		t.Fatal(err)
	}
	// Killed: nothing more is sent (the handle is dropped).

	restarted := f.open(t, "n1")
	f.rec.reset()
	asked := map[string]bool{}
	if err := restarted.Recover(ctx, func(k string) (bool, error) {
		asked[k] = true
		return slices.Contains(indexed, k), nil
	}); err != nil {
		t.Fatal(err)
	}
	// Listings: pending/, open/, and each open epoch's objects, uploads
	// and intents; never the bucket's objects.
	if g := f.rec.count(http.MethodGet); g > 2+3*2 {
		t.Errorf("Recover sent %d GETs", g)
	}
	if len(asked) != n {
		t.Errorf("Recover asked about %d blobs, want the %d of the open epochs", len(asked), n)
	}
	for _, k := range indexed {
		if got := readAll(t, restarted, k); !strings.HasPrefix(string(got), "blob ") {
			t.Errorf("indexed blob %s: %q", k, got)
		}
	}
	for _, k := range lost {
		if _, err := restarted.Open(ctx, k); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unindexed blob %s after Recover: %v", k, err)
		}
	}
	if _, err := restarted.Intent(ctx, big.key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the intent of the unfinished upload: %v", err)
	}
	if u := f.uploads(t); u != 0 {
		t.Errorf("%d multipart uploads left", u)
	}
	if m := f.openMarkers(t); len(m) != 0 {
		t.Errorf("epochs left open after Recover: %v", m)
	}

	// A clean stop leaves no epoch open.
	w := write(t, restarted, "", []byte("clean"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := restarted.Publish(ctx, w.Key()); err != nil {
		t.Fatal(err)
	}
	if m := f.openMarkers(t); len(m) != 1 {
		t.Errorf("open epochs while writing: %v", m)
	}
	if err := restarted.Close(); err != nil {
		t.Fatal(err)
	}
	if m := f.openMarkers(t); len(m) != 0 {
		t.Errorf("epochs left open after a clean Close: %v", m)
	}
}

// TestEpochRowsWithoutObjects: with the index's keys at hand
// (UseIndexKeys), a blob of an epoch is a DurableNamer, so that its row
// may be committed while it uploads; a crash in between leaves a row
// naming no object, which Recover finds through the index and asks keep
// about (the archive removes such a row: never acknowledged). Rows of
// another node's epoch are not its business.
func TestEpochRowsWithoutObjects(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var mu sync.Mutex
	rows := map[string]bool{} // the index: blob keys rows name
	row := func(k string) {
		mu.Lock()
		defer mu.Unlock()
		rows[k] = true
	}
	list := func(_ context.Context, prefix string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		var ks []string
		for k := range rows {
			if strings.HasPrefix(k, prefix) {
				ks = append(ks, k)
			}
		}
		return ks, nil
	}
	killed := f.open(t, "n1")
	killed.UseIndexKeys(list)
	done := write(t, killed, "", []byte("done"))
	if !done.(store.DurableNamer).NameDurable() {
		t.Fatal("with the index's keys, a blob of an epoch is not NameDurable")
	}
	row(done.Key())
	if err := done.Commit(); err != nil {
		t.Fatal(err)
	}
	cut := write(t, killed, "", []byte("cut short"))
	if !cut.(store.DurableNamer).NameDurable() {
		t.Fatal("not NameDurable")
	}
	row(cut.Key()) // committed; the upload never completes
	other := f.open(t, "n2")
	other.UseIndexKeys(list)
	theirs := write(t, other, "", []byte("theirs"))
	row(theirs.Key())

	restarted := f.open(t, "n1")
	restarted.UseIndexKeys(list)
	asked := map[string]bool{}
	if err := restarted.Recover(ctx, func(k string) (bool, error) {
		asked[k] = true
		if k == cut.Key() {
			mu.Lock()
			delete(rows, k) // as the archive does: the bytes are not there
			mu.Unlock()
			return false, nil
		}
		mu.Lock()
		defer mu.Unlock()
		return rows[k], nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 2 || !asked[done.Key()] || !asked[cut.Key()] {
		t.Errorf("Recover asked about %v, want %s and %s", asked, done.Key(), cut.Key())
	}
	if got := readAll(t, restarted, done.Key()); string(got) != "done" {
		t.Errorf("kept blob: %q", got)
	}
	if err := theirs.Commit(); err != nil {
		t.Fatalf("the other node's blob after n1's restart: %v", err)
	}
	if m := f.openMarkers(t); len(m) != 1 || !strings.Contains(m[0], "/n2/") {
		t.Errorf("open epochs after n1's recovery: %v, want n2's alone", m)
	}
}
