package admin

import (
	"context"
	"fmt"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom/deid"
	"github.com/ward-pacs/ward/internal/config"
)

// Trail is where an operation records its audit messages: Record queues
// one, Sync returns once those queued are on disk (nil: nothing to wait
// for).
type Trail struct {
	Record func(*audit.Message)
	Sync   func() error
}

// RunStudyOp deletes or exports each study with ar and records the audit
// message of each (ward is Ward as a participant, operator names who
// asked).
func RunStudyOp(ctx context.Context, ar *archive.Archive, tr Trail, ward audit.Node, operator string, r *StudyRequest) []StudyResult {
	who := audit.Node{AETitle: "ward study " + r.Op, ID: operator}
	out := make([]StudyResult, 0, len(r.Studies))
	for _, uid := range r.Studies {
		res := StudyResult{Study: uid}
		var err error
		if r.Op == "delete" {
			var d *archive.Deletion
			d, err = ar.DeleteStudy(ctx, uid, r.Reason, operator)
			if d != nil {
				// Deleted from the index: recorded as done (objects a
				// failure left are removed at the next start).
				res.Instances = AuditDeletions(ctx, ar, tr, ward, []*archive.Deletion{d})
			}
		} else if r.Deidentify != "" {
			res.Instances, res.NewStudy, res.Quarantined, err = exportDeidentified(ctx, ar, tr, ward, who, uid, r)
		} else {
			var d *archive.StudySummary
			d, err = ar.ExportStudy(ctx, uid, r.Out)
			if d != nil && len(d.Classes) > 0 {
				st := &audit.Study{UID: d.UID, PatientID: d.PatientID, Classes: d.Classes}
				res.Instances = st.Instances()
				outcome := audit.OutcomeSuccess
				if err != nil {
					outcome = audit.OutcomeSeriousFail
				}
				tr.Record(audit.Export(ward, who, audit.Media{ID: r.Out, Type: MediaTypes[r.Media]}, outcome, []*audit.Study{st}, time.Now()))
			}
		}
		if err != nil {
			res.Error = err.Error()
		}
		out = append(out, res)
	}
	return out
}

// AuditDeletions records each deletion as Study Deleted (PS3.15 A.5.3.5)
// with its reason and operator and, once the records are on disk,
// forgets the index's notes of them. It returns the instances deleted.
// Should Ward stop before the notes are forgotten, the next start
// records the deletions again (see FinishDeletions): a deletion may be
// recorded twice, never not at all.
func AuditDeletions(ctx context.Context, ar *archive.Archive, tr Trail, ward audit.Node, ds []*archive.Deletion) int {
	n := 0
	for _, d := range ds {
		st := &audit.Study{UID: d.Study.UID, PatientID: d.Study.PatientID, Classes: d.Study.Classes}
		n += st.Instances()
		by := d.By
		if by == "" {
			by = "ward study delete"
		}
		who := audit.Node{AETitle: by, ID: d.Operator}
		tr.Record(audit.StudyDeleted(ward, who, audit.OutcomeSuccess, []*audit.Study{st}, d.Reason, d.At))
	}
	if tr.Sync != nil {
		if err := tr.Sync(); err != nil {
			ar.Logger.Error("the audit records of study deletions may not be on disk; they are recorded again at the next start", "err", err)
			return n
		}
	}
	for _, d := range ds {
		if err := ar.DeletionAudited(context.WithoutCancel(ctx), d); err != nil {
			ar.Logger.Error("forgetting an audited deletion failed; it is recorded again at the next start", "err", err)
		}
	}
	return n
}

