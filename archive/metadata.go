package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"

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
const metadataQueue = 1024

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
		return nil, Failf(ErrStorage, "a stored object's transfer syntax %s is unknown", ts)
	}
	rc, err := ar.openDataSet(ctx, key)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, &Error{Kind: ErrStorage, Comment: "a stored object is missing (replaced or deleted meanwhile?)", Err: err}
		}
		return nil, &Error{Kind: ErrStorage, Comment: "reading a stored object failed", Err: err}
	}
	defer rc.Close()
	ds, err := dicom.ReadMetadata(rc, syntax, MaxMetadataSize, dicom.DefaultBulkThreshold)
	if err != nil {
		return nil, &Error{Kind: ErrStorage, Comment: fmt.Sprintf("reading a stored object's attributes failed: %v", errors.Unwrap(err)), Err: err}
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
// kept, else read from the object.
func (ar *Archive) metadataOf(in *store.Instance) func(ctx context.Context) ([]byte, error) {
	if bytes.HasPrefix(in.Metadata, []byte(metadataVersion)) {
		kept := in.Metadata[len(metadataVersion):]
		return func(context.Context) ([]byte, error) { return kept, nil }
	}
	uid, key, ts := in.SOPInstanceUID, in.BlobKey, in.TransferSyntaxUID
	return func(ctx context.Context) ([]byte, error) { return ar.metadata(ctx, uid, key, ts) }
}

// queueMetadata asks for the metadata of a stored object to be computed
// and kept; when the queue is full it is left for later.
func (ar *Archive) queueMetadata(job metadataJob) {
	if ar.metaJobs == nil || job.uid == "" {
		return
	}
	select {
	case ar.metaJobs <- job:
	default:
	}
}

// metadataLoop computes the metadata of stored objects, one at a time.
func (ar *Archive) metadataLoop() {
	defer close(ar.metaDone)
	for job := range ar.metaJobs {
		if _, err := ar.metadata(context.Background(), job.uid, job.key, job.ts); err != nil {
			ar.Logger.Debug("computing a stored object's metadata failed; it is computed again when asked for", "err", err)
		}
	}
}
