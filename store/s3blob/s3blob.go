// Package s3blob stores blobs as objects in an S3-compatible object
// store. It registers the "s3" Blobs backend; the data source name is
//
//	s3://BUCKET/PREFIX?endpoint=URL&region=REGION[&credentials_file=FILE][&profile=NAME]
//
// With an endpoint (any S3-compatible store: versitygw, Ceph, MinIO…)
// requests use path-style addressing (http://host/BUCKET/KEY); without
// one, AWS's own endpoints. The credentials never come from the URL (one
// with user information is refused): AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), else the shared
// credentials file credentials_file, AWS_SHARED_CREDENTIALS_FILE or
// ~/.aws/credentials (profile NAME, AWS_PROFILE or "default"), which
// must not be readable by others (0600).
//
// Layout under PREFIX/ (object names, P being the prefix):
//
//	P/n/<node>/<E5>/<E8>/<key>.dcm  a blob whose key the store chose
//	                          (Create with ""): in epoch E8 of node
//	                          <node> (E5, its top bits, keeps folders
//	                          small); see epoch.go
//	P/open/<node>/<E8>        empty marker: the epoch is open
//	P/o/<s>/<key>.dcm         a blob whose key the caller gave
//	P/pending/<node>/<key>    empty marker: that blob is being written,
//	                          or committed and not yet published
//	P/intent/<key>            the intent record of a blob too large for
//	                          one request (smaller ones carry it as the
//	                          object's metadata, x-amz-meta-ward-intent)
//
// where <s> is the key's first two characters ('.' as '_'), so that a
// store backed by a file system (versitygw's posix back end) keeps no
// directory of a billion entries. An object store has no rename, so a
// blob's bytes are written once, under their final name, with
// If-None-Match: * (a second writer of the key gets 412 and
// store.ErrExists): pending and published differ only by a marker.
//
// The archive's C-STORE lets the store choose the key: such a blob
// costs one request, its PutObject. The key names the node and the
// epoch (EpochLength) it was created in; the epoch's marker is written
// before the first object of the epoch and removed once every blob of
// the epoch is published or removed, so a node writes two markers per
// epoch, not two per blob. Recover, at a node's start, lists the node's
// open epochs (those of its last seconds before a crash; none after a
// clean stop), aborts their unfinished multipart uploads, asks keep
// about each of their objects and removes what is not kept. Such a blob
// is not a DurableNamer: its index row is committed after Commit, so no
// row can name an object a crash lost.
//
// A blob whose key the caller gives has a marker of its own: Create
// writes it (also with If-None-Match: *) before any byte of the blob
// can exist; Publish removes it (BatchPublisher: many in one
// DeleteObjects). Recover lists P/pending/<node>/: it aborts the
// multipart uploads left, asks keep about the blob of each marker
// (complete or not: the caller may have committed a row while the bytes
// were uploading), and removes what is not kept.
//
// Either way Recover sees only the node's own unfinished work, whatever
// the size of the bucket; markers and epochs of other nodes are left to
// them unless older than NodeGuard (a node retired without its last
// restart). What a write that failed while the store was away could not
// remove is tried again at the next Publish (and, failing that, by
// Recover).
//
// Writes stream: a blob of up to PartSize bytes is sent in one PutObject
// at Commit; a larger one as a multipart upload of PartSize parts, each
// sent as soon as it is full. A writer holds at most one part (8 MiB) in
// memory, whatever the size of the blob. Every request body carries its
// CRC-32C (x-amz-checksum-crc32c), which the server checks before it
// keeps the bytes; an incomplete multipart upload is aborted on the
// server (at Abort, at a failed Commit, or by Recover after a crash), so
// no half-stored object is ever visible.
//
// Every request is signed (SigV4), headers and all, the CRC-32C with
// them; the body itself is part of the signature (its SHA-256, a pass
// over every byte on each side) only over plain HTTP to a host other
// than loopback. Over HTTPS TLS protects the body, and to a loopback
// endpoint (127.0.0.0/8, ::1, localhost) there is no wire to tamper with:
// there it goes as UNSIGNED-PAYLOAD, and the server's check of the
// CRC-32C catches corruption. A CRC is no defence against a forger, which
// is why plain HTTP beyond loopback keeps the signed body (and why it is
// for a network one trusts: it also shows the objects to anyone on it).
//
// Reads are lazy ranged GETs: Open fetches the first MiB (and learns the
// size); sequential reading continues with ranges that double up to 16
// MiB, streamed, so that reading an object takes a few requests, and Seek
// (frames of a multi-frame object) starts a new range where it lands.
//
// Every request has a deadline (OpTimeout; PartTimeout for a part or a
// range) and is retried at most MaxAttempts times. An unreachable store,
// a timeout or a server error (5xx, 429) is reported wrapping
// store.ErrUnavailable: the operation may succeed later; other refusals
// (403, a missing bucket) are permanent.
//
// There is no SpaceReporter: an object store reports no free space.
package s3blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/ward-pacs/ward/store"
)

func init() {
	store.RegisterBlobs("s3", func(ctx context.Context, dsn string) (store.Blobs, error) {
		return Open(ctx, dsn)
	})
}

// Limits.
const (
	// PartSize is the size of a multipart upload's parts, and the largest
	// blob sent in one PutObject. A writer buffers at most this much.
	PartSize = 8 << 20
	// OpTimeout bounds each request without a body to speak of.
	OpTimeout = 30 * time.Second
	// PartTimeout bounds each request carrying a part or a read range.
	PartTimeout = 5 * time.Minute
	// MaxAttempts is how often a request is tried in all.
	MaxAttempts = 3
	// NodeGuard is how old another node's marker must be before Recover
	// decides on it (a node retired without a last restart).
	NodeGuard = 24 * time.Hour
	// MaxKeyLen is the longest key accepted.
	MaxKeyLen = 128
	// maxIntent is the longest intent record kept as object metadata
	// (S3 allows 2 KiB of metadata in all).
	maxIntent  = 1024
	firstRange = 1 << 20
	maxRange   = 16 << 20
	// skipLimit: a forward Seek within the range being read discards up
	// to this much rather than starting another request.
	skipLimit = 256 << 10
)

