package s3blob

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/ward-pacs/ward/store"
)

// Epochs: the pending state of the blobs whose key the store chooses.
//
// Such a key names the node and the epoch (EpochLength of the node's
// clock) it was created in, and its object lives under a folder of that
// node and epoch:
//
//	key     EEEEEEEE-RRRRRRRRRRRRRRRRRRRRRRRR.NODE  (epoch, 96 random bits)
//	object  P/n/NODE/EEEEE/EEEEEEEE/KEY.dcm         (EEEEE: the epoch's top 20 bits)
//	marker  P/open/NODE/EEEEEEEE                    (the epoch is open)
//
// The epoch's marker is written before any object of the epoch, and
// removed once every blob created in the epoch is published or removed
// (and the epoch is over): one PUT and one DELETE per node and epoch,
// instead of a marker per blob. Recover lists the objects of the node's
// open epochs (at most the blobs of the last few epochs, not the bucket)
// and asks keep about each.
//
// A blob of an epoch is a DurableNamer (its row may be committed while
// its bytes are uploading) only when the store can ask the index for the
// keys of an epoch (UseIndexKeys): Recover then asks keep about the keys
// that rows name and no object has too (a row committed, the upload cut
// short by a crash: never acknowledged). Without it the caller commits
// the row after Commit, and a row never names an object a crash lost.

// EpochLength is the length of an epoch.
const EpochLength = 5 * time.Second

// epoch is the state of one of this handle's epochs.
type epoch struct {
	n     int64
	ready chan struct{} // closed once the marker is written (or failed)
	err   error         // of writing the marker; set before ready closes
	open  map[string]struct{}
	// closing: the marker's removal is under way.
	closing bool
}

func (e *epoch) failed() bool {
	select {
	case <-e.ready:
		return e.err != nil
	default:
		return false
	}
}

func epochNumber(t time.Time) int64 { return t.Unix() / int64(EpochLength/time.Second) }

// epochOf is the epoch of a key the store chose in an epoch.
func epochOf(key string) (int64, bool) {
	if len(key) < 35 || key[8] != '-' || key[33] != '.' {
		return 0, false
	}
	n, err := strconv.ParseUint(key[:8], 16, 32)
	if err != nil {
		return 0, false
	}
	return int64(n), true
}

func (s *Store) epochDir(node string, n int64) string {
	return fmt.Sprintf("%sn/%s/%05x/%08x/", s.prefix, node, n>>12, n)
}
func (s *Store) epochsDir() string { return s.prefix + "open/" }
func (s *Store) epochMarker(node string, n int64) string {
	return fmt.Sprintf("%s%s/%08x", s.epochsDir(), node, n)
}

// enterEpoch chooses a key in the current epoch, whose marker is written
// (or being written) when it returns.
func (s *Store) enterEpoch() (*epoch, string) {
	n := epochNumber(time.Now())
	s.epochMu.Lock()
	defer s.epochMu.Unlock()
	n = max(n, s.lastEpoch) // never an epoch closed already, whatever the clock does
	s.lastEpoch = n
	e := s.epochs[n]
	if e == nil || e.failed() {
		// A failed marker is tried again by the next writer; the writers
		// of the failed one fail at Commit, having sent nothing.
		e = &epoch{n: n, ready: make(chan struct{}), open: map[string]struct{}{}}
		if s.epochs == nil {
			s.epochs = map[int64]*epoch{}
		}
		s.epochs[n] = e
		go func() {
			octx, cancel := s.op(context.Background())
			defer cancel()
			_, err := s.c.PutObject(octx, &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(s.epochMarker(s.node, n)),
				Body: strings.NewReader(""), ContentLength: aws.Int64(0)})
			e.err = s.wrap(context.Background(), err)
			close(e.ready)
		}()
	}
	key := fmt.Sprintf("%08x-%s.%s", n, newKey()[:24], s.node)
	e.open[key] = struct{}{}
	if s.closer == nil {
		s.closer = make(chan struct{})
		go s.closeLoop(s.closer)
	}
	return e, key
}

// UseIndexKeys implements store.IndexKeysUser.
func (s *Store) UseIndexKeys(list func(ctx context.Context, prefix string) ([]string, error)) {
	s.indexKeys = list
}

// resolve records that keys are published or removed: their epochs may
// close.
func (s *Store) resolve(keys ...string) {
	s.epochMu.Lock()
	defer s.epochMu.Unlock()
	for _, k := range keys {
		if n, ok := epochOf(k); ok {
			if e := s.epochs[n]; e != nil {
				delete(e.open, k)
			}
		}
	}
}

func (s *Store) closeLoop(stop chan struct{}) {
	t := time.NewTicker(EpochLength)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.closeEpochs(context.Background(), false)
		}
	}
}

