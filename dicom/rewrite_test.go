package dicom

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestRewriteKeepsEverything: with no edits, Rewrite gives back the data
// set it read (lengths made undefined, group lengths dropped), for every
// transfer syntax of pydicom's files, encapsulated ones included.
func TestRewriteKeepsEverything(t *testing.T) {
	n := 0
	for _, path := range testFiles(t) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		meta, br, err := ReadFileHeader(bytes.NewReader(b), DefaultMetaLimit)
		if err != nil {
			continue
		}
		ts := LookupTransferSyntax(meta.TransferSyntaxUID)
		want, err := ReadDataSet(br, ts, 1<<30)
		if err != nil {
			continue
		}
		_, br, _ = ReadFileHeader(bytes.NewReader(b), DefaultMetaLimit)
		var out bytes.Buffer
		prepared := false
		err = Rewrite(&out, br, ts, &Rewriter{
			Lookahead: func(t Tag) bool { return t == SOPInstanceUID },
			Until:     0x00280000,
			Prepare:   func(a *Attrs) ([]*Element, error) { prepared = true; return nil, nil },
		})
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(path), err)
			continue
		}
		if !prepared {
			t.Errorf("%s: Prepare not called", filepath.Base(path))
		}
		got, err := ReadDataSet(&out, ts, 1<<30)
		if err != nil {
			t.Errorf("%s: output: %v", filepath.Base(path), err)
			continue
		}
		strip(want)
		strip(got)
		if !reflect.DeepEqual(want, got) {
			t.Errorf("%s: the rewritten data set differs", filepath.Base(path))
		}
		n++
	}
	if n < 30 {
		t.Errorf("only %d files rewritten", n)
	}
}

// strip forgets what Rewrite changes on purpose: group lengths and how
// lengths were encoded.
func strip(ds *DataSet) {
	var kept []*Element
	for _, e := range ds.Elements {
		if e.Tag.Element() == 0 {
			continue
		}
		e.Undefined = false
		for _, it := range e.Items {
			strip(it)
		}
		kept = append(kept, e)
	}
	ds.Elements = kept
}