const ext = ".dcm"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Store is an S3 Blobs backend. It is safe for concurrent use.
type Store struct {
	c      *s3.Client
	tr     *http.Transport
	bucket string
	prefix string
	node   string
	closed atomic.Bool

	// committed: keys committed by this handle and not yet published, so
	// that Publish need not ask whether the object exists.
	committed sync.Map

	// What a failed write could not remove (the store away), tried again
	// at the next Publish: objects, then the markers; the keys resolved
	// once they are gone (epoch.go).
	leftMu                             sync.Mutex
	leftObjects, leftMarkers, leftKeys []string

	// This handle's epochs (epoch.go).
	epochMu   sync.Mutex
	epochs    map[int64]*epoch
	lastEpoch int64
	closer    chan struct{} // closes the loop that closes epochs
	// The index's blob keys by prefix (UseIndexKeys), or nil.
	indexKeys func(ctx context.Context, prefix string) ([]string, error)
}

// leave records names a cleanup could not remove.
func (s *Store) leave(key string, objects, markers []string) {
	s.leftMu.Lock()
	defer s.leftMu.Unlock()
	s.leftObjects = append(s.leftObjects, objects...)
	s.leftMarkers = append(s.leftMarkers, markers...)
	s.leftKeys = append(s.leftKeys, key)
}

// retryLeft removes what failed writes left: the objects first, so that
// a marker goes only once its object is gone (else Recover, which finds
// objects by their markers, could not). What fails again stays for the
// next try (or for Recover at the next start).
func (s *Store) retryLeft(ctx context.Context) {
	s.leftMu.Lock()
	objects, markers, keys := s.leftObjects, s.leftMarkers, s.leftKeys
	s.leftObjects, s.leftMarkers, s.leftKeys = nil, nil, nil
	s.leftMu.Unlock()
	if len(keys) == 0 {
		return
	}
	if len(objects) > 0 {
		if err := s.deleteObjects(ctx, objects); err != nil {
			s.leftMu.Lock()
			s.leftObjects = append(s.leftObjects, objects...)
			s.leftMarkers = append(s.leftMarkers, markers...)
			s.leftKeys = append(s.leftKeys, keys...)
			s.leftMu.Unlock()
			return
		}
	}
	if err := s.deleteObjects(ctx, markers); err != nil {
		s.leftMu.Lock()
		s.leftMarkers = append(s.leftMarkers, markers...)
		s.leftKeys = append(s.leftKeys, keys...)
		s.leftMu.Unlock()
		return
	}
	s.resolve(keys...)
}

var (
	_ store.Blobs             = (*Store)(nil)
	_ store.BlobWalker        = (*Store)(nil)
	_ store.IntentReader      = (*Store)(nil)
	_ store.BatchPublisher    = (*Store)(nil)
	_ store.UnfinishedRemover = (*Store)(nil)
	_ store.NodeScoper        = (*Store)(nil)
	_ store.IndexKeysUser     = (*Store)(nil)
	_ store.WholeBlobs        = (*Store)(nil)
	_ store.BlobWriter        = (*writer)(nil)
	_ store.DurableNamer      = (*writer)(nil)
	_ store.IntentWriter      = (*writer)(nil)
	_ io.ReadSeekCloser       = (*reader)(nil)
)

// Open opens the bucket a data source name names (see the package
// comment) and checks that it is there.
func Open(ctx context.Context, dsn string) (*Store, error) {
	return open(ctx, dsn, nil)
}

// open is Open with, for tests, a wrapper of the HTTP transport.
func open(ctx context.Context, dsn string, wrapRT func(http.RoundTripper) http.RoundTripper) (*Store, error) {
	cfg, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: PartTimeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		ForceAttemptHTTP2:     true,
	}
	var rt http.RoundTripper = tr
	if wrapRT != nil {
		rt = wrapRT(tr)
	}
	opts := s3.Options{
		Region:      cfg.region,
		Credentials: credentials.NewStaticCredentialsProvider(cfg.access, cfg.secret, cfg.token),
		HTTPClient:  &http.Client{Transport: rt},
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = MaxAttempts
			o.MaxBackoff = 2 * time.Second
			o.Retryables = append(slices.Clone(o.Retryables), retry.IsErrorRetryableFunc(racedDirectory))
			o.Backoff = racedSoon{retry.NewExponentialJitterBackoff(o.MaxBackoff)}
		}),
		// The checksums are ours (CRC-32C, sent with every body); the
		// client computes none of its own.
		RequestChecksumCalculation:                aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation:                aws.ResponseChecksumValidationWhenRequired,
		DisableLogOutputChecksumValidationSkipped: true,
		// No "Expect: 100-continue" (the SDK's default on bodies of 2
		// MB or more, that is parts): the transport sends the body at
		// once anyway (no ExpectContinueTimeout), so it would be a
		// header for nothing.
		ContinueHeaderThresholdBytes: -1,
	}
	if cfg.endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.endpoint)
		opts.UsePathStyle = true
	}
	if !cfg.signPayload() {
		opts.APIOptions = append(opts.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
	}
	opts.APIOptions = append(opts.APIOptions, leanStack)
	s := &Store{c: s3.New(opts), tr: tr, bucket: cfg.bucket, prefix: cfg.prefix, node: store.DefaultNode}
	octx, cancel := context.WithTimeout(ctx, OpTimeout)
	defer cancel()
	if _, err := s.c.HeadBucket(octx, &s3.HeadBucketInput{Bucket: &s.bucket}); err != nil {
		err = s.wrap(ctx, err)
		if errors.Is(err, store.ErrNotFound) {
			tr.CloseIdleConnections()
			return nil, fmt.Errorf("s3blob: bucket %q not found (make it first)", s.bucket)
		}
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("s3blob: opening bucket %q with credentials from %s: %w", s.bucket, cfg.credsFrom, err)
	}
	return s, nil
}

