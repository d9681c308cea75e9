package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/store"
)

// qrPatient, qrStudy and qrSeries describe the corpus TestQuery stores.
type qrPatient struct{ id, issuer, name, birth, sex string }

type qrStudy struct {
	uid, date, time, acc, desc, ref string
	patient                         int
}

type qrSeries struct {
	uid, modality, number, desc, date, body string
	study, instances                        int
	sopClass                                string
}

const (
	ctImage = "1.2.840.10008.5.1.4.1.1.2"
	mrImage = "1.2.840.10008.5.1.4.1.1.4"
	usImage = "1.2.840.10008.5.1.4.1.1.6.1"
	srDoc   = "1.2.840.10008.5.1.4.1.1.88.11"
)

var (
	qrPatients = []qrPatient{
		{"P1", "HOSP", "Doe^John", "19700101", "M"},
		{"P2", "HOSP", "DOE^Jane", "19800202", "F"},
		{"P3", "HOSP", "Doerr^Max", "", "M"},
		{"P4", "HOSP", "Dürer^Albrecht", "14710521", "M"},
		{"P5", "OTHER", "Bra[ck]et^Y?", "20000101", "O"},
		{"P1", "OTHER", "Smith^Ann", "19900303", "F"}, // same ID, another issuer
		{"P7", "HOSP", "山田^太郎=やまだ^たろう", "19650505", "M"},
	}
	qrStudies = []qrStudy{
		{"1.2.826.0.1.3680043.10.1432.7.1", "20200115", "083000", "A100", "CT Thorax", "Müller^Hans", 0},
		{"1.2.826.0.1.3680043.10.1432.7.2", "20201231", "235959", "A101", "MR Brain", "Who^Doctor", 0},
		{"1.2.826.0.1.3680043.10.1432.7.3", "20210101", "000000", "", "US Abdomen", "", 1},
		{"1.2.826.0.1.3680043.10.1432.7.4", "20190610", "120000.5", "A103", "CT Head", "müller^hans", 2},
		{"1.2.826.0.1.3680043.10.1432.7.5", "20220301", "1200", "A104", "Mixed", "Who^Doctor", 3},
		{"1.2.826.0.1.3680043.10.1432.7.6", "", "", "A105", "No date", "", 4},
		{"1.2.826.0.1.3680043.10.1432.7.7", "20200620", "101010", "A106", "CT Smith", "", 5},
		{"1.2.826.0.1.3680043.10.1432.7.8", "20230707", "070707", "A107", "MR 山田", "", 6},
	}
	qrSeriesList = []qrSeries{
		{"1.2.826.0.1.3680043.10.1432.8.1", "CT", "1", "Axial", "20200115", "CHEST", 0, 3, ctImage},
		{"1.2.826.0.1.3680043.10.1432.8.2", "CT", "2", "Coronal", "20200115", "CHEST", 0, 2, ctImage},
		{"1.2.826.0.1.3680043.10.1432.8.3", "MR", "1", "T1", "20201231", "HEAD", 1, 4, mrImage},
		{"1.2.826.0.1.3680043.10.1432.8.4", "US", "1", "", "20210101", "ABDOMEN", 2, 2, usImage},
		{"1.2.826.0.1.3680043.10.1432.8.5", "CT", "1", "Head", "20190610", "HEAD", 3, 3, ctImage},
		{"1.2.826.0.1.3680043.10.1432.8.6", "MR", "1", "Mixed MR", "20220301", "", 4, 1, mrImage},
		{"1.2.826.0.1.3680043.10.1432.8.7", "SR", "2", "Report", "20220301", "", 4, 1, srDoc},
		{"1.2.826.0.1.3680043.10.1432.8.8", "", "1", "No modality", "", "", 5, 1, ctImage},
		{"1.2.826.0.1.3680043.10.1432.8.9", "CT", "1", "Smith", "20200620", "CHEST", 6, 2, ctImage},
		{"1.2.826.0.1.3680043.10.1432.8.10", "MR", "1", "山田", "20230707", "HEAD", 7, 2, mrImage},
	}
)

