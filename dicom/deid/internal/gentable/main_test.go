package main

import (
	"strings"
	"testing"
)

// book is a DocBook fragment in the layout of part15.xml: the edition in
// the subtitle, Table E.1-1 with a heading row, rows with zero-width spaces
// in names, a commented-out draft row, a nested table to skip.
const book = `<?xml version="1.0" encoding="utf-8"?>
<book xmlns="http://docbook.org/ns/docbook" xmlns:xml="http://www.w3.org/XML/1998/namespace">
<subtitle>DICOM PS3.15 2099z - Security and System Management Profiles</subtitle>
<table xml:id="table_E.1-1"><thead><tr>
<th><para><emphasis role="bold">Attribute Name</emphasis></para></th>
<th><para><emphasis role="bold">Tag</emphasis></para></th>
<th><para><emphasis role="bold">Retd. (from <olink targetdoc="PS3.6"/>)</emphasis></para></th>
<th><para>Basic Prof.</para></th><th><para>Rtn. Safe Priv. Opt.</para></th><th><para>Rtn. UIDs Opt.</para></th>
<th><para>Rtn. Dev. Id. Opt.</para></th><th><para>Rtn. Inst. Id. Opt.</para></th><th><para>Rtn. Pat. Chars. Opt.</para></th>
<th><para>Rtn. Long. Full Dates Opt.</para></th><th><para>Rtn. Long. Modif. Dates Opt.</para></th><th><para>Clean Desc. Opt.</para></th>
<th><para>Clean Struct. Cont. Opt.</para></th><th><para>Clean Graph. Opt.</para></th></tr></thead>
<tbody>
<tr><td><para>GPS Dest&#x200B; Latitude</para></td><td><para>(0016,0084)</para></td><td/><td><para>X</para></td><td/><td/><td/><td/><td/><td/><td/><td/><td/><td/></tr>
<!-- <tr><td><para>Draft</para></td><td><para>(0011,0001)</para></td><td/><td><para>X</para></td><td/><td/><td/><td/><td/><td/><td/><td/><td/><td/></tr> -->
<tr><td><para>Referenced Image Sequence</para></td><td><para>(0008,1140)</para></td><td/><td><para>X/Z/U*</para></td><td/><td><para>K</para></td><td/><td/><td/><td/><td/><td/><td/><td/></tr>
<tr><td><para>Private Attributes</para></td><td><para>(gggg,eeee) where gggg is odd</para></td><td/><td><para>X</para></td><td><para>C</para></td><td/><td/><td/><td/><td/><td/><td/><td/><td/></tr>
</tbody></table>
</book>`

func TestParse(t *testing.T) {
	edition, tables, err := parse(strings.NewReader(book), "table_E.1-1")
	if err != nil {
		t.Fatal(err)
	}
	if edition != "2099z" {
		t.Errorf("edition %q", edition)
	}
	rows := tables["table_E.1-1"]
	if len(rows) != 4 {
		t.Fatalf("%d rows (the draft taken?): %q", len(rows), rows)
	}
	var got []map[string]string
	for _, cells := range rows[1:] {
		r, err := toRow(rows[0], cells)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if got[0]["name"] != "GPS Dest Latitude" || got[0]["tag"] != "(0016,0084)" {
		t.Errorf("row %q", got[0])
	}
	if got[1]["basic"] != "X/Z/U*" || got[1]["uids"] != "K" {
		t.Errorf("row %q", got[1])
	}
	if got[2]["tag"] != "(gggg,eeee)" || got[2]["safePriv"] != "C" {
		t.Errorf("row %q", got[2])
	}
	// An action dicom/deid does not implement stops the generator.
	bad := append([]string(nil), rows[1]...)
	bad[3] = "X/Q"
	if _, err := toRow(rows[0], bad); err == nil || !strings.Contains(err.Error(), "X/Q") {
		t.Errorf("unknown action: %v", err)
	}
}