// leanStack takes out of every request's middleware stack the steps
// that only report on the client to AWS, in headers Ward has no use for:
// an invocation ID (a UUID from crypto/rand per request), the attempt
// count, the features and checksum settings used and where the
// credentials came from (user-agent metrics), and the Lambda recursion
// check. What the request means, its signature, retries and the
// reading of errors are untouched. They cost some 10 to 25 of the ~500
// allocations of a request (docs/PERFORMANCE.md, "S3 client cost per
// object").
func leanStack(st *middleware.Stack) error {
	for _, id := range []string{"ClientRequestID", "RecursionDetection", "SetCredentialSourceMiddleware",
		"AWSChecksum:RequestMetricsTracking", "AWSChecksum:ResponseMetricsTracking"} {
		st.Build.Remove(id) // absent from some operations' stacks: no error
	}
	st.Finalize.Remove("RetryMetricsHeader")
	return nil
}

// racedDirectory: versitygw's posix back end answers 409
// ExistingObjectIsDirectory when an object is created in a folder that a
// concurrent delete of the folder's last object is removing. Tried
// again, it succeeds.
func racedDirectory(err error) aws.Ternary {
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == "ExistingObjectIsDirectory" {
		return aws.TrueTernary
	}
	return aws.UnknownTernary
}

// racedSoon is the retry delay: a request that lost a race for a
// folder (racedDirectory) is sent again at once, as the race is over by
// then; other failures back off (exponential, jittered, up to
// MaxBackoff). The standard delay would hold a C-STORE for a random
// 0–2 s after a race that ends in microseconds: with one association
// on versitygw, where a Publish that empties a node's pending folder
// races the next blob's marker about once in fifty stores, that was
// most of the time spent (issue 18).
type racedSoon struct{ next retry.BackoffDelayer }

func (r racedSoon) BackoffDelay(attempt int, err error) (time.Duration, error) {
	if racedDirectory(err) == aws.TrueTernary {
		return time.Millisecond, nil
	}
	return r.next.BackoffDelay(attempt, err)
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

func (s *Store) check(key string) error {
	if s.closed.Load() {
		return fmt.Errorf("s3blob: %w", store.ErrClosed)
	}
	if !ValidKey(key) {
		return fmt.Errorf("s3blob: key %q: %w", key, store.ErrInvalidKey)
	}
	return nil
}

// Object names.
func (s *Store) objectName(key string) string {
	if n, ok := epochOf(key); ok {
		return s.epochDir(key[34:], n) + key + ext
	}
	sh := []byte((key + "__")[:2])
	for i, c := range sh {
		if c == '.' {
			sh[i] = '_'
		}
	}
	return s.prefix + "o/" + string(sh) + "/" + key + ext
}
func (s *Store) markerDir(node string) string { return s.prefix + "pending/" + node + "/" }
func (s *Store) markerName(key string) string { return s.markerDir(s.node) + key }
func (s *Store) intentName(key string) string { return s.prefix + "intent/" + key }
func (s *Store) objectsDir() string           { return s.prefix + "o/" }
func (s *Store) pendingDir() string           { return s.prefix + "pending/" }
func keyFromMarker(name, dir string) string   { return strings.TrimPrefix(name, dir) }
func crcOf(b []byte) uint32                   { return crc32.Checksum(b, castagnoli) }
func crcHeader(sum uint32) *string {
	return aws.String(base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, sum)))
}
func (s *Store) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, OpTimeout)
}

// SetNode implements store.NodeScoper: the node's markers are under
// pending/<id>/, and the keys the store chooses end in ".<id>". id is 1
// to 64 of A-Z a-z 0-9 _ -.
func (s *Store) SetNode(id string) error {
	if len(id) == 0 || len(id) > 64 || strings.Contains(id, ".") || !ValidKey(id) {
		return fmt.Errorf("s3blob: %q cannot name a node", id)
	}
	s.node = id
	return nil
}

// keyNode is the node a key the store chose belongs to: "" for a key a
// caller gave.
func keyNode(key string) string {
	if _, ok := epochOf(key); ok {
		return key[34:]
	}
	if len(key) > 33 && key[32] == '.' {
		return key[33:]
	}
	return ""
}

