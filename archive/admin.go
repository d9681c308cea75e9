package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store"
)

// StudySummary is what DeleteStudy removed or ExportStudy copied: the
// study, its patient and the instances per SOP Class UID (for the audit
// trail).
type StudySummary struct {
	UID       string         `json:"uid"`
	PatientID string         `json:"patient_id"`
	Classes   map[string]int `json:"classes"`
}

// ErrNoStudy: DeleteStudy found no instance of the study.
var ErrNoStudy = errors.New("no such study")

// A Deletion is a study deletion as the audit trail records it. Where
// the index is a store.DeletionRecorder, it is kept in the index, as a
// note committed with the deletion itself, until DeletionAudited: a
// deletion a crash cut short is then either not made at all or made
// whole and listed by RecordedDeletions at the next start, to be
// audited.
type Deletion struct {
	ID       int64        `json:"-"` // of the note in the index; 0 when none is kept
	Study    StudySummary `json:"study"`
	Reason   string       `json:"reason"`
	Operator string       `json:"operator"` // who asked
	// By is the tool that deleted it, as the audit trail names it ("ward
	// retention", "ward patient delete"); empty: ward study delete.
	By string    `json:"by,omitempty"`
	At time.Time `json:"at"`
	// Node is the node that made it (Archive.Node); empty in notes
	// made before nodes.
	Node string `json:"node,omitempty"`
}

// DeletionGuard is how old a deletion another node recorded must be
// before RecordedDeletions lists it: until then that node may still be
// auditing it.
const DeletionGuard = time.Hour

// DeleteStudy removes every instance of a study from the index (parents
// left empty go with them), then its objects from the blob store, and
// returns what it deleted. The index commit comes first, all the
// instances in one transaction with the deletion's note where the index
// allows (else one at a time): a crash after it leaves only blobs the
// index has recorded for deletion, which Open deletes. An error with a
// Deletion means the study is gone from the index but some of its objects
// are not yet (they are retried at the next start).
func (ar *Archive) DeleteStudy(ctx context.Context, studyUID, reason, operator string) (*Deletion, error) {
	return ar.DeleteStudyBy(ctx, studyUID, reason, operator, "")
}

// DeleteStudyBy is DeleteStudy by a tool other than ward study delete
// (Deletion.By).
func (ar *Archive) DeleteStudyBy(ctx context.Context, studyUID, reason, operator, by string) (*Deletion, error) {
	insts, err := ar.studyInstances(ctx, studyUID)
	if err != nil {
		return nil, err
	}
	d := &Deletion{Study: *summarize(studyUID, insts), Reason: reason, Operator: operator, By: by, At: time.Now().UTC(), Node: ar.node()}
	if dr := ar.capabilities().DeletionRecorder; dr != nil {
		uids := make([]string, len(insts))
		for i, in := range insts {
			uids[i] = in.SOPInstanceUID
		}
		note, err := json.Marshal(d)
		if err != nil {
			return nil, err
		}
		if d.ID, err = dr.DeleteRecorded(ctx, uids, note); err != nil {
			return nil, fmt.Errorf("deleting the study from the index: %w", err)
		}
	} else {
		for _, in := range insts {
			uid := in.SOPInstanceUID
			if err := ar.Index.Delete(ctx, uid); err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, fmt.Errorf("deleting instance %s from the index: %w", uid, err)
			}
		}
	}
	for {
		keys, err := ar.Index.PendingBlobDeletes(ctx, 1000)
		if err != nil {
			return d, fmt.Errorf("the study is deleted; listing its objects to remove failed (retried at the next start): %w", err)
		}
		if len(keys) == 0 {
			return d, nil
		}
		if err := ar.deleteBlobs(ctx, keys); errors.Is(err, errDeletesHeld) {
			return d, nil // the files go when the backup ends
		} else if err != nil {
			return d, fmt.Errorf("the study is deleted; removing its objects failed (retried at the next start): %w", err)
		}
	}
}

