package archive

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-pacs/ward/store"
)

// Age is a retention period in calendar units: a study dated (or
// received) before now less the period is older than it.
type Age struct{ Years, Months, Days int }

// ParseAge reads a retention period: a positive whole number and a unit,
// d (days), w (weeks), m (months) or y (years): "90d", "6m", "10y".
func ParseAge(s string) (Age, error) {
	s = strings.TrimSpace(s)
	if len(s) < 2 {
		return Age{}, fmt.Errorf("age %q: a number and a unit (d, w, m, y), e.g. 10y or 90d", s)
	}
	n, err := strconv.Atoi(s[:len(s)-1])
	if err != nil || n <= 0 || n > 200*366 {
		return Age{}, fmt.Errorf("age %q: a positive whole number of days, weeks, months or years, e.g. 10y or 90d", s)
	}
	switch s[len(s)-1] {
	case 'd':
		return Age{Days: n}, nil
	case 'w':
		return Age{Days: 7 * n}, nil
	case 'm':
		return Age{Months: n}, nil
	case 'y':
		if n > 200 {
			return Age{}, fmt.Errorf("age %q: at most 200 years", s)
		}
		return Age{Years: n}, nil
	}
	return Age{}, fmt.Errorf("age %q: the unit is d, w, m or y (days, weeks, months, years)", s)
}

// Cutoff is the moment before which something is older than a.
func (a Age) Cutoff(now time.Time) time.Time { return now.AddDate(-a.Years, -a.Months, -a.Days) }

func (a Age) String() string {
	switch {
	case a.Years > 0:
		return strconv.Itoa(a.Years) + "y"
	case a.Months > 0:
		return strconv.Itoa(a.Months) + "m"
	}
	return strconv.Itoa(a.Days) + "d"
}

// A RetentionRule says how long studies are kept. It applies to a study
// whose every instance came from one of Sources (calling AE titles; none:
// any source) and whose every series has one of Modalities (none: any).
// By study date, a study is older than the rule when its Study Date is
// before the cutoff (a study without a Study Date never is); by receipt,
// when its newest instance was received before the cutoff.
type RetentionRule struct {
	Name       string
	OlderThan  Age
	ByReceived bool
	Sources    []string
	Modalities []string
}

// By names the rule's clock: "study_date" or "received".
func (r *RetentionRule) By() string {
	if r.ByReceived {
		return "received"
	}
	return "study_date"
}

// Reason is the reason a deletion under the rule is recorded with.
func (r *RetentionRule) Reason() string {
	what := "study date"
	if r.ByReceived {
		what = "receipt"
	}
	return fmt.Sprintf("retention rule %q: older than %s by %s", r.Name, r.OlderThan, what)
}

// RetentionCandidate is a study a retention plan would delete, with what
// the plan saw of it. PatientID is for the audit trail, not for display.
type RetentionCandidate struct {
	Study      string    `json:"study"`
	PatientID  string    `json:"-"`
	StudyDate  string    `json:"study_date"`
	Received   time.Time `json:"received"` // newest instance's receipt
	Modalities []string  `json:"modalities"`
	Series     int       `json:"series"`
	Instances  int       `json:"instances"`
	Rule       string    `json:"rule"`
	reason     string
}

// Reason is what the candidate's deletion is recorded with.
func (c *RetentionCandidate) Reason() string { return c.reason }

// RetentionPlan lists the studies the rules would delete now: those to
// which at least one rule applies and that are older than every rule
// that applies to them (the longest period wins: a rule keeping CT for
// ten years is not cut short by one keeping everything for five). The
// deciding rule, named as the reason, is the applying rule with the
// earliest cutoff (the first in order among equals). It returns the
// candidates, oldest first, and the number of studies in the archive.
// Nothing is changed.
func (ar *Archive) RetentionPlan(ctx context.Context, rules []RetentionRule, now time.Time) ([]RetentionCandidate, int, error) {
	if len(rules) == 0 {
		return nil, 0, nil
	}
	needInstances := false
	for i := range rules {
		if rules[i].ByReceived || len(rules[i].Sources) > 0 {
			needInstances = true
		}
	}
	studies, err := ar.listStudies(ctx, nil)
	if err != nil {
		return nil, 0, err
	}
	var out []RetentionCandidate
	for _, st := range studies {
		if needInstances {
			if err := ar.receipt(ctx, &st); err != nil {
				if errors.Is(err, ErrNoStudy) {
					continue // deleted meanwhile
				}
				return nil, 0, err
			}
		}
		if c, ok := st.judge(rules, now); ok {
			out = append(out, c)
		}
	}
	slices.SortStableFunc(out, func(a, b RetentionCandidate) int {
		if c := strings.Compare(a.StudyDate, b.StudyDate); c != 0 {
			return c
		}
		return a.Received.Compare(b.Received)
	})
	return out, len(studies), nil
}

// StillDue judges one study again under rules, just before its deletion:
// it may have received objects (another series, a recent receipt) since
// the plan. It returns the candidate as it now stands, or false (and no
// error) when the study is no longer due or is gone.
func (ar *Archive) StillDue(ctx context.Context, rules []RetentionRule, study string, now time.Time) (RetentionCandidate, bool, error) {
	sts, err := ar.listStudies(ctx, []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchSingle, Value: study}})
	if err != nil || len(sts) != 1 {
		return RetentionCandidate{}, false, err
	}
	st := &sts[0]
	for i := range rules {
		if rules[i].ByReceived || len(rules[i].Sources) > 0 {
			if err := ar.receipt(ctx, st); errors.Is(err, ErrNoStudy) {
				return RetentionCandidate{}, false, nil
			} else if err != nil {
				return RetentionCandidate{}, false, err
			}
			break
		}
	}
	c, ok := st.judge(rules, now)
	return c, ok, nil
}