func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// wrap turns an SDK error into one of the store's: a missing object is
// store.ErrNotFound, a failed precondition store.ErrExists, anything
// that may pass (no answer, a timeout, 5xx, 429) store.ErrUnavailable. The
// caller's own cancellation is returned as it is.
func (s *Store) wrap(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		switch code := re.HTTPStatusCode(); {
		case code == 0: // no answer: the request was not sent or the connection failed
			return fmt.Errorf("s3blob: %w: %v", store.ErrUnavailable, err)
		case code == http.StatusNotFound:
			return fmt.Errorf("%w (%v)", store.ErrNotFound, err)
		case code == http.StatusPreconditionFailed:
			return fmt.Errorf("%w (%v)", store.ErrExists, err)
		case code == http.StatusConflict:
			// A conditional write racing another of the same name: one
			// of them wins, this one did not.
			var ae smithy.APIError
			if errors.As(err, &ae) && ae.ErrorCode() == "ConditionalRequestConflict" {
				return fmt.Errorf("%w (%v)", store.ErrExists, err)
			}
			return fmt.Errorf("s3blob: %w: %v", store.ErrUnavailable, err)
		case code >= 500, code == http.StatusTooManyRequests, code == http.StatusRequestTimeout:
			return fmt.Errorf("s3blob: %w: %v", store.ErrUnavailable, err)
		}
		var ae smithy.APIError
		if errors.As(err, &ae) && (ae.ErrorCode() == "NoSuchKey" || ae.ErrorCode() == "NoSuchUpload") {
			return fmt.Errorf("%w (%v)", store.ErrNotFound, err)
		}
		return err
	}
	// No HTTP answer: refused or reset connection, DNS, a deadline.
	return fmt.Errorf("s3blob: %w: %v", store.ErrUnavailable, err)
}

// Create starts a new blob. The marker is written first (with
// If-None-Match: *: a key being written or pending on this node is
// store.ErrExists), and for a key the caller gives, the object must not
// exist. A key the store chooses is new by construction (128 random
// bits): its marker is written while the caller writes the bytes.
func (s *Store) Create(ctx context.Context, key string) (store.BlobWriter, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("s3blob: %w", store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if key == "" {
		e, key := s.enterEpoch()
		return &writer{s: s, key: key, chosen: true, ep: e, marked: e.ready}, nil
	}
	w := &writer{s: s, marked: make(chan struct{})}
	if err := s.check(key); err != nil {
		return nil, err
	}
	w.key = key
	if err := s.putMarker(ctx, key); err != nil {
		return nil, fmt.Errorf("s3blob: create %s: %w", key, err)
	}
	close(w.marked)
	octx, cancel := s.op(ctx)
	defer cancel()
	_, err := s.c.HeadObject(octx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(s.objectName(key))})
	if err = s.wrap(ctx, err); !errors.Is(err, store.ErrNotFound) {
		s.removeMarker(ctx, key)
		if err == nil {
			return nil, fmt.Errorf("s3blob: create %s: %w", key, store.ErrExists)
		}
		return nil, fmt.Errorf("s3blob: create %s: %w", key, err)
	}
	return w, nil
}

func (s *Store) putMarker(ctx context.Context, key string) error {
	octx, cancel := s.op(ctx)
	defer cancel()
	_, err := s.c.PutObject(octx, &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(s.markerName(key)),
		Body: bytes.NewReader(nil), ContentLength: aws.Int64(0), IfNoneMatch: aws.String("*")})
	return s.wrap(ctx, err)
}

// markersOf is the names of the markers a caller-given key may have:
// this node's, and that of the node the key names, if another.
func (s *Store) markersOf(key string) []string {
	names := []string{s.markerName(key)}
	if n := keyNode(key); n != "" && n != s.node {
		names = append(names, s.markerDir(n)+key)
	}
	return names
}

// chosenHere reports whether key is one this handle chose in an epoch
// and has not yet seen published or removed: it has no marker of its own.
func (s *Store) chosenHere(key string) bool {
	n, ok := epochOf(key)
	if !ok {
		return false
	}
	s.epochMu.Lock()
	defer s.epochMu.Unlock()
	e := s.epochs[n]
	if e == nil {
		return false
	}
	_, ok = e.open[key]
	return ok
}

// removeMarker removes the markers of a caller-given key.
func (s *Store) removeMarker(ctx context.Context, key string) error {
	return s.deleteObjects(ctx, s.markersOf(key))
}

// deleteObjects removes objects by name (missing ones are no error), in
// DeleteObjects requests of up to 1000.
func (s *Store) deleteObjects(ctx context.Context, names []string) error {
	if len(names) == 1 {
		octx, cancel := s.op(ctx)
		defer cancel()
		_, err := s.c.DeleteObject(octx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: aws.String(names[0])})
		if err = s.wrap(ctx, err); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return nil
	}
	for len(names) > 0 {
		n := min(len(names), 1000)
		ids := make([]types.ObjectIdentifier, n)
		for i, name := range names[:n] {
			ids[i] = types.ObjectIdentifier{Key: aws.String(name)}
		}
		names = names[n:]
		octx, cancel := s.op(ctx)
		out, err := s.c.DeleteObjects(octx, &s3.DeleteObjectsInput{Bucket: &s.bucket,
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
		cancel()
		if err = s.wrap(ctx, err); err != nil {
			return err
		}
		for _, e := range out.Errors {
			if aws.ToString(e.Code) == "NoSuchKey" {
				continue
			}
			return fmt.Errorf("s3blob: deleting %s: %s %s", aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message))
		}
	}
	return nil
}

// writer buffers up to PartSize bytes; beyond that it streams a
// multipart upload, one part at a time.
type writer struct {
	s      *Store
	key    string
	chosen bool // the store chose the key

	marked  chan struct{} // closed once the marker is written (or failed)
	markErr error
	ep      *epoch // of a key the store chose: its marker is the epoch's

	buf    []byte
	intent []byte
	upload *string // multipart upload ID, once started
	parts  []types.CompletedPart
	size   int64
	err    error // sticky
	done   bool
}

var bufPool = sync.Pool{New: func() any { return new([]byte) }}

func (w *writer) Key() string { return w.key }

// NameDurable implements store.DurableNamer: true once the marker is
// stored, so that Recover after a crash asks about the blob whatever
// happened to its bytes. The caller may then commit the index row while
// Commit still uploads (recovery checks such a blob against the row's
// checksum).
// A blob of an epoch is, once its marker is stored, only when Recover
// can ask the index about the epoch's keys (UseIndexKeys, see epoch.go).
func (w *writer) NameDurable() bool {
	return (w.ep == nil || w.s.indexKeys != nil) && w.mark() == nil
}