// RecordedDeletions lists the deletions the index keeps a note of (see
// Deletion): made, and perhaps not yet audited, by this node (or before
// nodes); another node's only once older than DeletionGuard (that node
// stopped before auditing it and has not started again).
func (ar *Archive) RecordedDeletions(ctx context.Context) ([]*Deletion, error) {
	dr := ar.capabilities().DeletionRecorder
	if dr == nil {
		return nil, nil
	}
	notes, err := dr.RecordedDeletions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*Deletion, 0, len(notes))
	for _, n := range notes {
		d := &Deletion{}
		if err := json.Unmarshal(n.Note, d); err != nil {
			return nil, fmt.Errorf("the index's note of deletion %d: %w", n.ID, err)
		}
		d.ID = n.ID
		if d.Node != "" && d.Node != ar.node() && time.Since(d.At) < DeletionGuard {
			continue // another node's, which may be auditing it now
		}
		out = append(out, d)
	}
	return out, nil
}

// DeletionAudited forgets the note of d, once its audit record is safe.
func (ar *Archive) DeletionAudited(ctx context.Context, d *Deletion) error {
	dr := ar.capabilities().DeletionRecorder
	if dr == nil || d.ID == 0 {
		return nil
	}
	return dr.ForgetDeletion(ctx, d.ID)
}

// ExportStudy copies every instance of a study, as stored (Part 10), into
// dir as dir/STUDY/SERIES/SOP.dcm, each file synced, and returns what it
// exported. Files already there are replaced. A UID that cannot name a
// file (dicom.UIDFileName) is replaced by a name derived from it.
func (ar *Archive) ExportStudy(ctx context.Context, studyUID, dir string) (*StudySummary, error) {
	insts, err := ar.studyInstances(ctx, studyUID)
	if err != nil {
		return nil, err
	}
	d := &StudySummary{UID: studyUID, Classes: map[string]int{}}
	for _, in := range insts {
		// The index is not trusted to hold only valid UIDs (one written
		// before Ward checked them may not): a UID that is no plain name
		// is replaced by one derived from it, and never reaches the path.
		for _, u := range []string{in.StudyInstanceUID, in.SeriesInstanceUID, in.SOPInstanceUID} {
			if !dicom.StorableUID(u) {
				ar.Logger.Warn("export: a stored UID is not valid and cannot name a file; the object is exported under a name derived from it", "name", dicom.UIDFileName(u))
			}
		}
		path := filepath.Join(dir, dicom.UIDFileName(in.StudyInstanceUID), dicom.UIDFileName(in.SeriesInstanceUID), dicom.UIDFileName(in.SOPInstanceUID)+".dcm")
		if err := ar.copyBlob(ctx, in.BlobKey, path); err != nil {
			return d, err
		}
		d.Classes[in.SOPClassUID]++
		d.PatientID = in.PatientID
	}
	return d, nil
}

// studyInstances lists the instances of a study (ErrNoStudy when none).
func (ar *Archive) studyInstances(ctx context.Context, studyUID string) ([]store.Instance, error) {
	qr := ar.capabilities().Querier
	if qr == nil {
		return nil, errors.New("the index backend cannot list a study's instances")
	}
	var insts []store.Instance
	q := &store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchSingle, Value: studyUID}}}
	if err := qr.Instances(ctx, q, func(in *store.Instance) error { insts = append(insts, *in); return nil }); err != nil {
		return nil, fmt.Errorf("listing the study's instances: %w", err)
	}
	if len(insts) == 0 {
		return nil, fmt.Errorf("%s: %w", studyUID, ErrNoStudy)
	}
	return insts, nil
}

// summarize counts instances per SOP class.
func summarize(studyUID string, insts []store.Instance) *StudySummary {
	d := &StudySummary{UID: studyUID, Classes: map[string]int{}}
	for _, in := range insts {
		d.Classes[in.SOPClassUID]++
		d.PatientID = in.PatientID
	}
	return d
}

func (ar *Archive) copyBlob(ctx context.Context, key, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	rc, err := ar.Blobs.Open(ctx, key)
	if err != nil {
		return fmt.Errorf("opening a stored object: %w", err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(filepath.Dir(path), ".export-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, rc)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("exporting to %s: %w", path, err)
	}
	return nil
}