// FinishDeletions audits the study deletions the index kept a note of
// and the audit trail may lack: a crash came after the deletion was
// committed and before its record was safe. (The objects of such a
// deletion are removed by ar.Open, as any recorded for deletion.)
func FinishDeletions(ctx context.Context, ar *archive.Archive, tr Trail, ward audit.Node) error {
	ds, err := ar.RecordedDeletions(ctx)
	if err != nil {
		return fmt.Errorf("study deletions cut short: %w", err)
	}
	if len(ds) == 0 {
		return nil
	}
	ar.Logger.Warn("study deletions cut short by a stop were finished at start; recording them in the audit trail", "deletions", len(ds))
	AuditDeletions(ctx, ar, tr, ward, ds)
	return nil
}

// RunVerify checks the stored objects against the index
// (archive.Verify), keeping the first MaxVerifyProblems problems. Its
// result is never nil.
func RunVerify(ctx context.Context, ar *archive.Archive, o archive.VerifyOptions) (*VerifyResult, error) {
	res := &VerifyResult{Problems: []archive.VerifyProblem{}}
	rep, err := ar.Verify(ctx, o, func(p archive.VerifyProblem) {
		if len(res.Problems) < MaxVerifyProblems {
			res.Problems = append(res.Problems, p)
		}
	})
	res.Report = rep
	return res, err
}

// ReadStatus reads the counts of ar (configured by c) and its disk's
// space.
func ReadStatus(ctx context.Context, ar *archive.Archive, c *config.Config) (*Status, error) {
	caps := ar.Capabilities()
	st := &Status{DataDir: c.DataDir, Node: ar.Node, Capabilities: caps.Names(), DiskFree: -1, DiskTotal: -1, DiskReserve: -1}
	if caps.DeleteHolder != nil {
		held, err := caps.DeleteHolder.DeletesHeld(ctx)
		if err != nil {
			return nil, err
		}
		st.DeletionsHeld = held
	}
	if cn := caps.Counter; cn != nil {
		counts, err := cn.Counts(ctx)
		if err != nil {
			return nil, err
		}
		st.Counts = counts
	} else {
		n, err := ar.Index.CountInstances(ctx)
		if err != nil {
			return nil, err
		}
		st.Counts.Instances = n
	}
	pending, err := ar.Index.PendingBlobDeletes(ctx, 1000)
	if err != nil {
		return nil, err
	}
	st.AwaitingDeletion = len(pending)
	if sr := caps.SpaceReporter; sr != nil {
		free, total, err := sr.Space(ctx)
		if err != nil {
			return nil, err
		}
		st.DiskFree, st.DiskTotal = free, total
		minFree, share, err := c.Storage.MinFreeBytes()
		if err != nil {
			return nil, err
		}
		st.DiskReserve = archive.Reserve(minFree, share, total)
		st.StoresRefused = free < st.DiskReserve
	}
	return st, nil
}

// exportDeidentified exports one study de-identified by r's profile and
// records it as Export, the study marked Anonymized with the method and
// the UID it left as.
func exportDeidentified(ctx context.Context, ar *archive.Archive, tr Trail, ward, who audit.Node, uid string, r *StudyRequest) (n int, newUID string, quarantined int, err error) {
	p, err := deid.ParseProfile(r.Deidentify)
	if err != nil {
		return 0, "", 0, err
	}
	d, err := ar.ExportStudyDeidentified(ctx, uid, r.Out, &deid.Config{Profile: p, Secret: r.DeidSecret, AcceptBurnedIn: r.AcceptBurnedIn})
	if d == nil {
		return 0, "", 0, err
	}
	if len(d.Classes) > 0 {
		st := &audit.Study{UID: d.UID, PatientID: d.PatientID, Classes: d.Classes, Deidentified: p.Method(), DeidentifiedUID: d.NewUID}
		n = st.Instances()
		outcome := audit.OutcomeSuccess
		if err != nil {
			outcome = audit.OutcomeSeriousFail
		}
		tr.Record(audit.Export(ward, who, audit.Media{ID: r.Out, Type: MediaTypes[r.Media]}, outcome, []*audit.Study{st}, time.Now()))
	}
	return n, d.NewUID, d.Quarantined, err
}