// mark waits for the marker and returns the error of writing it.
func (w *writer) mark() error {
	<-w.marked
	if w.ep != nil {
		return w.ep.err
	}
	return w.markErr
}

// SetIntent implements store.IntentWriter: the record goes with the
// object as its metadata, or, when the upload is multipart (started
// before the record is known), in an object of its own that Commit
// stores before it completes the upload.
func (w *writer) SetIntent(b []byte) error {
	if w.done {
		return fmt.Errorf("s3blob: intent of %s after commit or abort", w.key)
	}
	if len(b) > maxIntent {
		return fmt.Errorf("s3blob: intent of %s: %d bytes is more than %d: %w", w.key, len(b), maxIntent, errors.ErrUnsupported)
	}
	w.intent = bytes.Clone(b)
	return nil
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("s3blob: write %s after commit or abort", w.key)
	}
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = (*bufPool.Get().(*[]byte))[:0]
		}
		n := min(len(p), PartSize-len(w.buf))
		if need := len(w.buf) + n; need > cap(w.buf) {
			// Grown by hand, never beyond PartSize.
			nb := make([]byte, len(w.buf), min(max(2*cap(w.buf), need, 64<<10), PartSize))
			copy(nb, w.buf)
			w.buf = nb
		}
		w.buf = append(w.buf, p[:n]...)
		p, written, w.size = p[n:], written+n, w.size+int64(n)
		if len(w.buf) == PartSize && len(p) > 0 {
			// Full, and more is coming: send it as a part. (A blob of
			// exactly PartSize bytes goes in one PutObject at Commit.)
			if err := w.sendPart(); err != nil {
				w.err = err
				return written, err
			}
		}
	}
	return written, nil
}

// sendPart starts the multipart upload if needed and sends the buffer as
// its next part.
func (w *writer) sendPart() error {
	s := w.s
	ctx := context.Background()
	if w.upload == nil {
		if err := w.mark(); err != nil {
			return fmt.Errorf("s3blob: write %s: %w", w.key, err)
		}
		octx, cancel := s.op(ctx)
		out, err := s.c.CreateMultipartUpload(octx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket,
			Key: aws.String(s.objectName(w.key)), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c})
		cancel()
		if err != nil {
			return fmt.Errorf("s3blob: write %s: %w", w.key, s.wrap(ctx, err))
		}
		w.upload = out.UploadId
	}
	num := int32(len(w.parts) + 1)
	sum := crcHeader(crcOf(w.buf))
	pctx, cancel := context.WithTimeout(ctx, PartTimeout)
	out, err := s.c.UploadPart(pctx, &s3.UploadPartInput{Bucket: &s.bucket, Key: aws.String(s.objectName(w.key)),
		UploadId: w.upload, PartNumber: aws.Int32(num), Body: bytes.NewReader(w.buf),
		ContentLength: aws.Int64(int64(len(w.buf))), ChecksumCRC32C: sum})
	cancel()
	if err != nil {
		return fmt.Errorf("s3blob: write %s, part %d: %w", w.key, num, s.wrap(ctx, err))
	}
	w.parts = append(w.parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num), ChecksumCRC32C: sum})
	w.buf = w.buf[:0]
	return nil
}

func (w *writer) release() {
	if w.buf != nil {
		b := w.buf[:0]
		w.buf = nil
		bufPool.Put(&b)
	}
}

// Commit stores the bytes: one PutObject, or the last part and
// CompleteMultipartUpload, with If-None-Match: *. On error nothing of
// the blob stays visible (the upload is aborted, the marker removed when
// the store can be reached; otherwise Recover removes them) and Abort
// becomes a no-op.
func (w *writer) Commit() error {
	if w.done {
		return fmt.Errorf("s3blob: commit %s after commit or abort", w.key)
	}
	w.done = true
	defer w.release()
	s := w.s
	ctx := context.Background()
	err := w.err
	if merr := w.mark(); err == nil && merr != nil {
		err = fmt.Errorf("s3blob: commit %s: %w", w.key, merr)
	}
	if err == nil {
		if w.upload == nil {
			err = w.put(ctx)
		} else {
			err = w.complete(ctx)
		}
	}
	if err != nil {
		if errors.Is(err, store.ErrUnavailable) {
			w.leaveAll()
		} else {
			w.cleanup(ctx, errors.Is(err, store.ErrExists))
		}
		return err
	}
	s.committed.Store(w.key, struct{}{})
	return nil
}

func (w *writer) put(ctx context.Context) error {
	s := w.s
	in := &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(s.objectName(w.key)),
		Body: bytes.NewReader(w.buf), ContentLength: aws.Int64(int64(len(w.buf))),
		ChecksumCRC32C: crcHeader(crcOf(w.buf)), IfNoneMatch: aws.String("*")}
	if w.intent != nil {
		in.Metadata = map[string]string{"ward-intent": base64.RawURLEncoding.EncodeToString(w.intent)}
	}
	pctx, cancel := context.WithTimeout(ctx, PartTimeout)
	_, err := s.c.PutObject(pctx, in)
	cancel()
	err = s.wrap(ctx, err)
	if errors.Is(err, store.ErrExists) && w.chosen && w.sameObject(ctx, int64(len(w.buf)), in.ChecksumCRC32C) {
		// A key only this writer uses: an attempt whose answer was lost
		// stored it, and the retry found it there.
		err = nil
	}
	if err != nil {
		return fmt.Errorf("s3blob: commit %s: %w", w.key, err)
	}
	return nil
}

