package archive

import (
	"context"
	"errors"
	"fmt"

	"github.com/ward-pacs/ward/store"
)

// DeletedStudy is what DeleteStudy removed: the study, its patient and
// the instances per SOP Class UID (for the audit trail).
type DeletedStudy struct {
	UID       string
	PatientID string
	Classes   map[string]int
}

// ErrNoStudy: DeleteStudy found no instance of the study.
var ErrNoStudy = errors.New("no such study")

// DeleteStudy removes every instance of a study from the index (parents
// left empty go with them), then its objects from the blob store. The
// index commit comes first: a crash after it leaves only blobs the index
// has recorded for deletion, which Open deletes.
func (ar *Archive) DeleteStudy(ctx context.Context, studyUID string) (*DeletedStudy, error) {
	qr, ok := ar.Index.(store.Querier)
	if !ok {
		return nil, errors.New("the index backend cannot list a study's instances")
	}
	d := &DeletedStudy{UID: studyUID, Classes: map[string]int{}}
	var sops []string
	q := &store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchSingle, Value: studyUID}}}
	err := qr.Instances(ctx, q, func(in *store.Instance) error {
		sops = append(sops, in.SOPInstanceUID)
		d.Classes[in.SOPClassUID]++
		d.PatientID = in.PatientID
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the study's instances: %w", err)
	}
	if len(sops) == 0 {
		return nil, fmt.Errorf("%s: %w", studyUID, ErrNoStudy)
	}
	for _, uid := range sops {
		if err := ar.Index.Delete(ctx, uid); err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("deleting instance %s from the index: %w", uid, err)
		}
	}
	for {
		keys, err := ar.Index.PendingBlobDeletes(ctx, 1000)
		if err != nil {
			return d, fmt.Errorf("listing the deleted objects: %w", err)
		}
		if len(keys) == 0 {
			return d, nil
		}
		if err := ar.deleteBlobs(ctx, keys); err != nil {
			return d, err
		}
	}
}
