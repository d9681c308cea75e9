package archive

import (
	"fmt"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store"
)

// seqIndex is Archive.Sequences resolved to tags: what C-STORE keeps
// (dicom.ScanWith) and what C-FIND matches and returns.
type seqIndex struct {
	specs  []store.SequenceSpec
	byTag  map[dicom.Tag]*seqSpec
	byName map[string]*seqSpec
	keep   *dicom.KeepSequences
}

type seqSpec struct {
	store.SequenceSpec
	tag   dicom.Tag
	items []dicom.Tag // ascending as in Items
	want  map[dicom.Tag]string
}

// sequenceIndex resolves Archive.Sequences; nil when the index keeps no
// sequences or none are configured.
func (ar *Archive) sequenceIndex() (*seqIndex, error) {
	// Caps holds a SequenceIndexer only when it indexes sequences.
	if ar.capabilities().SequenceIndexer == nil {
		return nil, nil
	}
	specs := ar.Sequences
	if specs == nil {
		specs = store.DefaultSequences()
	}
	if len(specs) == 0 {
		return nil, nil
	}
	x := &seqIndex{specs: specs, byTag: map[dicom.Tag]*seqSpec{}, byName: map[string]*seqSpec{}}
	for _, sp := range specs {
		t, ok := dicom.TagByKeyword(sp.Attribute)
		if !ok || dicom.VROf(t) != "SQ" {
			return nil, fmt.Errorf("archive: indexed sequence %q is not a sequence keyword", sp.Attribute)
		}
		if sp.Level < store.LevelPatient || sp.Level > store.LevelSeries {
			return nil, fmt.Errorf("archive: indexed sequence %s: level %s; sequences are kept at PATIENT, STUDY or SERIES level", sp.Attribute, sp.Level)
		}
		s := &seqSpec{SequenceSpec: sp, tag: t, want: map[dicom.Tag]string{}}
		for _, kw := range sp.Items {
			it, ok := dicom.TagByKeyword(kw)
			if !ok || dicom.VROf(it) == "SQ" {
				return nil, fmt.Errorf("archive: indexed sequence %s: item attribute %q is not a non-sequence keyword", sp.Attribute, kw)
			}
			s.items = append(s.items, it)
			s.want[it] = kw
		}
		x.byTag[t], x.byName[sp.Attribute] = s, s
	}
	x.keep = &dicom.KeepSequences{Item: func(t dicom.Tag) func(dicom.Tag) bool {
		s := x.byTag[t]
		if s == nil {
			return nil
		}
		return func(it dicom.Tag) bool { _, ok := s.want[it]; return ok }
	}}
	return x, nil
}

// items returns the kept items of a, every item attribute of the spec
// present ("" when the item lacks it), so that empty-value matching sees
// absent attributes as empty.
func (x *seqIndex) items(a *dicom.Attrs) []store.SequenceItem {
	if x == nil {
		return nil
	}
	var out []store.SequenceItem
	for _, s := range x.byTag {
		for i, it := range a.Items(s.tag) {
			v := make(map[string]string, len(s.items))
			for _, t := range s.items {
				v[s.want[t]] = it[t]
			}
			out = append(out, store.SequenceItem{Attribute: s.Attribute, Level: s.Level, Item: i, Values: v})
		}
	}
	return out
}

// spec returns the indexed sequence t, or nil.
func (x *seqIndex) spec(t dicom.Tag) *seqSpec {
	if x == nil {
		return nil
	}
	return x.byTag[t]
}
