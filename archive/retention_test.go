package archive_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/store"
)

func TestParseAge(t *testing.T) {
	now := time.Date(2026, 3, 31, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"10y", time.Date(2016, 3, 31, 12, 0, 0, 0, time.UTC)},
		{"1m", time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC)}, // Feb 31 normalises
		{"2w", time.Date(2026, 3, 17, 12, 0, 0, 0, time.UTC)},
		{"90d", time.Date(2025, 12, 31, 12, 0, 0, 0, time.UTC)},
	} {
		a, err := archive.ParseAge(tc.in)
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if got := a.Cutoff(now); !got.Equal(tc.want) {
			t.Errorf("%s: cutoff %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"", "10", "y", "0d", "-1y", "1.5y", "10h", "201y", "ten years", "99999999d"} {
		if _, err := archive.ParseAge(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// TestRetentionPlan: which studies the rules make due, by study date and
// by receipt, per modality (every series) and source (every instance);
// the longest applying period wins; a study without a date is never due
// by date; nothing is deleted by planning.
func TestRetentionPlan(t *testing.T) {
	f := newFixture(t, archive.DuplicateReplace)
	ctx := context.Background()
	now := time.Now().UTC()
	old := now.AddDate(-3, 0, 0)
	n := 0
	put := func(study, date, modality, source string, received time.Time) {
		n++
		uid := study + ".9." + strings.Repeat("1", n)
		in := &store.Instance{SOPInstanceUID: uid, SOPClassUID: "1.2.840.10008.5.1.4.1.1.7", TransferSyntaxUID: "1.2.840.10008.1.2.1",
			SeriesInstanceUID: study + "." + modality, Modality: modality, StudyInstanceUID: study, StudyDate: date,
			PatientID: "P" + study, PatientName: "NAME^" + study, SourceAET: source, ReceivedAt: received, BlobKey: "k" + uid, Size: 1}
		if _, err := f.ar.Index.Put(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	put("1.1", "20100101", "CT", "CT1", now)             // old CT, from CT1, received now
	put("1.2", "20100101", "CT", "CT1", now)             //
	put("1.2", "20100101", "SR", "CT1", now)             // CT + SR: not every series is CT
	put("1.3", "", "CT", "CT1", now)                     // no study date
	put("1.4", now.Format("20060102"), "MR", "MR1", old) // recent date, received 3 years ago
	put("1.5", now.Format("20060102"), "MR", "MR1", old)
	put("1.5", now.Format("20060102"), "MR", "MR2", old) // one instance from another source
	put("1.6", "19990101", "MG", "MG1", now)             // MG kept 30 years
	rules := []archive.RetentionRule{
		{Name: "ct-5y", OlderThan: archive.Age{Years: 5}, Modalities: []string{"CT"}},
		{Name: "mr1-2y-received", OlderThan: archive.Age{Years: 2}, ByReceived: true, Sources: []string{"MR1"}},
		{Name: "all-5y", OlderThan: archive.Age{Years: 5}},
		{Name: "mg-30y", OlderThan: archive.Age{Years: 30}, Modalities: []string{"MG"}},
	}
	plan := func(now time.Time) []string {
		cands, total, err := f.ar.RetentionPlan(ctx, rules, now)
		if err != nil {
			t.Fatal(err)
		}
		if total != 6 {
			t.Fatalf("%d studies, want 6", total)
		}
		var got []string
		for _, c := range cands {
			got = append(got, c.Study+":"+c.Rule)
		}
		return got
	}
	// 1.1: CT and all-5y apply, both passed (the first of equal cutoffs
	// decides). 1.2: all-5y only (CT+SR), passed. 1.3: no date. 1.4:
	// received 3 years ago from MR1, but all-5y by date holds it. 1.5:
	// not every instance from MR1. 1.6: MG, 30 years.
	if got, want := plan(now), []string{"1.1:ct-5y", "1.2:all-5y"}; !slices.Equal(got, want) {
		t.Fatalf("plan %v, want %v", got, want)
	}
	// Six years on: 1.4 (by date and receipt), 1.5 (by date) and 1.6
	// (33 years old; mg-30y decides, the longest) too, oldest first.
	if got, want := plan(now.AddDate(6, 0, 0)), []string{"1.6:mg-30y", "1.1:ct-5y", "1.2:all-5y", "1.4:all-5y", "1.5:all-5y"}; !slices.Equal(got, want) {
		t.Fatalf("plan %v, want %v", got, want)
	}
	// Planning deletes nothing.
	if c, err := f.ar.Index.CountInstances(ctx); err != nil || c != int64(n) {
		t.Fatalf("%d instances after planning, want %d (%v)", c, n, err)
	}
	// Judged again before its deletion: a study that changed since the
	// plan (here its date, by a newer object) is no longer due.
	if c, ok, err := f.ar.StillDue(ctx, rules, "1.1", now); err != nil || !ok || c.Rule != "ct-5y" {
		t.Fatalf("1.1 still due: %+v %v %v", c, ok, err)
	}
	put("1.1", now.Format("20060102"), "CT", "CT1", now)
	if _, ok, err := f.ar.StillDue(ctx, rules, "1.1", now); err != nil || ok {
		t.Fatalf("1.1, changed, still due: %v %v", ok, err)
	}
	if _, ok, err := f.ar.StillDue(ctx, rules, "9.9", now); err != nil || ok {
		t.Fatalf("a study not stored, due: %v %v", ok, err)
	}

	// The patient's studies, without names.
	sts, err := f.ar.PatientStudies(ctx, "P1.5", nil)
	if err != nil || len(sts) != 1 || sts[0].Study != "1.5" || sts[0].Instances != 2 {
		t.Fatalf("patient studies %+v %v", sts, err)
	}
	empty := ""
	if sts, err := f.ar.PatientStudies(ctx, "P1.5", &empty); err != nil || len(sts) != 1 {
		t.Fatalf("patient studies without an issuer %+v %v", sts, err)
	}
	other := "OTHER"
	if sts, err := f.ar.PatientStudies(ctx, "P1.5", &other); err != nil || len(sts) != 0 {
		t.Fatalf("patient studies of another issuer %+v %v", sts, err)
	}
}
