package storetest

import (
	"context"
	"fmt"
	"path"
	"reflect"
	"testing"

	"github.com/ward-pacs/ward/store"
)

// seqStudy is one study of the sequence corpus: its procedure codes
// (ProcedureCodeSequence items: value, scheme, meaning) and, per series,
// its request attributes (RequestAttributesSequence items: requested
// procedure ID, scheduled step ID).
type seqStudy struct {
	codes  [][3]string
	series [][][2]string
}

var seqStudies = []seqStudy{
	{codes: [][3]string{{"CT123", "LOCAL", "CT Thorax"}, {"CT124", "LOCAL", "CT Abdomen"}},
		series: [][][2]string{{{"RP1", "SPS1"}}, {{"RP1", "SPS2"}, {"RP2", "SPS3"}}}},
	{codes: [][3]string{{"CT123", "99OTHER", "CT Thorax other scheme"}},
		series: [][][2]string{{{"RP3", ""}}}},
	{codes: [][3]string{{"MR9", "LOCAL", "Kopf Übersicht"}},
		series: [][][2]string{{}}},
	{codes: nil, series: [][][2]string{{{"RP4", "SPS4"}}}},
	{codes: [][3]string{{"", "LOCAL", "no code value"}}, series: [][][2]string{{}}},
}

func seqUID(kind, study, series int) string {
	return fmt.Sprintf("1.2.826.0.1.3680043.10.1432.%d.%d.%d", 20+kind, study, series)
}

func seqCorpus() []*store.Instance {
	var out []*store.Instance
	for si, st := range seqStudies {
		for sei, items := range st.series {
			in := Sample(0, 0, 0)
			in.SOPInstanceUID, in.SeriesInstanceUID, in.StudyInstanceUID = seqUID(2, si, sei), seqUID(1, si, sei), seqUID(0, si, 0)
			in.PatientID, in.BlobKey = fmt.Sprintf("SEQ%d", si), NewKey()
			for i, c := range st.codes {
				in.Sequences = append(in.Sequences, store.SequenceItem{Attribute: "ProcedureCodeSequence", Level: store.LevelStudy, Item: i,
					Values: map[string]string{"CodeValue": c[0], "CodingSchemeDesignator": c[1], "CodeMeaning": c[2]}})
			}
			for i, r := range items {
				in.Sequences = append(in.Sequences, store.SequenceItem{Attribute: "RequestAttributesSequence", Level: store.LevelSeries, Item: i,
					Values: map[string]string{"RequestedProcedureID": r[0], "ScheduledProcedureStepID": r[1]}})
			}
			out = append(out, in)
		}
	}
	return out
}

// itemMatches is the reference of PS3.4 C.2.2.2.6 for the kinds used here.
func itemMatches(item map[string]string, keys []store.Key) bool {
	for _, k := range keys {
		v := item[k.Attribute]
		switch k.Kind {
		case store.MatchSingle:
			if v != k.Value {
				return false
			}
		case store.MatchWildcard:
			if ok, _ := path.Match(k.Value, v); !ok {
				return false
			}
		case store.MatchList:
			found := false
			for _, x := range k.Values {
				found = found || x == v
			}
			if !found {
				return false
			}
		case store.MatchEmpty:
			if v != "" {
				return false
			}
		}
	}
	return true
}