// sameObject reports whether the object of the writer's key has size
// bytes and, when sum is given, that CRC-32C.
func (w *writer) sameObject(ctx context.Context, size int64, sum *string) bool {
	s := w.s
	octx, cancel := s.op(ctx)
	defer cancel()
	out, err := s.c.HeadObject(octx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(s.objectName(w.key)),
		ChecksumMode: types.ChecksumModeEnabled})
	if err != nil || aws.ToInt64(out.ContentLength) != size {
		return false
	}
	return sum == nil || aws.ToString(out.ChecksumCRC32C) == aws.ToString(sum)
}

func (w *writer) complete(ctx context.Context) error {
	s := w.s
	if len(w.buf) > 0 {
		if err := w.sendPart(); err != nil {
			return err
		}
	}
	if w.intent != nil {
		octx, cancel := s.op(ctx)
		_, err := s.c.PutObject(octx, &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(s.intentName(w.key)),
			Body: bytes.NewReader(w.intent), ContentLength: aws.Int64(int64(len(w.intent))),
			ChecksumCRC32C: crcHeader(crcOf(w.intent)), IfNoneMatch: aws.String("*")})
		cancel()
		if err = s.wrap(ctx, err); errors.Is(err, store.ErrExists) && w.chosen {
			err = nil // a key only this writer uses: a retry after a lost answer
		}
		if err != nil {
			// ErrExists: another writer of the key got there first.
			return fmt.Errorf("s3blob: commit %s: intent: %w", w.key, err)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, PartTimeout)
	_, err := s.c.CompleteMultipartUpload(pctx, &s3.CompleteMultipartUploadInput{Bucket: &s.bucket,
		Key: aws.String(s.objectName(w.key)), UploadId: w.upload, IfNoneMatch: aws.String("*"),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: w.parts}})
	cancel()
	err = s.wrap(ctx, err)
	if err != nil && !errors.Is(err, store.ErrUnavailable) && w.chosen && w.sameObject(ctx, w.size, nil) {
		// The upload was completed by an attempt whose answer was lost.
		err = nil
	}
	if err != nil {
		return fmt.Errorf("s3blob: commit %s: %w", w.key, err)
	}
	w.upload = nil
	return nil
}

// cleanup undoes a failed or aborted write: the multipart upload is
// aborted, the object (unless another writer's: exists) and the intent
// object deleted, then the marker. What cannot be removed now (the
// store unreachable) is left to Recover, the marker last, so that
// Recover still finds it.
func (w *writer) cleanup(ctx context.Context, exists bool) error {
	s := w.s
	if w.upload != nil {
		octx, cancel := s.op(ctx)
		_, err := s.c.AbortMultipartUpload(octx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket,
			Key: aws.String(s.objectName(w.key)), UploadId: w.upload})
		cancel()
		if err = s.wrap(ctx, err); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("s3blob: aborting the upload of %s: %w", w.key, err)
		}
		w.upload = nil
	}
	if w.mark() != nil {
		s.resolve(w.key)
		return nil // no marker, so nothing was sent
	}
	var markers []string
	if w.ep == nil {
		markers = s.markersOf(w.key)
	}
	if !exists {
		names := []string{s.objectName(w.key)}
		if w.intent != nil {
			names = append(names, s.intentName(w.key))
		}
		if err := s.deleteObjects(ctx, names); err != nil {
			s.leave(w.key, names, markers)
			return fmt.Errorf("s3blob: removing %s: %w", w.key, err)
		}
	}
	if err := s.deleteObjects(ctx, markers); err != nil {
		s.leave(w.key, nil, markers)
		return fmt.Errorf("s3blob: removing %s: %w", w.key, err)
	}
	s.resolve(w.key)
	return nil
}

// leaveAll is cleanup for a Commit that failed because the store is out
// of reach: trying to remove anything now would only hold the caller for
// more retries. What may be there (a PUT whose answer was lost) is removed
// at the next Publish, or by Recover; an unfinished multipart upload
// (and a caller-given key's marker) is left to Recover, which aborts it.
func (w *writer) leaveAll() {
	s := w.s
	if w.mark() != nil {
		s.resolve(w.key)
		return // no marker, so nothing was sent
	}
	names := []string{s.objectName(w.key)}
	if w.intent != nil {
		names = append(names, s.intentName(w.key))
	}
	if w.upload != nil {
		s.leave("", names, nil) // the key (its epoch, its marker) stays open for Recover
		return
	}
	var markers []string
	if w.ep == nil {
		markers = s.markersOf(w.key)
	}
	s.leave(w.key, names, markers)
}

// Abort discards the blob: the multipart upload if any is aborted and
// the marker removed. It is a no-op after Commit.
func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	defer w.release()
	if err := w.cleanup(context.Background(), true); err != nil {
		return err
	}
	return nil
}

// Publish removes the blob's marker. Publishing a published blob is a
// no-op; a key with no object is store.ErrNotFound.
func (s *Store) Publish(ctx context.Context, key string) error {
	return s.PublishAll(ctx, []string{key})
}

// PublishAll implements store.BatchPublisher: the markers of keys go in
// one DeleteObjects request. A key not committed through this handle is
// checked to exist first.
func (s *Store) PublishAll(ctx context.Context, keys []string) error {
	s.retryLeft(ctx)
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	var names, done []string
	for _, key := range keys {
		if err := s.check(key); err != nil {
			fail(err)
			continue
		}
		if _, ok := s.committed.Load(key); !ok {
			octx, cancel := s.op(ctx)
			_, err := s.c.HeadObject(octx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(s.objectName(key))})
			cancel()
			if err := s.wrap(ctx, err); err != nil {
				fail(fmt.Errorf("s3blob: publish %s: %w", key, err))
				continue
			}
		}
		done = append(done, key)
		if !s.chosenHere(key) { // else no marker of its own
			names = append(names, s.markersOf(key)...)
		}
	}
	if len(names) > 0 {
		if err := s.deleteObjects(ctx, names); err != nil {
			fail(fmt.Errorf("s3blob: publish: %w", err))
			return firstErr
		}
	}
	for _, key := range done {
		s.committed.Delete(key)
	}
	s.resolve(done...)
	return firstErr
}

