package archive

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/dicom/deid"
	"github.com/ward-pacs/ward/store"
)

// Retrieve serves C-MOVE and C-GET (WADO later): it resolves the
// identifier (unique keys only, see parseRetrieve; the level's one naming
// the objects, see JudgeRetrieve, with or without bulk-query) to the stored
// instances, ordered by study, series and instance number, and calls each
// with every one. A bad identifier fails with ErrInvalidIdentifier; an
// index failure with ErrStorage. No match calls each never and returns nil.
func (ar *Archive) Retrieve(ctx context.Context, r *RetrieveRequest, each func(*Instance) error) error {
	patientRoot, err := patientRoot(r.Model)
	if err != nil {
		return err
	}
	qr := ar.capabilities().Querier
	if qr == nil {
		return Fail(ErrNotSupported, "the index backend cannot serve retrieves")
	}
	id, err := parseRetrieve(r.Identifier, patientRoot)
	if err != nil {
		return err
	}
	q := &store.Query{Level: id.level, PatientRoot: patientRoot, Keys: id.keys, WithMetadata: r.Metadata}
	if reach := JudgeRetrieve(q); reach.Universal {
		return badKey(reach.Missing, "%s", reach.Why)
	}
	var dcfg *deid.Config
	profile, err := ar.retrieveProfile(ctx, r)
	if err != nil {
		return err
	}
	if profile != "" {
		if r.Metadata {
			return Fail(ErrNotAuthorized, "metadata refused: de-identified objects only for this caller")
		}
		if dcfg, err = ar.deidConfig(profile); err != nil {
			return err
		}
	}
	var eachErr error
	var ahead *metadataAhead
	if r.Metadata {
		ahead = newMetadataAhead(each)
		each = ahead.add
	}
	err = qr.Instances(ctx, q, func(in *store.Instance) error {
		key := in.BlobKey
		var md func(context.Context) ([]byte, error)
		if r.Metadata {
			md = ar.metadataOf(ctx, in, ahead)
		}
		inst := &Instance{
			Metadata:          md,
			SOPClassUID:       in.SOPClassUID,
			SOPInstanceUID:    in.SOPInstanceUID,
			TransferSyntaxUID: in.TransferSyntaxUID,
			StudyInstanceUID:  in.StudyInstanceUID,
			SeriesInstanceUID: in.SeriesInstanceUID,
			PatientID:         in.PatientID,
			Size:              in.Size,
			Open: func(ctx context.Context) (io.ReadCloser, error) {
				rc, _, err := ar.openCurrent(ctx, in.SOPInstanceUID, key, in.SOPClassUID, in.TransferSyntaxUID)
				return rc, err
			},
		}
		if dcfg != nil {
			ar.deidentify(inst, key, dcfg)
		}
		err := each(inst)
		if err != nil {
			eachErr = err
		}
		return err
	})
	if err == nil && ahead != nil {
		if err = ahead.flush(); err != nil {
			eachErr = err
		}
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case eachErr != nil && errors.Is(err, eachErr):
		return err // the front end's own
	case errors.Is(err, store.ErrUnsupportedKey):
		return &Error{Kind: ErrInvalidIdentifier, Comment: err.Error(), Err: err}
	}
	return resourceError("querying the index", err)
}

// dataSetReader reads the data set of a stored object after its Part 10
// header and closes the blob.
type dataSetReader struct {
	io.Reader
	c io.Closer
}

func (d *dataSetReader) Close() error { return d.c.Close() }

// seekableDataSet is the data set of a stored object whose blob can
// seek: reads go through the header reader's buffer, as dataSetReader's
// do, and Seek moves the blob (offsets are the blob's; the data set
// starts at Seek(0, io.SeekCurrent) when opened), so that a reader of
// frames can skip the pixel data it does not need instead of reading it.
type seekableDataSet struct {
	br *bufio.Reader
	rs io.ReadSeeker
	c  io.Closer
}