// TestQuerySequences is the conformance suite of sequence matching for a
// Querier that is a store.SequenceIndexer: open returns a fresh, empty
// Index. Expectations come from the corpus with itemMatches.
func TestQuerySequences(t *testing.T, open func(t *testing.T) store.Index) {
	ctx := context.Background()
	ix := open(t)
	t.Cleanup(func() { ix.Close() })
	qr := ix.(store.Querier)
	if si, ok := ix.(store.SequenceIndexer); !ok || !si.IndexesSequences() {
		t.Skip("the index does not keep sequences")
	}
	corpus := seqCorpus()
	for _, in := range corpus {
		if _, err := ix.Put(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	specs := store.DefaultSequences()
	pcs := func(items ...store.Key) store.Key {
		return store.Key{Attribute: "ProcedureCodeSequence", Kind: store.MatchSequence, Level: store.LevelStudy, Items: items}
	}
	ras := func(items ...store.Key) store.Key {
		return store.Key{Attribute: "RequestAttributesSequence", Kind: store.MatchSequence, Level: store.LevelSeries, Items: items}
	}
	single := func(kw, v string) store.Key { return store.Key{Attribute: kw, Kind: store.MatchSingle, Value: v} }
	wild := func(kw, v string) store.Key { return store.Key{Attribute: kw, Kind: store.MatchWildcard, Value: v} }
	list := func(kw string, v ...string) store.Key {
		return store.Key{Attribute: kw, Kind: store.MatchList, Values: v}
	}
	empty := func(kw string) store.Key { return store.Key{Attribute: kw, Kind: store.MatchEmpty} }
	items := func(in *store.Instance, attr string) []map[string]string {
		var out []map[string]string
		for _, it := range in.Sequences {
			if it.Attribute == attr {
				out = append(out, it.Values)
			}
		}
		return out
	}
	for _, c := range []struct {
		name string
		q    store.Query
	}{
		{"study/code value", store.Query{Level: store.LevelStudy, Keys: []store.Key{pcs(single("CodeValue", "CT123"))}}},
		{"study/code value and scheme in one item", store.Query{Level: store.LevelStudy, Keys: []store.Key{pcs(single("CodeValue", "CT123"), single("CodingSchemeDesignator", "LOCAL"))}}},
		{"study/value of one item, scheme of another", store.Query{Level: store.LevelStudy, Keys: []store.Key{pcs(single("CodeValue", "CT124"), single("CodingSchemeDesignator", "99OTHER"))}}},
		{"study/wildcard", store.Query{Level: store.LevelStudy, Keys: []store.Key{pcs(wild("CodeValue", "CT*"))}}},
		{"study/wildcard ? in meaning", store.Query{Level: store.LevelStudy, Keys: []store.Key{pcs(wild("CodeMeaning", "Kopf ?bersicht"))}}},
		{"study/list", store.Query{Level: store.LevelStudy, Keys: []store.Key{pcs(list("CodeValue", "CT124", "MR9"))}}},
		{"study/empty value in an item", store.Query{Level: store.LevelStudy, Keys: []store.Key{pcs(empty("CodeValue"))}}},
		{"study/empty and single", store.Query{Level: store.LevelStudy, Keys: []store.Key{pcs(empty("CodeValue"), single("CodingSchemeDesignator", "LOCAL"))}}},
		{"study/universal item keys", store.Query{Level: store.LevelStudy, Keys: []store.Key{pcs(wild("CodeValue", "*"))}}},
		{"study/with a top-level key", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("PatientID", "SEQ1"), pcs(single("CodeValue", "CT123"))}}},
		{"series/request attributes", store.Query{Level: store.LevelSeries, Keys: []store.Key{ras(single("RequestedProcedureID", "RP1"))}}},
		{"series/request attributes in one item", store.Query{Level: store.LevelSeries, Keys: []store.Key{ras(single("RequestedProcedureID", "RP1"), single("ScheduledProcedureStepID", "SPS3"))}}},
		{"series/study-level sequence", store.Query{Level: store.LevelSeries, Keys: []store.Key{pcs(single("CodeValue", "MR9"))}}},
		{"image/study and series sequences", store.Query{Level: store.LevelImage, Keys: []store.Key{pcs(wild("CodeValue", "CT*")), ras(empty("ScheduledProcedureStepID"))}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := map[string]bool{}
			for _, in := range corpus {
				ok := true
				for _, k := range c.q.Keys {
					if k.Kind != store.MatchSequence {
						ok = ok && itemMatches(map[string]string{k.Attribute: in.PatientID}, []store.Key{k})
						continue
					}
					any := false
					universal := true
					for _, ik := range k.Items {
						universal = universal && ik.Kind == store.MatchWildcard && ik.Value == "*"
					}
					for _, it := range items(in, k.Attribute) {
						any = any || itemMatches(it, k.Items)
					}
					ok = ok && (any || universal)
				}
				if ok {
					want[uniqueOf(in, c.q.Level)] = true
				}
			}
			q := c.q
			q.ReturnSequences = specs
			got := map[string]bool{}
			err := qr.Query(ctx, &q, func(m store.Match) error {
				u := matchUnique(m, q.Level)
				got[u] = true
				// Returned items: those stored, in order.
				for _, in := range corpus {
					if uniqueOf(in, q.Level) != u {
						continue
					}
					for _, attr := range []string{"ProcedureCodeSequence", "RequestAttributesSequence"} {
						if attr == "RequestAttributesSequence" && q.Level < store.LevelSeries {
							if _, ok := m[attr]; ok {
								t.Errorf("%s returned at the %s level", attr, q.Level)
							}
							continue
						}
						gotItems, err := store.DecodeItems(m[attr])
						if err != nil {
							t.Fatal(err)
						}
						if w := items(in, attr); !reflect.DeepEqual(gotItems, w) && len(gotItems)+len(w) > 0 {
							t.Errorf("%s %s: %s = %v, want %v", q.Level, u, attr, gotItems, w)
						}
					}
					break
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !equalSets(got, want) {
				t.Errorf("Query matched %v, want %v", sortedKeys(got), sortedKeys(want))
			}
		})
	}
	t.Run("newest instance wins", func(t *testing.T) {
		in := seqCorpus()[0]
		in.SOPInstanceUID += ".99"
		in.BlobKey = NewKey()
		in.Sequences = []store.SequenceItem{{Attribute: "ProcedureCodeSequence", Level: store.LevelStudy,
			Values: map[string]string{"CodeValue": "NEW1", "CodingSchemeDesignator": "LOCAL", "CodeMeaning": ""}}}
		if _, err := ix.Put(ctx, in); err != nil {
			t.Fatal(err)
		}
		count := func(v string) int {
			n := 0
			q := store.Query{Level: store.LevelStudy, Keys: []store.Key{pcs(single("CodeValue", v))}}
			if err := qr.Query(ctx, &q, func(store.Match) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if count("NEW1") != 1 || count("CT124") != 0 {
			t.Errorf("after a newer instance: NEW1 matches %d studies, CT124 %d; want 1 and 0", count("NEW1"), count("CT124"))
		}
		// Deleting the study's instances removes its sequence rows.
		for _, x := range append(seqCorpus()[:2], in) {
			if err := ix.Delete(ctx, x.SOPInstanceUID); err != nil {
				t.Fatal(err)
			}
		}
		if count("NEW1") != 0 {
			t.Error("a deleted study still matches")
		}
	})
	t.Run("unsupported", func(t *testing.T) {
		q := store.Query{Level: store.LevelStudy, Keys: []store.Key{ras(single("RequestedProcedureID", "RP1"))}}
		if err := qr.Query(ctx, &q, func(store.Match) error { return nil }); err == nil {
			t.Error("a series-level sequence key at the STUDY level was accepted")
		}
	})
}