// closeEpochs removes the markers of the epochs that are over (all of
// them when final) and whose blobs are all published or removed.
func (s *Store) closeEpochs(ctx context.Context, final bool) error {
	now := epochNumber(time.Now())
	s.epochMu.Lock()
	var names []string
	var closing []*epoch
	for n, e := range s.epochs {
		if len(e.open) > 0 || e.closing || (n >= now && !final) {
			continue
		}
		select {
		case <-e.ready:
		default:
			continue
		}
		if e.err != nil {
			delete(s.epochs, n) // no marker, nothing written
			continue
		}
		e.closing = true
		s.lastEpoch = max(s.lastEpoch, n+1)
		names = append(names, s.epochMarker(s.node, n))
		closing = append(closing, e)
	}
	s.epochMu.Unlock()
	if len(names) == 0 {
		return nil
	}
	err := s.deleteObjects(ctx, names)
	s.epochMu.Lock()
	for _, e := range closing {
		if err == nil {
			delete(s.epochs, e.n)
		} else {
			e.closing = false // again at the next tick
		}
	}
	s.epochMu.Unlock()
	return err
}

// openEpoch is a marker Recover decides on.
type openEpoch struct {
	node string
	n    int64
	name string
}

// openEpochs lists the open epochs Recover decides on: this node's, and
// other nodes' whose marker is older than NodeGuard. own: only this
// node's.
func (s *Store) openEpochs(ctx context.Context, own bool) ([]openEpoch, error) {
	var es []openEpoch
	prefix := s.epochsDir()
	if own {
		prefix += s.node + "/"
	}
	err := s.list(ctx, prefix, func(o types.Object) error {
		name := aws.ToString(o.Key)
		node, num, ok := strings.Cut(strings.TrimPrefix(name, s.epochsDir()), "/")
		n, err := strconv.ParseUint(num, 16, 32)
		if !ok || err != nil || len(num) != 8 || !ValidKey(node) {
			return nil // not a marker of this store's
		}
		if node == s.node || o.LastModified != nil && time.Since(*o.LastModified) >= NodeGuard {
			es = append(es, openEpoch{node, int64(n), name})
		}
		return nil
	})
	return es, err
}

// abortEpochUploads aborts the multipart uploads left in an epoch.
func (s *Store) abortEpochUploads(ctx context.Context, dir string) error {
	in := &s3.ListMultipartUploadsInput{Bucket: &s.bucket, Prefix: aws.String(dir)}
	for {
		octx, cancel := s.op(ctx)
		out, err := s.c.ListMultipartUploads(octx, in)
		cancel()
		if err != nil {
			return s.wrap(ctx, err)
		}
		for _, u := range out.Uploads {
			octx, cancel := s.op(ctx)
			_, err := s.c.AbortMultipartUpload(octx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: u.Key, UploadId: u.UploadId})
			cancel()
			if err = s.wrap(ctx, err); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			return nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// recoverEpoch decides on every blob of an open epoch, then closes it:
// unfinished uploads are aborted, keep is asked about each object, and
// what is not kept is removed, with the intent records of blobs that
// never completed.
func (s *Store) recoverEpoch(ctx context.Context, oe openEpoch, keep func(key string) (bool, error)) error {
	dir := s.epochDir(oe.node, oe.n)
	if err := s.abortEpochUploads(ctx, dir); err != nil {
		return err
	}
	var keys []string
	if err := s.list(ctx, dir, func(o types.Object) error {
		name := aws.ToString(o.Key)
		if key, ok := strings.CutSuffix(strings.TrimPrefix(name, dir), ext); ok && ValidKey(key) && s.objectName(key) == name {
			keys = append(keys, key)
		}
		return nil
	}); err != nil {
		return err
	}
	has := map[string]bool{}
	for _, key := range keys {
		has[key] = true
	}
	if s.indexKeys != nil {
		// Rows committed while their upload ran, cut short by the crash.
		indexed, err := s.indexKeys(ctx, fmt.Sprintf("%08x-", oe.n))
		if err != nil {
			return fmt.Errorf("the index's keys of epoch %08x: %w", oe.n, err)
		}
		for _, key := range indexed {
			if n, ok := epochOf(key); ok && n == oe.n && keyNode(key) == oe.node && !has[key] {
				keys = append(keys, key)
			}
		}
	}
	for _, key := range keys {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, err := keep(key)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if !k {
			if err := s.Delete(ctx, key); err != nil {
				return err
			}
		}
	}
	// Intent records of multipart blobs whose upload never completed.
	var orphans []string
	if err := s.list(ctx, fmt.Sprintf("%s%08x-", s.intentName(""), oe.n), func(o types.Object) error {
		key := strings.TrimPrefix(aws.ToString(o.Key), s.intentName(""))
		if keyNode(key) == oe.node && !has[key] {
			orphans = append(orphans, aws.ToString(o.Key))
		}
		return nil
	}); err != nil {
		return err
	}
	if err := s.deleteObjects(ctx, orphans); err != nil {
		return err
	}
	s.resolve(keys...)
	s.epochMu.Lock()
	live := oe.node == s.node && s.epochs[oe.n] != nil
	s.epochMu.Unlock()
	if live {
		return nil // this handle writes in it: closed when its blobs are
	}
	return s.deleteObjects(ctx, []string{oe.name})
}
