package archive

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/store"
)

var _ dimse.Retriever = (*Archive)(nil)

// Retrieve serves C-MOVE and C-GET: it resolves the identifier (unique keys
// only, see parseRetrieve; the level's one naming the objects, see
// JudgeRetrieve, with or without bulk-query) to the stored instances, ordered by study, series
// and instance number. A bad identifier fails with A900; an index failure
// with A701 (unable to calculate the number of matches). No match is an
// empty list (the dispatcher answers success with no sub-operations).
func (ar *Archive) Retrieve(ctx context.Context, r *dimse.RetrieveRequest) ([]dimse.Instance, error) {
	patientRoot, err := model(r.SOPClassUID)
	if err != nil {
		return nil, err
	}
	qr, ok := ar.Index.(store.Querier)
	if !ok {
		return nil, &dimse.StatusError{Status: dimse.StatusUnableToProcess, Comment: "the index backend cannot serve retrieves"}
	}
	id, err := parseRetrieve(r.Identifier, patientRoot)
	if err != nil {
		return nil, err
	}
	q := &store.Query{Level: id.level, PatientRoot: patientRoot, Keys: id.keys}
	if reach := JudgeRetrieve(q); reach.Universal {
		return nil, badKey(reach.Missing, "%s", reach.Why)
	}
	var out []dimse.Instance
	err = qr.Instances(ctx, q, func(in *store.Instance) error {
		key := in.BlobKey
		out = append(out, dimse.Instance{
			SOPClassUID:       in.SOPClassUID,
			SOPInstanceUID:    in.SOPInstanceUID,
			TransferSyntaxUID: in.TransferSyntaxUID,
			StudyInstanceUID:  in.StudyInstanceUID,
			PatientID:         in.PatientID,
			Size:              in.Size,
			Open:              func(ctx context.Context) (io.ReadCloser, error) { return ar.openDataSet(ctx, key) },
		})
		return nil
	})
	switch {
	case err == nil:
		return out, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, store.ErrUnsupportedKey):
		return nil, &dimse.StatusError{Status: dimse.StatusDataSetMismatch, Comment: err.Error(), Err: err}
	}
	return nil, &dimse.StatusError{Status: dimse.StatusOutOfResourcesMatches, Comment: "querying the index failed", Err: err}
}

// dataSetReader reads the data set of a stored object after its Part 10
// header and closes the blob.
type dataSetReader struct {
	io.Reader
	c io.Closer
}

func (d *dataSetReader) Close() error { return d.c.Close() }

// openDataSet opens a stored object and skips its Part 10 header.
func (ar *Archive) openDataSet(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := ar.Blobs.Open(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("opening a stored object: %w", err)
	}
	_, br, err := dicom.ReadFileHeader(rc, dicom.DefaultMetaLimit)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("reading a stored object's header: %w", err)
	}
	return &dataSetReader{Reader: br, c: rc}, nil
}

// Destination resolves a C-MOVE destination through Archive.Destinations.
func (ar *Archive) Destination(ctx context.Context, aeTitle string) (string, error) {
	if ar.Destinations == nil {
		return "", fmt.Errorf("%w: %q", dimse.ErrUnknownDestination, aeTitle)
	}
	addr, err := ar.Destinations(aeTitle)
	if err != nil && !errors.Is(err, dimse.ErrUnknownDestination) {
		err = fmt.Errorf("%w: %q: %w", dimse.ErrUnknownDestination, aeTitle, err)
	}
	return addr, err
}