// Delete removes a pending or published blob, its intent object and its
// markers. Deleting a missing blob is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.check(key); err != nil {
		return err
	}
	names := append([]string{s.objectName(key), s.intentName(key)}, s.markersOf(key)...)
	// The object first: should the request fail halfway, a marker left
	// lets Recover finish the job.
	if err := s.deleteObjects(ctx, names[:1]); err != nil {
		return fmt.Errorf("s3blob: delete %s: %w", key, err)
	}
	if err := s.deleteObjects(ctx, names[1:]); err != nil {
		return fmt.Errorf("s3blob: delete %s: %w", key, err)
	}
	s.committed.Delete(key)
	s.resolve(key)
	return nil
}

// Intent implements store.IntentReader.
func (s *Store) Intent(ctx context.Context, key string) ([]byte, error) {
	if err := s.check(key); err != nil {
		return nil, err
	}
	octx, cancel := s.op(ctx)
	defer cancel()
	out, err := s.c.HeadObject(octx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(s.objectName(key))})
	if err != nil {
		return nil, fmt.Errorf("s3blob: intent %s: %w", key, s.wrap(ctx, err))
	}
	for k, v := range out.Metadata {
		if strings.EqualFold(k, "ward-intent") {
			b, err := base64.RawURLEncoding.DecodeString(v)
			if err != nil {
				return nil, fmt.Errorf("s3blob: intent %s: %w", key, err)
			}
			return b, nil
		}
	}
	g, err := s.c.GetObject(octx, &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(s.intentName(key))})
	if err != nil {
		return nil, fmt.Errorf("s3blob: intent %s: %w", key, s.wrap(ctx, err))
	}
	defer g.Body.Close()
	b, err := io.ReadAll(io.LimitReader(g.Body, maxIntent+1))
	if err != nil {
		return nil, fmt.Errorf("s3blob: intent %s: %w", key, s.wrap(ctx, err))
	}
	return b, nil
}

// list calls fn for every object under prefix.
func (s *Store) list(ctx context.Context, prefix string, fn func(types.Object) error) error {
	p := s3.NewListObjectsV2Paginator(s.c, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		octx, cancel := s.op(ctx)
		page, err := p.NextPage(octx)
		cancel()
		if err != nil {
			return s.wrap(ctx, err)
		}
		for _, o := range page.Contents {
			if err := fn(o); err != nil {
				return err
			}
		}
	}
	return nil
}

// BlobSize implements store.WholeBlobs: an object is written in one
// PutObject or CompleteMultipartUpload, under a key written once.
func (s *Store) BlobSize(ctx context.Context, key string) (int64, error) {
	if err := s.check(key); err != nil {
		return 0, err
	}
	octx, cancel := s.op(ctx)
	defer cancel()
	out, err := s.c.HeadObject(octx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(s.objectName(key))})
	if err != nil {
		return 0, fmt.Errorf("s3blob: size of %s: %w", key, s.wrap(ctx, err))
	}
	return aws.ToInt64(out.ContentLength), nil
}

// exists reports whether the object of key is there.
func (s *Store) exists(ctx context.Context, key string) (bool, error) {
	octx, cancel := s.op(ctx)
	defer cancel()
	_, err := s.c.HeadObject(octx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(s.objectName(key))})
	switch err = s.wrap(ctx, err); {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	default:
		return false, err
	}
}

// abortUploads aborts every multipart upload of key's object.
func (s *Store) abortUploads(ctx context.Context, key string) error {
	name := s.objectName(key)
	octx, cancel := s.op(ctx)
	out, err := s.c.ListMultipartUploads(octx, &s3.ListMultipartUploadsInput{Bucket: &s.bucket, Prefix: aws.String(name)})
	cancel()
	if err != nil {
		return s.wrap(ctx, err)
	}
	for _, u := range out.Uploads {
		if aws.ToString(u.Key) != name {
			continue
		}
		octx, cancel := s.op(ctx)
		_, err := s.c.AbortMultipartUpload(octx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: u.Key, UploadId: u.UploadId})
		cancel()
		if err = s.wrap(ctx, err); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

// marker is a marker Recover decides on: the key and the marker's name.
type marker struct{ key, name string }

// markers lists the markers Recover decides on: this node's, and other
// nodes' older than NodeGuard.
func (s *Store) markers(ctx context.Context) ([]marker, error) {
	var ms []marker
	own := s.markerDir(s.node)
	err := s.list(ctx, s.pendingDir(), func(o types.Object) error {
		name := aws.ToString(o.Key)
		if strings.HasPrefix(name, own) {
			ms = append(ms, marker{keyFromMarker(name, own), name})
			return nil
		}
		if o.LastModified != nil && time.Since(*o.LastModified) >= NodeGuard {
			rest := strings.TrimPrefix(name, s.pendingDir())
			if _, key, ok := strings.Cut(rest, "/"); ok {
				ms = append(ms, marker{key, name})
			}
		}
		return nil
	})
	return ms, err
}

// RemoveUnfinished implements store.UnfinishedRemover: of this node's
// markers, those whose object does not exist are blobs that were being
// written: their multipart uploads are aborted and the markers removed.
func (s *Store) RemoveUnfinished(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("s3blob: %w", store.ErrClosed)
	}
	own := s.markerDir(s.node)
	var keys []string
	if err := s.list(ctx, own, func(o types.Object) error {
		keys = append(keys, keyFromMarker(aws.ToString(o.Key), own))
		return nil
	}); err != nil {
		return fmt.Errorf("s3blob: removing unfinished blobs: %w", err)
	}
	es, err := s.openEpochs(ctx, true)
	if err != nil {
		return fmt.Errorf("s3blob: removing unfinished blobs: %w", err)
	}
	for _, oe := range es {
		if err := s.abortEpochUploads(ctx, s.epochDir(oe.node, oe.n)); err != nil {
			return fmt.Errorf("s3blob: removing unfinished blobs: %w", err)
		}
	}
	for _, key := range keys {
		if !ValidKey(key) {
			continue
		}
		ok, err := s.exists(ctx, key)
		if err != nil {
			return fmt.Errorf("s3blob: removing unfinished blobs: %w", err)
		}
		if ok {
			continue // committed: pending
		}
		if err := s.abortUploads(ctx, key); err != nil {
			return fmt.Errorf("s3blob: removing unfinished blob %s: %w", key, err)
		}
		if err := s.deleteObjects(ctx, []string{s.intentName(key), s.markerName(key)}); err != nil {
			return fmt.Errorf("s3blob: removing unfinished blob %s: %w", key, err)
		}
	}
	return nil
}