// studyFacts is what the retention rules and erasure look at of a study.
type studyFacts struct {
	RetentionCandidate
	sources map[string]bool
}

// judge decides st under rules (see RetentionPlan).
func (st *studyFacts) judge(rules []RetentionRule, now time.Time) (RetentionCandidate, bool) {
	var decider *RetentionRule
	var latest time.Time
	for i := range rules {
		r := &rules[i]
		if !st.applies(r) {
			continue
		}
		cut := r.OlderThan.Cutoff(now)
		if r.ByReceived {
			if st.Received.IsZero() || !st.Received.Before(cut) {
				return RetentionCandidate{}, false
			}
		} else {
			d, err := time.Parse("20060102", st.StudyDate)
			if err != nil || !d.Before(time.Date(cut.Year(), cut.Month(), cut.Day(), 0, 0, 0, 0, time.UTC)) {
				return RetentionCandidate{}, false
			}
		}
		if decider == nil || cut.Before(latest) {
			decider, latest = r, cut
		}
	}
	if decider == nil {
		return RetentionCandidate{}, false
	}
	c := st.RetentionCandidate
	c.Rule, c.reason = decider.Name, decider.Reason()
	return c, true
}

// applies: every series of st has one of r's modalities, and every
// instance came from one of its sources.
func (st *studyFacts) applies(r *RetentionRule) bool {
	if len(r.Modalities) > 0 {
		if len(st.Modalities) == 0 {
			return false
		}
		for _, m := range st.Modalities {
			if !slices.ContainsFunc(r.Modalities, func(x string) bool { return strings.EqualFold(x, m) }) {
				return false
			}
		}
	}
	if len(r.Sources) > 0 {
		if len(st.sources) == 0 {
			return false
		}
		for s := range st.sources {
			if !slices.Contains(r.Sources, s) {
				return false
			}
		}
	}
	return true
}

// listStudies lists the studies matching keys (all when none) with their
// date, modalities and counts.
func (ar *Archive) listStudies(ctx context.Context, keys []store.Key) ([]studyFacts, error) {
	qr := ar.capabilities().Querier
	if qr == nil {
		return nil, errors.New("the index backend cannot list studies")
	}
	q := &store.Query{Level: store.LevelStudy, Keys: keys, Return: []string{"StudyInstanceUID", "StudyDate", "PatientID",
		"ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"}}
	var out []studyFacts
	err := qr.Query(ctx, q, func(m store.Match) error {
		st := studyFacts{RetentionCandidate: RetentionCandidate{Study: m["StudyInstanceUID"], StudyDate: strings.TrimSpace(m["StudyDate"]), PatientID: m["PatientID"]}}
		for _, x := range strings.Split(m["ModalitiesInStudy"], `\`) {
			if x = strings.TrimSpace(x); x != "" {
				st.Modalities = append(st.Modalities, x)
			}
		}
		st.Series, _ = strconv.Atoi(m["NumberOfStudyRelatedSeries"])
		st.Instances, _ = strconv.Atoi(m["NumberOfStudyRelatedInstances"])
		out = append(out, st)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing studies: %w", err)
	}
	return out, nil
}

// receipt reads when each instance of st was received and from where.
func (ar *Archive) receipt(ctx context.Context, st *studyFacts) error {
	insts, err := ar.studyInstances(ctx, st.Study)
	if err != nil {
		return err
	}
	st.sources = map[string]bool{}
	for _, in := range insts {
		full, err := ar.Index.Get(ctx, in.SOPInstanceUID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		st.sources[strings.TrimSpace(full.SourceAET)] = true
		if full.ReceivedAt.After(st.Received) {
			st.Received = full.ReceivedAt
		}
	}
	return nil
}

// PatientStudy is a study of a patient, as ward patient delete shows it
// before erasing: no name, the UID and counts.
type PatientStudy struct {
	Study      string   `json:"study"`
	StudyDate  string   `json:"study_date"`
	Modalities []string `json:"modalities"`
	Series     int      `json:"series"`
	Instances  int      `json:"instances"`
}

// PatientStudies lists every study of the patient with that Patient ID
// (and Issuer of Patient ID, when issuer is not nil; an empty issuer
// matches studies without one).
func (ar *Archive) PatientStudies(ctx context.Context, patientID string, issuer *string) ([]PatientStudy, error) {
	if strings.TrimSpace(patientID) == "" {
		return nil, errors.New("an empty Patient ID")
	}
	keys := []store.Key{{Attribute: "PatientID", Kind: store.MatchSingle, Value: patientID}}
	if issuer != nil {
		k := store.Key{Attribute: "IssuerOfPatientID", Kind: store.MatchSingle, Value: *issuer}
		if *issuer == "" {
			k = store.Key{Attribute: "IssuerOfPatientID", Kind: store.MatchEmpty}
		}
		if km := ar.capabilities().KeyMatcher; km != nil && !km.CanMatch("IssuerOfPatientID") {
			return nil, errors.New("the index backend cannot match the Issuer of Patient ID")
		}
		keys = append(keys, k)
	}
	sts, err := ar.listStudies(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make([]PatientStudy, 0, len(sts))
	for _, st := range sts {
		out = append(out, PatientStudy{Study: st.Study, StudyDate: st.StudyDate, Modalities: st.Modalities, Series: st.Series, Instances: st.Instances})
	}
	return out, nil
}

// Scrub has the index rid its files of what deleted rows left there
// (store.Scrubber; rewrite: the whole index rewritten), for an erasure;
// without the capability, nothing.
func (ar *Archive) Scrub(ctx context.Context, rewrite bool) error {
	if s := ar.capabilities().Scrubber; s != nil {
		return s.Scrub(ctx, rewrite)
	}
	return nil
}
