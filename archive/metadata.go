package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store"
)

// Metadata (WADO-RS): each instance's DICOM JSON, computed from the object
// once and kept with its index row by a store.MetadataKeeper, so that the
// metadata of a series is one index query. Objects are read for it after
// each store (off the response's path, best effort) and, for those not
// kept yet, when first asked for.

// MetadataBulkPrefix begins every BulkDataURI in Instance.Metadata. It
// holds '<', which the JSON of a value never holds unescaped, so a front
// end can replace it with the URL of the instance's bulk data resource
// (the element's path follows after a '/').
const MetadataBulkPrefix = "<ward:bulkdata>"

// MaxMetadataSize bounds the bytes of one object's data set that its
// metadata keeps (bulk values left out): an object with more has no
// metadata (ErrStorage says why).
const MaxMetadataSize = 16 << 20

// metadataQueue is how many stored objects may wait for their metadata
// to be computed; beyond it they are left to be computed when asked for.
const metadataQueue = 4096

// metadataQuiet is how long no object must have been stored before the
// queued metadata is computed: it waits while objects arrive, so that it
// never takes the CPU and the index's writer from ingest (computing it
// as objects came cost a fifth of C-STORE throughput on two cores).
const metadataQuiet = 250 * time.Millisecond

type metadataJob struct{ uid, key, ts string }

// metadataVersion begins what the index keeps: the JSON after it was made
// by this version of the encoding. Kept bytes without it (made by another
// version of Ward) are made again from the object.
const metadataVersion = "ward-metadata/1\n"

// Metadata returns the DICOM JSON of the instance stored under
// sopInstanceUID in blob key (syntax ts), read from the object, and keeps
// it in the index when it can. It is Instance.Metadata for an instance
// whose metadata is not kept yet.
func (ar *Archive) metadata(ctx context.Context, uid, key, ts string) ([]byte, error) {
	syntax := dicom.LookupTransferSyntax(ts)
	if syntax == nil {
		return nil, Failf(ErrStorage, "unknown transfer syntax of a stored object: %s", ts)
	}
	// Replaced since the index was read: the replacement's metadata.
	rc, key, err := ar.openCurrent(ctx, uid, key, "", ts)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, &Error{Kind: ErrStorage, Comment: "a stored object is missing (deleted meanwhile?)", Err: err}
		}
		if e := IntegrityFailure(err); e != nil {
			return nil, e
		}
		return nil, &Error{Kind: ErrStorage, Comment: "reading a stored object failed", Err: err}
	}
	defer rc.Close()
	ds, err := dicom.ReadMetadata(rc, syntax, MaxMetadataSize, dicom.DefaultBulkThreshold)
	if err != nil {
		if e := IntegrityFailure(err); e != nil {
			return nil, e
		}
		return nil, &Error{Kind: ErrStorage, Comment: fmt.Sprintf("reading a stored object failed: %v", errors.Unwrap(err)), Err: err}
	}
	var b bytes.Buffer
	b.Grow(16 << 10)
	if err := ds.AppendMetadataJSON(&b, MetadataBulkPrefix); err != nil {
		return nil, &Error{Kind: ErrStorage, Comment: "encoding a stored object's attributes failed", Err: err}
	}
	if mk := ar.capabilities().MetadataKeeper; mk != nil {
		kept := append([]byte(metadataVersion), b.Bytes()...)
		if err := mk.SetMetadata(ctx, uid, key, kept); err != nil && ctx.Err() == nil {
			ar.Logger.Warn("keeping an object's metadata in the index failed; it is read from the object again next time", "err", err)
		}
	}
	return b.Bytes(), nil
}

// metadataOf is Instance.Metadata for one stored instance: what the index
// kept, else read from the object, started at once in the background when
// ahead has room (the front end then takes it while later instances are
// read).
func (ar *Archive) metadataOf(ctx context.Context, in *store.Instance, ahead *metadataAhead) func(ctx context.Context) ([]byte, error) {
	if bytes.HasPrefix(in.Metadata, []byte(metadataVersion)) {
		kept := in.Metadata[len(metadataVersion):]
		return func(context.Context) ([]byte, error) { return kept, nil }
	}
	uid, key, ts := in.SOPInstanceUID, in.BlobKey, in.TransferSyntaxUID
	if ahead == nil {
		return func(ctx context.Context) ([]byte, error) { return ar.metadata(ctx, uid, key, ts) }
	}
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	ahead.sem <- struct{}{}
	go func() {
		defer func() { <-ahead.sem }()
		b, err := ar.metadata(ctx, uid, key, ts)
		done <- result{b, err}
	}()
	var once sync.Once
	var res result
	return func(c context.Context) ([]byte, error) {
		once.Do(func() {
			select {
			case res = <-done:
			case <-c.Done():
				res = result{err: c.Err()}
			}
		})
		return res.b, res.err
	}
}

// metadataWindow is how many instances a metadata retrieve reads ahead of
// the front end: their objects are read at once, in the background, for
// those whose metadata is not kept.
const metadataWindow = 4

// metadataAhead holds back the last metadataWindow instances of a
// metadata retrieve from the front end (each), in order, so that their
// metadata is computed while it takes the earlier ones.
type metadataAhead struct {
	each    func(*Instance) error
	pending []*Instance
	sem     chan struct{}
}

func newMetadataAhead(each func(*Instance) error) *metadataAhead {
	return &metadataAhead{each: each, sem: make(chan struct{}, metadataWindow)}
}

// add queues in and hands the front end the oldest queued instance once
// more than the window is queued.
func (a *metadataAhead) add(in *Instance) error {
	a.pending = append(a.pending, in)
	if len(a.pending) <= metadataWindow {
		return nil
	}
	return a.next()
}

// next hands the front end the oldest queued instance.
func (a *metadataAhead) next() error {
	first := a.pending[0]
	a.pending = a.pending[1:]
	return a.each(first)
}

// flush hands the front end what is queued.
func (a *metadataAhead) flush() error {
	for len(a.pending) > 0 {
		if err := a.next(); err != nil {
			return err
		}
	}
	return nil
}

// queueMetadata asks for the metadata of a stored object to be computed
// and kept; when the queue is full it is left for later.
func (ar *Archive) queueMetadata(job metadataJob) {
	if ar.metaJobs == nil || job.uid == "" {
		return
	}
	ar.lastStored.Store(time.Now().UnixNano())
	select {
	case ar.metaJobs <- job:
	default:
	}
}

// metadataLoop computes the metadata of stored objects, one at a time,
// once storing has paused for metadataQuiet; it gives up what is queued
// when the archive closes (it is computed when asked for).
func (ar *Archive) metadataLoop() {
	defer close(ar.metaDone)
	for job := range ar.metaJobs {
		for {
			wait := metadataQuiet - time.Since(time.Unix(0, ar.lastStored.Load()))
			if wait <= 0 {
				break
			}
			select {
			case <-ar.metaStop:
				return
			case <-time.After(wait):
			}
		}
		select {
		case <-ar.metaStop:
			return
		default:
		}
		if _, err := ar.metadata(context.Background(), job.uid, job.key, job.ts); err != nil {
			ar.Logger.Debug("computing a stored object's metadata failed; it is computed again when asked for", "err", err)
		}
	}
}
