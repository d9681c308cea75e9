package archive_test

import (
	"testing"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
)

var (
	tagProcedureCodeSequence  = mustTag("ProcedureCodeSequence")
	tagCodeValue              = mustTag("CodeValue")
	tagCodingSchemeDesignator = mustTag("CodingSchemeDesignator")
	tagCodeMeaning            = mustTag("CodeMeaning")
)

func mustTag(kw string) dicom.Tag {
	t, ok := dicom.TagByKeyword(kw)
	if !ok {
		panic(kw)
	}
	return t
}

// codeSeq builds a ProcedureCodeSequence (value, scheme, meaning per item;
// "" leaves the attribute out), encoded in charset.
func codeSeq(charset []string, codes ...[3]string) *dicom.Element {
	e := &dicom.Element{Tag: tagProcedureCodeSequence, VR: "SQ"}
	for _, c := range codes {
		it := &dicom.DataSet{}
		for i, t := range []dicom.Tag{tagCodeValue, tagCodingSchemeDesignator, tagCodeMeaning} {
			if c[i] != "" {
				it.SetIn(charset, t, c[i])
			}
		}
		e.Items = append(e.Items, it)
	}
	return e
}

// TestFindSequenceMatching stores objects with Procedure Code Sequences
// through C-STORE and matches them with sequence keys (PS3.4 C.2.2.2.6).
func TestFindSequenceMatching(t *testing.T) {
	f := newFixture(t, "")
	utf8 := []string{"ISO_IR 192"}
	codes := map[string][][3]string{
		studyA: {{"CT123", "LOCAL", "CT Thorax"}, {"CT124", "LOCAL", "CT Abdomen"}},
		studyB: {{"CT123", "99OTHER", "Kopf Übersicht"}},
		studyC: nil,
	}
	for _, o := range qrObjects {
		obj := o.object(t)
		if c := codes[o.study]; c != nil {
			obj.ds.Put(codeSeq(utf8, c...))
		}
		if err := f.store(obj, obj.bytes(t)); err != nil {
			t.Fatal(err)
		}
	}
	// seqKey is a STUDY query with a ProcedureCodeSequence key whose item
	// holds the given item attributes (keyword=value; "" a return key).
	seqKey := func(charset string, item ...[2]string) *dicom.DataSet {
		ds := ident(t, "QueryRetrieveLevel", "STUDY", "StudyInstanceUID", "")
		var cs []string
		if charset != "" {
			ds.Set(dicom.SpecificCharacterSet, charset)
			cs = []string{charset}
		}
		e := &dicom.Element{Tag: tagProcedureCodeSequence, VR: "SQ"}
		if item != nil {
			it := &dicom.DataSet{}
			for _, kv := range item {
				tag := mustTag(kv[0])
				if kv[1] == "" {
					it.Put(&dicom.Element{Tag: tag, VR: dicom.VROf(tag)})
				} else {
					it.SetIn(cs, tag, kv[1])
				}
			}
			e.Items = []*dicom.DataSet{it}
		}
		ds.Put(e)
		return ds
	}
	for _, c := range []struct {
		name    string
		id      *dicom.DataSet
		studies []string
		warn    bool
	}{
		{"single", seqKey("", [2]string{"CodeValue", "CT123"}), []string{studyA, studyB}, false},
		{"single and scheme in one item", seqKey("", [2]string{"CodeValue", "CT123"}, [2]string{"CodingSchemeDesignator", "LOCAL"}), []string{studyA}, false},
		{"not across items", seqKey("", [2]string{"CodeValue", "CT124"}, [2]string{"CodingSchemeDesignator", "99OTHER"}), nil, false},
		{"wildcard", seqKey("", [2]string{"CodeValue", "CT12?"}, [2]string{"CodeMeaning", ""}), []string{studyA, studyB}, false},
		{"scheme only", seqKey("", [2]string{"CodingSchemeDesignator", "99OTHER"}), []string{studyB}, false},
		{"Latin-1 request", seqKey("ISO_IR 100", [2]string{"CodeMeaning", "Kopf Ü*"}), []string{studyB}, false},
		{"return key (empty item)", seqKey("", [2]string{"CodeValue", ""}), []string{studyA, studyB, studyC}, false},
		{"return key (zero length)", seqKey(""), []string{studyA, studyB, studyC}, false},
		{"item attribute not kept: ignored", seqKey("", [2]string{"CodeValue", "CT123"}, [2]string{"ContextUID", "1.2.3"}), []string{studyA, studyB}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ms, r, err := find(t, f, dimse.StudyRootFind, c.id)
			if err != nil {
				t.Fatal(err)
			}
			if r.PendingWarning != c.warn {
				t.Errorf("PendingWarning = %v, want %v", r.PendingWarning, c.warn)
			}
			got := map[string]bool{}
			for _, m := range ms {
				uid := m.String(dicom.StudyInstanceUID)
				got[uid] = true
				e := m.Get(tagProcedureCodeSequence)
				if e == nil {
					t.Errorf("%s: no ProcedureCodeSequence in the response", uid)
					continue
				}
				want := codes[uid]
				if len(e.Items) != len(want) {
					t.Errorf("%s: %d items returned, want %d", uid, len(e.Items), len(want))
					continue
				}
				reqItem := c.id.Get(tagProcedureCodeSequence).Items
				for i, it := range e.Items {
					cs := splitCS(m.String(dicom.SpecificCharacterSet))
					for j, tag := range []dicom.Tag{tagCodeValue, tagCodingSchemeDesignator, tagCodeMeaning} {
						requested := len(reqItem) == 0 || len(reqItem[0].Elements) == 0 || reqItem[0].Get(tag) != nil
						if !requested {
							if it.Get(tag) != nil {
								t.Errorf("%s item %d: %s returned, not requested", uid, i, dicom.Keyword(tag))
							}
							continue
						}
						if v := it.StringIn(cs, tag); v != want[i][j] {
							t.Errorf("%s item %d: %s = %q, want %q", uid, i, dicom.Keyword(tag), v, want[i][j])
						}
					}
				}
			}
			if len(got) != len(c.studies) {
				t.Errorf("matched %v, want %v", got, c.studies)
			}
			for _, s := range c.studies {
				if !got[s] {
					t.Errorf("matched %v, want %v", got, c.studies)
				}
			}
		})
	}
	t.Run("two items refused", func(t *testing.T) {
		id := seqKey("", [2]string{"CodeValue", "CT123"})
		e := id.Get(tagProcedureCodeSequence)
		e.Items = append(e.Items, e.Items[0])
		_, _, err := find(t, f, dimse.StudyRootFind, id)
		wantStatus(t, err, dimse.StatusDataSetMismatch, "one")
	})
	t.Run("series-level sequence at STUDY level refused", func(t *testing.T) {
		id := ident(t, "QueryRetrieveLevel", "STUDY")
		it := &dicom.DataSet{}
		it.Set(mustTag("RequestedProcedureID"), "RP1")
		id.Put(&dicom.Element{Tag: mustTag("RequestAttributesSequence"), VR: "SQ", Items: []*dicom.DataSet{it}})
		_, _, err := find(t, f, dimse.StudyRootFind, id)
		wantStatus(t, err, dimse.StatusDataSetMismatch, "relational")
	})
}

func splitCS(v string) []string {
	if v == "" {
		return nil
	}
	return []string{v}
}