// qrCorpus returns the instances TestQuery stores: every attribute
// derived from the tables above.
func qrCorpus() []*store.Instance {
	var out []*store.Instance
	for si, se := range qrSeriesList {
		st := qrStudies[se.study]
		p := qrPatients[st.patient]
		for n := range se.instances {
			// Instance numbers out of insertion order, and above 9, to
			// check numeric ordering.
			num := se.instances - n
			if si == 2 {
				num = []int{10, 2, 9, 1}[n]
			}
			out = append(out, &store.Instance{
				SOPInstanceUID:    fmt.Sprintf("%s.%d", strings.Replace(se.uid, ".8.", ".9.", 1), num),
				SOPClassUID:       se.sopClass,
				TransferSyntaxUID: "1.2.840.10008.1.2.1",
				InstanceNumber:    strconv.Itoa(num),
				ContentDate:       se.date,
				ContentTime:       "101010",
				NumberOfFrames:    "1",
				Rows:              512,
				Columns:           512,

				SeriesInstanceUID: se.uid,
				Modality:          se.modality,
				SeriesNumber:      se.number,
				SeriesDescription: se.desc,
				SeriesDate:        se.date,
				SeriesTime:        "101000",
				BodyPartExamined:  se.body,

				StudyInstanceUID:       st.uid,
				StudyDate:              st.date,
				StudyTime:              st.time,
				AccessionNumber:        st.acc,
				StudyID:                strconv.Itoa(se.study + 1),
				StudyDescription:       st.desc,
				ReferringPhysicianName: st.ref,

				PatientID:         p.id,
				IssuerOfPatientID: p.issuer,
				PatientName:       p.name,
				PatientBirthDate:  p.birth,
				PatientSex:        p.sex,

				SpecificCharacterSet: "ISO_IR 192",
				SourceAET:            "MOD",
				SourceAddr:           "192.0.2.1:104",
				BlobKey:              NewKey(),
				Size:                 1000,
			})
		}
	}
	return out
}

// uniqueOf names the entity an instance belongs to at a level.
func uniqueOf(in *store.Instance, l store.Level) string {
	switch l {
	case store.LevelPatient:
		return in.PatientID + "/" + in.IssuerOfPatientID
	case store.LevelStudy:
		return in.StudyInstanceUID
	case store.LevelSeries:
		return in.SeriesInstanceUID
	}
	return in.SOPInstanceUID
}

func matchUnique(m store.Match, l store.Level) string {
	switch l {
	case store.LevelPatient:
		return m["PatientID"] + "/" + m["IssuerOfPatientID"]
	case store.LevelStudy:
		return m["StudyInstanceUID"]
	case store.LevelSeries:
		return m["SeriesInstanceUID"]
	}
	return m["SOPInstanceUID"]
}

