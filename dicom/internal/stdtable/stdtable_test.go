package stdtable

import (
	"reflect"
	"strings"
	"testing"
)

// docbook is a fragment in the layout of the standard's DocBook: the
// edition in the subtitle, the table's id as xml:id, a zero-width space in
// a keyword, a nested table that is not a row of the outer one.
const docbook = `<?xml version="1.0" encoding="utf-8"?>
<book xmlns="http://docbook.org/ns/docbook" xmlns:xml="http://www.w3.org/XML/1998/namespace">
<subtitle>DICOM PS3.6 2099z - Data Dictionary</subtitle>
<table xml:id="table_7-1"><thead><tr><th><para>Tag</para></th><th><para>Keyword</para></th><th><para>VR</para></th></tr></thead>
<tbody>
<tr><td><para>(0002,0000)</para></td><td><para>File&#x200B;Meta&#x200B;Information&#x200B;Group&#x200B;Length</para></td><td><para>UL</para></td></tr>
<tr><td><para>(0002,0001)</para></td><td><para>FileMetaInformationVersion</para><table><tr><td>nested</td></tr></table></td><td><para>OB</para></td></tr>
</tbody></table>
<table xml:id="table_7-2"><tr><td><para>other</para></td></tr></table>
</book>`

// chtml is the same table as NEMA's chunked XHTML renders it: the id on an
// empty anchor before the table, the edition in the page header, entities.
const chtml = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>7 Registry</title></head><body>
<table class="navheader"><tr><th>DICOM PS3.6 2099z - Data Dictionary</th></tr></table>
<div class="table"><a id="table_7-1" shape="rect"></a><p class="title"><strong>Table 7-1.</strong></p>
<div class="table-contents"><table frame="box"><thead><tr><th><p><a id="para_1" shape="rect"></a>Tag</p></th><th><p>Keyword</p></th><th><p>VR</p></th></tr></thead>
<tbody>
<tr><td><p><a id="para_2" shape="rect"></a>(0002,0000)</p></td><td><p>File&#8203;Meta&#8203;Information&#8203;Group&#8203;Length</p></td><td><p>UL</p></td></tr>
<tr><td><p>(0002,0001)</p></td><td><p>FileMetaInformationVersion</p><table><tr><td>nested</td></tr></table></td><td><p>OB&nbsp;</p></td></tr>
</tbody></table></div></div>
</body></html>`

func TestReadBothRenderings(t *testing.T) {
	want := [][]string{
		{"Tag", "Keyword", "VR"},
		{"(0002,0000)", "FileMetaInformationGroupLength", "UL"},
		{"(0002,0001)", "FileMetaInformationVersion", "OB"},
	}
	for name, src := range map[string]string{"docbook": docbook, "chtml": chtml} {
		doc, err := Read(strings.NewReader(src), "table_7-1", "table_6-1")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if doc.Part != 6 || doc.Edition != "2099z" {
			t.Errorf("%s: PS3.%d %s", name, doc.Part, doc.Edition)
		}
		if got := doc.Tables["table_7-1"]; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: rows %q", name, got)
		}
		if _, ok := doc.Tables["table_6-1"]; ok {
			t.Errorf("%s: a table not in the text is present", name)
		}
		if _, ok := doc.Tables["table_7-2"]; ok {
			t.Errorf("%s: a table not asked for is present", name)
		}
		if Column(want[0], "keyword") != 1 || Column(want[0], "VM") != -1 {
			t.Error("Column")
		}
	}
	if _, err := Read(strings.NewReader(`<book><table xml:id="table_7-1"/></book>`), "table_7-1"); err == nil {
		t.Error("a text naming no edition is accepted")
	}
}
