package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/config"
)

// RetentionResult is what ward retention plan or run reports: no patient
// data, the study UIDs, dates, modalities, counts and rules.
type RetentionResult struct {
	// Studies in the archive, and Candidates: those the rules would
	// delete now (all of them, whatever the caps).
	Studies    int `json:"studies"`
	Candidates int `json:"candidates"`
	// Planned lists the candidates (the first MaxVerifyProblems).
	Planned []archive.RetentionCandidate `json:"planned"`
	// Deleted (run): the studies deleted, or that failed.
	Deleted []StudyResult `json:"deleted,omitempty"`
	// Refused (run): why the pass deleted nothing (the share of the
	// archive it would delete is above max_percent).
	Refused string `json:"refused,omitempty"`
	// Capped (run): max_deletions stopped the pass; the rest go next.
	Capped bool `json:"capped,omitempty"`
	// NoRules (plan): no rule is configured.
	NoRules bool `json:"no_rules,omitempty"`
}

// NoRetentionRules says why a retention run does nothing.
const NoRetentionRules = "no retention rules are configured ([[retention.rules]] in ward.toml): nothing is deleted by age"

// RetentionBy is the tool the audit trail names for retention deletions.
const RetentionBy = "ward retention"

// RunRetention plans the retention rules of c on ar and, when run, deletes
// the candidates the way ward study delete does (ar.DeleteStudyBy, the
// deletion recorded with its note and audited as Study Deleted with the
// rule as the reason), at most max_deletions (or maxDeletions when
// positive). A run that would delete more than max_percent of the
// archive's studies deletes nothing unless force.
func RunRetention(ctx context.Context, ar *archive.Archive, tr Trail, ward audit.Node, c *config.Config, operator string, run, force bool, maxDeletions int) (*RetentionResult, error) {
	rules, err := c.Retention.RetentionRules()
	if err != nil {
		return nil, err
	}
	if len(rules) == 0 {
		if !run {
			return &RetentionResult{Planned: []archive.RetentionCandidate{}, NoRules: true}, nil
		}
		return nil, errors.New(NoRetentionRules)
	}
	cands, total, err := ar.RetentionPlan(ctx, rules, time.Now())
	if err != nil {
		return nil, err
	}
	res := &RetentionResult{Studies: total, Candidates: len(cands), Planned: cands}
	if len(res.Planned) > MaxVerifyProblems {
		res.Planned = res.Planned[:MaxVerifyProblems]
	}
	if !run || len(cands) == 0 {
		return res, nil
	}
	limit, pct := c.Retention.Limits()
	if maxDeletions > 0 {
		limit = maxDeletions
	}
	if share := 100 * float64(len(cands)) / float64(max(total, 1)); share > pct && !force {
		res.Refused = fmt.Sprintf("the rules would delete %d of %d studies (%.1f%%), more than max_percent (%g%%): nothing deleted; check with ward retention plan, then ward retention run --force", len(cands), total, share, pct)
		return res, nil
	}
	for i, cand := range cands {
		if i >= limit {
			res.Capped = true
			break
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		r := StudyResult{Study: cand.Study}
		// Judged again: it may have received objects since the plan.
		now, ok, err := ar.StillDue(ctx, rules, cand.Study, time.Now())
		if err != nil {
			r.Error = err.Error()
			res.Deleted = append(res.Deleted, r)
			continue
		}
		if !ok {
			continue
		}
		d, err := ar.DeleteStudyBy(ctx, cand.Study, now.Reason(), operator, RetentionBy)
		if d != nil {
			r.Instances = AuditDeletions(ctx, ar, tr, ward, []*archive.Deletion{d})
		}
		if err != nil {
			r.Error = err.Error()
		}
		res.Deleted = append(res.Deleted, r)
	}
	return res, nil
}

// PatientResult is what ward patient delete shows and did: the patient's
// studies (UIDs, dates, modalities and counts; no name) and, once
// confirmed, each deletion.
type PatientResult struct {
	Studies []archive.PatientStudy `json:"studies"`
	Deleted []StudyResult          `json:"deleted,omitempty"`
	// Scrubbed: the index's storage was rid of the deleted rows' bytes
	// (store.Scrubber); ScrubError says why not.
	Scrubbed   bool   `json:"scrubbed,omitempty"`
	ScrubError string `json:"scrub_error,omitempty"`
}

// PatientBy is the tool the audit trail names for an erasure.
const PatientBy = "ward patient delete"

// ErasureReason is the reason an erasure's deletions are recorded with.
func ErasureReason(reason string) string {
	return "erasure of the patient's data (GDPR Art. 17): " + strings.TrimSpace(reason)
}

// RunPatient lists the studies of r.Patient (and r.Issuer) and, for
// "patient-delete", deletes each one as ward study delete does, audited as
// Study Deleted with the erasure's reason and the operator, then has the
// index scrub the freed storage.
func RunPatient(ctx context.Context, ar *archive.Archive, tr Trail, ward audit.Node, operator string, r *StudyRequest) (*PatientResult, error) {
	sts, err := ar.PatientStudies(ctx, r.Patient, r.Issuer)
	if err != nil {
		return nil, err
	}
	res := &PatientResult{Studies: sts}
	if r.Op != "patient-delete" {
		return res, nil
	}
	reason := ErasureReason(r.Reason)
	for _, st := range sts {
		x := StudyResult{Study: st.Study}
		d, err := ar.DeleteStudyBy(ctx, st.Study, reason, operator, PatientBy)
		if d != nil {
			x.Instances = AuditDeletions(ctx, ar, tr, ward, []*archive.Deletion{d})
		}
		if err != nil {
			x.Error = err.Error()
		}
		res.Deleted = append(res.Deleted, x)
	}
	if err := ar.Scrub(ctx, r.Vacuum); err != nil {
		res.ScrubError = err.Error()
	} else {
		res.Scrubbed = true
	}
	return res, nil
}