// Recover decides on every marker of this node (and those of other
// nodes older than NodeGuard): an unfinished multipart upload of its
// blob is aborted; keep is asked about the blob, whether or not its
// object is there (the caller may have committed an index row while the
// bytes were still uploading: keep then checks them and drops the row);
// a kept blob is published, another deleted. An error from keep stops
// Recover.
func (s *Store) Recover(ctx context.Context, keep func(key string) (bool, error)) error {
	if s.closed.Load() {
		return fmt.Errorf("s3blob: %w", store.ErrClosed)
	}
	ms, err := s.markers(ctx)
	if err != nil {
		return fmt.Errorf("s3blob: recover: %w", err)
	}
	for _, m := range ms {
		if err := ctx.Err(); err != nil {
			return err
		}
		key := m.key
		if !ValidKey(key) {
			// Not a marker of this store's: a name no blob can have.
			if err := s.deleteObjects(ctx, []string{m.name}); err != nil {
				return fmt.Errorf("s3blob: recover: %w", err)
			}
			continue
		}
		ok, err := s.exists(ctx, key)
		if err != nil {
			return fmt.Errorf("s3blob: recover %s: %w", key, err)
		}
		if !ok {
			if err := s.abortUploads(ctx, key); err != nil {
				return fmt.Errorf("s3blob: recover %s: %w", key, err)
			}
		}
		k, err := keep(key)
		if err != nil {
			return fmt.Errorf("s3blob: recover %s: %w", key, err)
		}
		if !k || !ok {
			err = s.Delete(ctx, key) // its markers too
		}
		if err == nil && (k && ok || m.name != s.markerName(key)) {
			err = s.deleteObjects(ctx, []string{m.name})
		}
		if err != nil {
			return fmt.Errorf("s3blob: recover %s: %w", key, err)
		}
	}
	es, err := s.openEpochs(ctx, false)
	if err != nil {
		return fmt.Errorf("s3blob: recover: %w", err)
	}
	for _, oe := range es {
		if err := s.recoverEpoch(ctx, oe, keep); err != nil {
			return fmt.Errorf("s3blob: recover: %w", err)
		}
	}
	return nil
}

// WalkBlobs implements store.BlobWalker: fn sees every committed blob;
// published is false for those with a marker (of any node). It lists the
// whole of P/o/: for ward verify and migration, not for start-up.
func (s *Store) WalkBlobs(ctx context.Context, fn func(key string, published bool) error) error {
	if s.closed.Load() {
		return fmt.Errorf("s3blob: %w", store.ErrClosed)
	}
	pending := map[string]bool{}
	if err := s.list(ctx, s.pendingDir(), func(o types.Object) error {
		rest := strings.TrimPrefix(aws.ToString(o.Key), s.pendingDir())
		if _, key, ok := strings.Cut(rest, "/"); ok {
			pending[key] = true
		}
		return nil
	}); err != nil {
		return fmt.Errorf("s3blob: walk: %w", err)
	}
	es, err := s.openEpochs(ctx, false)
	if err != nil {
		return fmt.Errorf("s3blob: walk: %w", err)
	}
	open := map[string]bool{}
	for _, oe := range es {
		open[s.epochDir(oe.node, oe.n)] = true
	}
	walk := func(o types.Object) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := aws.ToString(o.Key)
		i := strings.LastIndexByte(name, '/')
		key, ok := strings.CutSuffix(name[i+1:], ext)
		if !ok || !ValidKey(key) || s.objectName(key) != name {
			return nil
		}
		return fn(key, !pending[key] && !open[name[:i+1]])
	}
	if err := s.list(ctx, s.objectsDir(), walk); err != nil {
		return err
	}
	return s.list(ctx, s.prefix+"n/", walk)
}

// Close marks the store closed and lets its idle connections go.
// Writers already created may still finish.
func (s *Store) Close() error {
	if !s.closed.Swap(true) {
		s.epochMu.Lock()
		if s.closer != nil {
			close(s.closer)
		}
		s.epochMu.Unlock()
		// The epochs all of whose blobs are published: none is left for
		// Recover after a clean stop.
		ctx, cancel := s.op(context.Background())
		_ = s.closeEpochs(ctx, true)
		cancel()
	}
	s.tr.CloseIdleConnections()
	return nil
}