func (d *seekableDataSet) Read(p []byte) (int, error) { return d.br.Read(p) }

func (d *seekableDataSet) Seek(off int64, whence int) (int64, error) {
	if whence == io.SeekCurrent {
		cur, err := d.rs.Seek(0, io.SeekCurrent)
		if err != nil {
			return 0, err
		}
		at := cur - int64(d.br.Buffered())
		if off == 0 {
			return at, nil
		}
		off, whence = at+off, io.SeekStart
	}
	n, err := d.rs.Seek(off, whence)
	if err != nil {
		return 0, err
	}
	d.br.Reset(d.rs)
	return n, nil
}

func (d *seekableDataSet) Close() error { return d.c.Close() }

// IntegrityFailure is the domain error for err when a stored object
// failed its integrity check (store.ErrCorrupt: an encrypted object that
// does not authenticate), which every front end answers plainly
// (ErrProcessing, with a comment); nil for any other error.
func IntegrityFailure(err error) *Error {
	if errors.Is(err, store.ErrCorrupt) {
		return &Error{Kind: ErrProcessing, Comment: "stored object fails its integrity check: not served", Err: err}
	}
	return nil
}

func corrupt(err error) error {
	if e := IntegrityFailure(err); e != nil {
		return e
	}
	return err
}

// openDataSet opens a stored object and skips its Part 10 header. The
// reader is an io.Seeker when the blob is one.
func (ar *Archive) openDataSet(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := ar.Blobs.Open(ctx, key)
	if err != nil {
		return nil, corrupt(fmt.Errorf("opening a stored object: %w", err))
	}
	_, br, err := dicom.ReadFileHeader(rc, dicom.DefaultMetaLimit)
	if err != nil {
		rc.Close()
		return nil, corrupt(fmt.Errorf("reading a stored object's header: %w", err))
	}
	if rs, ok := rc.(io.ReadSeeker); ok {
		return &seekableDataSet{br: br, rs: rs, c: rc}, nil
	}
	return &dataSetReader{Reader: br, c: rc}, nil
}

// openCurrent opens the data set of the instance uid found under blob key
// with class and ts. When that blob is gone, the instance was replaced
// since the index was read (by a store on this node or another, whose
// replaced blob is deleted once the new row is committed): the object
// that replaced it is opened instead, if it has the same SOP class and
// transfer syntax (what the requestor was told), so that a retrieve
// running during a replace sends one whole object, the newer one. A
// deleted instance, or a replacement in another syntax, fails as before.
// An empty class is not checked. It returns the blob key opened.
func (ar *Archive) openCurrent(ctx context.Context, uid, key, class, ts string) (io.ReadCloser, string, error) {
	rc, err := ar.openDataSet(ctx, key)
	for tries := 0; err != nil && errors.Is(err, store.ErrNotFound) && tries < 3; tries++ {
		cur, gerr := ar.Index.Get(ctx, uid)
		if gerr != nil || cur.BlobKey == key || (class != "" && cur.SOPClassUID != class) || cur.TransferSyntaxUID != ts {
			break
		}
		key = cur.BlobKey
		rc, err = ar.openDataSet(ctx, key)
	}
	return rc, key, err
}

// Destination resolves a C-MOVE destination through Archive.Destinations.
// Any failure is ErrUnknownDestination, naming the title.
func (ar *Archive) Destination(ctx context.Context, aeTitle string) (string, error) {
	if ar.Destinations == nil {
		return "", Failf(ErrUnknownDestination, "unknown move destination %q", aeTitle)
	}
	addr, err := ar.Destinations(aeTitle)
	if err != nil {
		if KindOf(err) == ErrUnknownDestination {
			return "", err
		}
		return "", &Error{Kind: ErrUnknownDestination, Comment: fmt.Sprintf("unknown move destination %q", aeTitle), Err: err}
	}
	return addr, nil
}