// TestQuery is the conformance suite of store.Querier. open returns a
// fresh, empty Index that implements it. Expectations are computed from the
// corpus with plain Go predicates, never from the backend's answers.
func TestQuery(t *testing.T, open func(t *testing.T) store.Index) {
	ctx := context.Background()
	ix := open(t)
	t.Cleanup(func() { ix.Close() })
	qr, ok := ix.(store.Querier)
	if !ok {
		t.Fatal("the index does not implement store.Querier")
	}
	corpus := qrCorpus()
	for _, in := range corpus {
		if _, err := ix.Put(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	upper := store.NormalizePN
	single := func(kw, v string) store.Key { return store.Key{Attribute: kw, Kind: store.MatchSingle, Value: v} }
	wild := func(kw, v string) store.Key { return store.Key{Attribute: kw, Kind: store.MatchWildcard, Value: v} }
	list := func(kw string, v ...string) store.Key {
		return store.Key{Attribute: kw, Kind: store.MatchList, Values: v}
	}
	rng := func(kw, lo, hi string) store.Key {
		return store.Key{Attribute: kw, Kind: store.MatchRange, Lo: lo, Hi: hi}
	}
	empty := func(kw string) store.Key { return store.Key{Attribute: kw, Kind: store.MatchEmpty} }
	modalities := func(studyUID string) []string {
		var ms []string
		for _, in := range corpus {
			if in.StudyInstanceUID == studyUID && in.Modality != "" && !slices.Contains(ms, in.Modality) {
				ms = append(ms, in.Modality)
			}
		}
		slices.Sort(ms)
		return ms
	}
	type pred func(in *store.Instance) bool
	cases := []struct {
		name  string
		q     store.Query
		match pred
	}{
		{"patient/universal", store.Query{Level: store.LevelPatient, PatientRoot: true}, func(*store.Instance) bool { return true }},
		{"study/universal", store.Query{Level: store.LevelStudy}, func(*store.Instance) bool { return true }},
		{"series/universal", store.Query{Level: store.LevelSeries}, func(*store.Instance) bool { return true }},
		{"image/universal", store.Query{Level: store.LevelImage}, func(*store.Instance) bool { return true }},
		{"patient/single PatientID", store.Query{Level: store.LevelPatient, PatientRoot: true, Keys: []store.Key{single("PatientID", "P1")}},
			func(in *store.Instance) bool { return in.PatientID == "P1" }},
		{"patient/PatientID and issuer", store.Query{Level: store.LevelPatient, PatientRoot: true, Keys: []store.Key{single("PatientID", "P1"), single("IssuerOfPatientID", "OTHER")}},
			func(in *store.Instance) bool { return in.PatientID == "P1" && in.IssuerOfPatientID == "OTHER" }},
		{"study/single PatientID (study root)", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("PatientID", "P1")}},
			func(in *store.Instance) bool { return in.PatientID == "P1" }},
		{"study/PN single case-insensitive", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("PatientName", "doe^jane")}},
			func(in *store.Instance) bool { return upper(in.PatientName) == "DOE^JANE" }},
		{"study/PN single case-sensitive", store.Query{Level: store.LevelStudy, PNCaseSensitive: true, Keys: []store.Key{single("PatientName", "doe^jane")}},
			func(in *store.Instance) bool { return in.PatientName == "doe^jane" }},
		{"study/PN prefix wildcard", store.Query{Level: store.LevelStudy, Keys: []store.Key{wild("PatientName", "doe*")}},
			func(in *store.Instance) bool { return strings.HasPrefix(upper(in.PatientName), "DOE") }},
		{"study/PN prefix wildcard case-sensitive", store.Query{Level: store.LevelStudy, PNCaseSensitive: true, Keys: []store.Key{wild("PatientName", "Doe*")}},
			func(in *store.Instance) bool { return strings.HasPrefix(in.PatientName, "Doe") }},
		{"study/PN ? wildcard", store.Query{Level: store.LevelStudy, Keys: []store.Key{wild("PatientName", "DOE^J?N*")}},
			func(in *store.Instance) bool {
				n := upper(in.PatientName)
				return strings.HasPrefix(n, "DOE^J") && len(n) >= 8 && n[6] == 'N'
			}},
		{"study/PN inner wildcard", store.Query{Level: store.LevelStudy, Keys: []store.Key{wild("PatientName", "*^J*")}},
			func(in *store.Instance) bool { return strings.Contains(upper(in.PatientName), "^J") }},
		{"study/PN literal brackets and ?", store.Query{Level: store.LevelStudy, Keys: []store.Key{wild("PatientName", "BRA[CK]*")}},
			func(in *store.Instance) bool { return strings.HasPrefix(upper(in.PatientName), "BRA[CK]") }},
		{"study/PN UTF-8 accented, case-insensitive", store.Query{Level: store.LevelStudy, Keys: []store.Key{wild("PatientName", "dürer*")}},
			func(in *store.Instance) bool { return strings.HasPrefix(upper(in.PatientName), "DÜRER") }},
		{"study/PN UTF-8 ideographic", store.Query{Level: store.LevelStudy, Keys: []store.Key{wild("PatientName", "山田*")}},
			func(in *store.Instance) bool { return strings.HasPrefix(in.PatientName, "山田") }},
		{"study/ReferringPhysicianName case-insensitive", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("ReferringPhysicianName", "MÜLLER^HANS")}},
			func(in *store.Instance) bool { return upper(in.ReferringPhysicianName) == "MÜLLER^HANS" }},
		{"study/StudyInstanceUID", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("StudyInstanceUID", qrStudies[1].uid)}},
			func(in *store.Instance) bool { return in.StudyInstanceUID == qrStudies[1].uid }},
		{"study/UID list", store.Query{Level: store.LevelStudy, Keys: []store.Key{list("StudyInstanceUID", qrStudies[1].uid, qrStudies[3].uid, "1.2.3.999")}},
			func(in *store.Instance) bool {
				return in.StudyInstanceUID == qrStudies[1].uid || in.StudyInstanceUID == qrStudies[3].uid
			}},
		{"study/AccessionNumber", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("AccessionNumber", "A103")}},
			func(in *store.Instance) bool { return in.AccessionNumber == "A103" }},
		{"study/AccessionNumber empty", store.Query{Level: store.LevelStudy, Keys: []store.Key{empty("AccessionNumber")}},
			func(in *store.Instance) bool { return in.AccessionNumber == "" }},
		{"study/StudyDate closed range", store.Query{Level: store.LevelStudy, Keys: []store.Key{rng("StudyDate", "20200101", "20201231")}},
			func(in *store.Instance) bool { return in.StudyDate >= "20200101" && in.StudyDate <= "20201231" }},
		{"study/StudyDate open high", store.Query{Level: store.LevelStudy, Keys: []store.Key{rng("StudyDate", "20210101", "")}},
			func(in *store.Instance) bool { return in.StudyDate >= "20210101" }},
		{"study/StudyDate open low", store.Query{Level: store.LevelStudy, Keys: []store.Key{rng("StudyDate", "", "20200115")}},
			func(in *store.Instance) bool { return in.StudyDate != "" && in.StudyDate <= "20200115" }},
		{"study/StudyDate single", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("StudyDate", "20201231")}},
			func(in *store.Instance) bool { return in.StudyDate == "20201231" }},
		{"study/StudyDate empty", store.Query{Level: store.LevelStudy, Keys: []store.Key{empty("StudyDate")}},
			func(in *store.Instance) bool { return in.StudyDate == "" }},
		{"study/StudyTime range, high bound of lower precision", store.Query{Level: store.LevelStudy, Keys: []store.Key{rng("StudyTime", "1200", "1200")}},
			func(in *store.Instance) bool { return strings.HasPrefix(in.StudyTime, "1200") }},
		{"study/StudyTime open low", store.Query{Level: store.LevelStudy, Keys: []store.Key{rng("StudyTime", "", "0830")}},
			func(in *store.Instance) bool { return in.StudyTime != "" && in.StudyTime[:4] <= "0830" }},
		{"study/date and time independent ranges", store.Query{Level: store.LevelStudy, Keys: []store.Key{rng("StudyDate", "20200101", "20211231"), rng("StudyTime", "0000", "1100")}},
			func(in *store.Instance) bool {
				return in.StudyDate >= "20200101" && in.StudyDate <= "20211231" && in.StudyTime != "" && in.StudyTime[:4] <= "1100"
			}},
		{"patient/PatientBirthDate empty", store.Query{Level: store.LevelPatient, PatientRoot: true, Keys: []store.Key{empty("PatientBirthDate")}},
			func(in *store.Instance) bool { return in.PatientBirthDate == "" }},
		{"patient/PatientBirthDate range", store.Query{Level: store.LevelPatient, PatientRoot: true, Keys: []store.Key{rng("PatientBirthDate", "19700101", "19851231")}},
			func(in *store.Instance) bool {
				return in.PatientBirthDate >= "19700101" && in.PatientBirthDate <= "19851231"
			}},
		{"study/ModalitiesInStudy", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("ModalitiesInStudy", "MR")}},
			func(in *store.Instance) bool { return slices.Contains(modalities(in.StudyInstanceUID), "MR") }},
		{"study/ModalitiesInStudy list", store.Query{Level: store.LevelStudy, Keys: []store.Key{list("ModalitiesInStudy", "US", "SR")}},
			func(in *store.Instance) bool {
				m := modalities(in.StudyInstanceUID)
				return slices.Contains(m, "US") || slices.Contains(m, "SR")
			}},
		{"study/ModalitiesInStudy and date", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("ModalitiesInStudy", "CT"), rng("StudyDate", "20200101", "")}},
			func(in *store.Instance) bool {
				return slices.Contains(modalities(in.StudyInstanceUID), "CT") && in.StudyDate >= "20200101"
			}},
		{"study/SOPClassesInStudy", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("SOPClassesInStudy", srDoc)}},
			func(in *store.Instance) bool {
				for _, x := range corpus {
					if x.StudyInstanceUID == in.StudyInstanceUID && x.SOPClassUID == srDoc {
						return true
					}
				}
				return false
			}},
		{"series/within a study", store.Query{Level: store.LevelSeries, Keys: []store.Key{single("StudyInstanceUID", qrStudies[0].uid)}},
			func(in *store.Instance) bool { return in.StudyInstanceUID == qrStudies[0].uid }},
		{"series/within a study, patient root", store.Query{Level: store.LevelSeries, PatientRoot: true, Keys: []store.Key{single("PatientID", "P3"), single("StudyInstanceUID", qrStudies[4].uid)}},
			func(in *store.Instance) bool { return in.PatientID == "P3" && in.StudyInstanceUID == qrStudies[4].uid }},
		{"series/Modality", store.Query{Level: store.LevelSeries, Keys: []store.Key{single("Modality", "CT")}},
			func(in *store.Instance) bool { return in.Modality == "CT" }},
		{"series/Modality empty", store.Query{Level: store.LevelSeries, Keys: []store.Key{empty("Modality")}},
			func(in *store.Instance) bool { return in.Modality == "" }},
		{"series/description wildcard (case-sensitive LO)", store.Query{Level: store.LevelSeries, Keys: []store.Key{wild("SeriesDescription", "*x*")}},
			func(in *store.Instance) bool { return strings.Contains(in.SeriesDescription, "x") }},
		{"series/UID list", store.Query{Level: store.LevelSeries, Keys: []store.Key{list("SeriesInstanceUID", qrSeriesList[2].uid, qrSeriesList[9].uid)}},
			func(in *store.Instance) bool {
				return in.SeriesInstanceUID == qrSeriesList[2].uid || in.SeriesInstanceUID == qrSeriesList[9].uid
			}},
		{"image/within a series", store.Query{Level: store.LevelImage, Keys: []store.Key{single("StudyInstanceUID", qrStudies[1].uid), single("SeriesInstanceUID", qrSeriesList[2].uid)}},
			func(in *store.Instance) bool { return in.SeriesInstanceUID == qrSeriesList[2].uid }},
		{"image/SOPClassUID", store.Query{Level: store.LevelImage, Keys: []store.Key{single("SOPClassUID", mrImage)}},
			func(in *store.Instance) bool { return in.SOPClassUID == mrImage }},
		{"image/InstanceNumber", store.Query{Level: store.LevelImage, Keys: []store.Key{single("InstanceNumber", "10")}},
			func(in *store.Instance) bool { return in.InstanceNumber == "10" }},
		{"image/ContentDate range", store.Query{Level: store.LevelImage, Keys: []store.Key{rng("ContentDate", "20220101", "20221231")}},
			func(in *store.Instance) bool { return in.ContentDate >= "20220101" && in.ContentDate <= "20221231" }},
		{"image/SOPInstanceUID list", store.Query{Level: store.LevelImage, Keys: []store.Key{list("SOPInstanceUID", corpus[0].SOPInstanceUID, corpus[5].SOPInstanceUID)}},
			func(in *store.Instance) bool {
				return in.SOPInstanceUID == corpus[0].SOPInstanceUID || in.SOPInstanceUID == corpus[5].SOPInstanceUID
			}},
		{"study/universal wildcard *", store.Query{Level: store.LevelStudy, Keys: []store.Key{wild("PatientName", "*")}},
			func(*store.Instance) bool { return true }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := map[string]bool{}
			wantInst := map[string]bool{}
			for _, in := range corpus {
				if c.match(in) {
					want[uniqueOf(in, c.q.Level)] = true
					wantInst[in.SOPInstanceUID] = true
				}
			}
			q := c.q
			got := map[string]bool{}
			err := qr.Query(ctx, &q, func(m store.Match) error {
				u := matchUnique(m, q.Level)
				if got[u] {
					t.Errorf("match %s returned twice", u)
				}
				got[u] = true
				checkMatch(t, corpus, q.Level, m)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !equalSets(got, want) {
				t.Errorf("Query matched %v, want %v", sortedKeys(got), sortedKeys(want))
			}
			// Instances under the matches, ordered by study, series,
			// instance number.
			gotInst := map[string]bool{}
			var order []*store.Instance
			err = qr.Instances(ctx, &q, func(in *store.Instance) error {
				gotInst[in.SOPInstanceUID] = true
				order = append(order, in)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !equalSets(gotInst, wantInst) {
				t.Errorf("Instances listed %v, want %v", sortedKeys(gotInst), sortedKeys(wantInst))
			}
			checkInstanceOrder(t, corpus, order)
		})
	}

	t.Run("limit", func(t *testing.T) {
		for _, l := range []store.Level{store.LevelPatient, store.LevelStudy, store.LevelSeries, store.LevelImage} {
			n := 0
			q := store.Query{Level: l, PatientRoot: true, Limit: 3}
			if err := qr.Query(ctx, &q, func(store.Match) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			if n != 3 {
				t.Errorf("%s: Limit 3 gave %d matches", l, n)
			}
		}
	})
	t.Run("offset", func(t *testing.T) {
		// Pages of Limit n at Offset 0, n, 2n... of an unchanged index list
		// every match once, in the order of the whole listing; an Offset
		// without a Limit skips; one past the end gives nothing.
		key := func(_ store.Level, m store.Match) string {
			return m["PatientID"] + "|" + m["StudyInstanceUID"] + "|" + m["SeriesInstanceUID"] + "|" + m["SOPInstanceUID"]
		}
		for _, l := range []store.Level{store.LevelPatient, store.LevelStudy, store.LevelSeries, store.LevelImage} {
			var all []string
			if err := qr.Query(ctx, &store.Query{Level: l, PatientRoot: true}, func(m store.Match) error {
				all = append(all, key(l, m))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(all) < 3 {
				t.Fatalf("%s: corpus too small (%d)", l, len(all))
			}
			for _, n := range []int{1, 2, 3} {
				var paged []string
				for off := 0; off <= len(all); off += n {
					got := 0
					if err := qr.Query(ctx, &store.Query{Level: l, PatientRoot: true, Limit: n, Offset: off}, func(m store.Match) error {
						paged = append(paged, key(l, m))
						got++
						return nil
					}); err != nil {
						t.Fatal(err)
					}
					if want := min(n, len(all)-off); got != want {
						t.Errorf("%s: Limit %d Offset %d gave %d matches, want %d", l, n, off, got, want)
					}
				}
				if !slices.Equal(paged, all) {
					t.Errorf("%s: pages of %d listed %v, want %v", l, n, paged, all)
				}
			}
			var rest []string
			if err := qr.Query(ctx, &store.Query{Level: l, PatientRoot: true, Offset: 2}, func(m store.Match) error {
				rest = append(rest, key(l, m))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rest, all[2:]) {
				t.Errorf("%s: Offset 2 without a Limit listed %v, want %v", l, rest, all[2:])
			}
			// Instances pages the same way.
			var inst, instPaged []string
			if err := qr.Instances(ctx, &store.Query{Level: l, PatientRoot: true}, func(in *store.Instance) error {
				inst = append(inst, in.SOPInstanceUID)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			for off := 0; off < len(inst); off += 2 {
				if err := qr.Instances(ctx, &store.Query{Level: l, PatientRoot: true, Limit: 2, Offset: off}, func(in *store.Instance) error {
					instPaged = append(instPaged, in.SOPInstanceUID)
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(inst, instPaged) {
				t.Errorf("%s: Instances in pages of 2 listed %v, want %v", l, instPaged, inst)
			}
		}
	})
	t.Run("fn error stops", func(t *testing.T) {
		stop := errors.New("stop")
		n := 0
		err := qr.Query(ctx, &store.Query{Level: store.LevelImage}, func(store.Match) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Errorf("got %v after %d matches, want stop after 1", err, n)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		err := qr.Query(cctx, &store.Query{Level: store.LevelImage}, func(store.Match) error { return nil })
		if err == nil {
			t.Error("Query with a cancelled context returned nil")
		}
	})
	t.Run("unsupported keys", func(t *testing.T) {
		for _, q := range []store.Query{
			{Level: store.LevelStudy, Keys: []store.Key{single("PatientMotherBirthName", "X")}},
			{Level: store.LevelStudy, Keys: []store.Key{rng("AccessionNumber", "A", "B")}},
			{Level: store.LevelStudy, Keys: []store.Key{single("SeriesInstanceUID", "1.2")}}, // below the level
			{Level: store.LevelPatient, PatientRoot: false},                                  // no PATIENT level in Study Root
			{Level: store.LevelStudy, Keys: []store.Key{wild("PatientName", "*\x00*")}},      // a NUL would cut the pattern
		} {
			err := qr.Query(ctx, &q, func(store.Match) error { return nil })
			if !errors.Is(err, store.ErrUnsupportedKey) {
				t.Errorf("%+v: got %v, want ErrUnsupportedKey", q, err)
			}
		}
	})
	t.Run("return keys", func(t *testing.T) {
		// Return lists what the caller wants; the level's required
		// attributes come whatever it says.
		q := store.Query{Level: store.LevelStudy, Return: []string{"StudyDate"},
			Keys: []store.Key{single("StudyInstanceUID", qrStudies[0].uid)}}
		n := 0
		err := qr.Query(ctx, &q, func(m store.Match) error {
			n++
			if m["StudyInstanceUID"] != qrStudies[0].uid || m["StudyDate"] != qrStudies[0].date {
				t.Errorf("match %v", m)
			}
			return nil
		})
		if err != nil || n != 1 {
			t.Fatalf("%d matches, %v", n, err)
		}
	})
}

// checkMatch compares the attributes of a match with the corpus.
func checkMatch(t *testing.T, corpus []*store.Instance, l store.Level, m store.Match) {
	t.Helper()
	var in []*store.Instance
	for _, x := range corpus {
		if uniqueOf(x, l) == matchUnique(m, l) {
			in = append(in, x)
		}
	}
	if len(in) == 0 {
		t.Errorf("match %q is not in the corpus", matchUnique(m, l))
		return
	}
	f := in[0]
	want := map[string]string{
		"PatientID": f.PatientID, "IssuerOfPatientID": f.IssuerOfPatientID, "PatientName": f.PatientName,
		"PatientBirthDate": f.PatientBirthDate, "PatientSex": f.PatientSex,
	}
	count := func(level store.Level, unique string, of store.Level) string {
		seen := map[string]bool{}
		for _, x := range corpus {
			if uniqueOf(x, level) == unique {
				seen[uniqueOf(x, of)] = true
			}
		}
		return strconv.Itoa(len(seen))
	}
	pu := uniqueOf(f, store.LevelPatient)
	want["NumberOfPatientRelatedStudies"] = count(store.LevelPatient, pu, store.LevelStudy)
	want["NumberOfPatientRelatedSeries"] = count(store.LevelPatient, pu, store.LevelSeries)
	want["NumberOfPatientRelatedInstances"] = count(store.LevelPatient, pu, store.LevelImage)
	if l >= store.LevelStudy {
		for k, v := range map[string]string{
			"StudyInstanceUID": f.StudyInstanceUID, "StudyDate": f.StudyDate, "StudyTime": f.StudyTime,
			"AccessionNumber": f.AccessionNumber, "StudyID": f.StudyID, "StudyDescription": f.StudyDescription,
			"ReferringPhysicianName":        f.ReferringPhysicianName,
			"NumberOfStudyRelatedSeries":    count(store.LevelStudy, f.StudyInstanceUID, store.LevelSeries),
			"NumberOfStudyRelatedInstances": count(store.LevelStudy, f.StudyInstanceUID, store.LevelImage),
		} {
			want[k] = v
		}
		var mods, classes []string
		for _, x := range corpus {
			if x.StudyInstanceUID != f.StudyInstanceUID {
				continue
			}
			if x.Modality != "" && !slices.Contains(mods, x.Modality) {
				mods = append(mods, x.Modality)
			}
			if !slices.Contains(classes, x.SOPClassUID) {
				classes = append(classes, x.SOPClassUID)
			}
		}
		slices.Sort(mods)
		slices.Sort(classes)
		want["ModalitiesInStudy"] = strings.Join(mods, `\`)
		want["SOPClassesInStudy"] = strings.Join(classes, `\`)
	}
	if l >= store.LevelSeries {
		for k, v := range map[string]string{
			"SeriesInstanceUID": f.SeriesInstanceUID, "Modality": f.Modality, "SeriesNumber": f.SeriesNumber,
			"SeriesDescription": f.SeriesDescription, "SeriesDate": f.SeriesDate, "BodyPartExamined": f.BodyPartExamined,
			"NumberOfSeriesRelatedInstances": count(store.LevelSeries, f.SeriesInstanceUID, store.LevelImage),
		} {
			want[k] = v
		}
	}
	if l == store.LevelImage {
		for k, v := range map[string]string{
			"SOPInstanceUID": f.SOPInstanceUID, "SOPClassUID": f.SOPClassUID, "InstanceNumber": f.InstanceNumber,
			"ContentDate": f.ContentDate, "Rows": strconv.Itoa(f.Rows), "Columns": strconv.Itoa(f.Columns),
		} {
			want[k] = v
		}
	}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s %s: %s = %q (present %v), want %q", l, matchUnique(m, l), k, got, ok, v)
		}
	}
}

// checkInstanceOrder checks that Instances grouped instances by study and
// series and ordered each series by instance number.
func checkInstanceOrder(t *testing.T, corpus []*store.Instance, order []*store.Instance) {
	t.Helper()
	doneStudy, doneSeries := map[string]bool{}, map[string]bool{}
	for i, in := range order {
		if i > 0 {
			prev := order[i-1]
			if prev.StudyInstanceUID != in.StudyInstanceUID {
				doneStudy[prev.StudyInstanceUID] = true
			}
			if prev.SeriesInstanceUID != in.SeriesInstanceUID {
				doneSeries[prev.SeriesInstanceUID] = true
			} else {
				a, _ := strconv.Atoi(prev.InstanceNumber)
				b, _ := strconv.Atoi(in.InstanceNumber)
				if a > b {
					t.Errorf("instance %s listed before %s", prev.InstanceNumber, in.InstanceNumber)
				}
			}
		}
		if doneStudy[in.StudyInstanceUID] || doneSeries[in.SeriesInstanceUID] {
			t.Errorf("instances of a study or series are not listed together")
		}
		for _, x := range corpus {
			if x.SOPInstanceUID == in.SOPInstanceUID && (x.BlobKey != in.BlobKey || x.TransferSyntaxUID != in.TransferSyntaxUID || x.SOPClassUID != in.SOPClassUID) {
				t.Errorf("instance %s: blob key, transfer syntax or SOP class differ", in.SOPInstanceUID)
			}
		}
	}
}

func equalSets(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]bool) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}
