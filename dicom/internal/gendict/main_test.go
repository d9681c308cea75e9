package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseTag(t *testing.T) {
	for _, c := range []struct {
		in          string
		tag, xmask  uint32
		wantFailure bool
	}{
		{"(0008,0018)", 0x00080018, 0, false},
		{"(60xx,3000)", 0x60003000, 0x00FF0000, false},
		{"(0028,04x2)", 0x00280402, 0x000000F0, false},
		{"(1010,xxxx)", 0x10100000, 0x0000FFFF, false},
		{"(1000,XXX5)", 0x10000005, 0x0000FFF0, false},
		{"(0008,001)", 0, 0, true},
		{"0008,0018", 0, 0, true},
		{"(gggg,eeee)", 0, 0, true},
	} {
		tag, xmask, err := parseTag(c.in)
		if (err != nil) != c.wantFailure || tag != c.tag || xmask != c.xmask {
			t.Errorf("parseTag(%q) = %08X, %08X, %v", c.in, tag, xmask, err)
		}
	}
}

func TestRegistry(t *testing.T) {
	rows := [][]string{
		{"Tag", "Name", "Keyword", "VR", "VM", ""},
		{"(0008,0001)", "Length to End", "LengthToEnd", "UL", "1", "RET"},
		{"(0028,0106)", "Smallest Image Pixel Value", "SmallestImagePixelValue", "US or SS", "1", ""},
		{"(FFFE,E000)", "Item", "Item", "See Note 2", "1", ""},
		{"(0004,1600)", "Number of References", "NumberOfReferences", "UL", "1", "RET (2004)"},
		{"(0018,9445)", "", "", "", "", "RET"},
	}
	es, err := registry("table_6-1", rows)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 5 || !es[0].retired || es[1].retired || es[1].vr != "US or SS" || !es[3].retired || !es[4].retired {
		t.Errorf("%+v", es)
	}
	bad := append([][]string(nil), rows...)
	bad = append(bad, []string{"(0010,0010)", "Patient's Name", "PatientName", "PN or", "1", ""})
	if _, err := registry("table_6-1", bad); err == nil {
		t.Error("a malformed VR is accepted")
	}
	cmd, err := registry("table_E.2-1", [][]string{{"Tag", "Message Field", "Keyword", "VR", "VM"}, {"(0000,0001)", "Command Length to End", "CommandLengthToEnd", "UL", "1"}})
	if err != nil || len(cmd) != 1 || !cmd[0].retired {
		t.Errorf("Table E.2-1: %+v, %v", cmd, err)
	}
	if err := check(append(es, es[0])); err == nil {
		t.Error("a tag twice is accepted")
	}
}

func TestJSONMustAgreeWithTables(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "attributes.json")
	var b strings.Builder
	b.WriteString(`[{"tag":"(0002,0010)","keyword":"TransferSyntaxUID","valueRepresentation":"UI","valueMultiplicity":"1","retired":"N"}`)
	for i := 0; i < 4000; i++ { // fromJSON refuses a short file
		b.WriteString(`,{"tag":"(0009,1000)","keyword":"X","valueRepresentation":"LO","valueMultiplicity":"1","retired":"N"}`)
	}
	b.WriteString(`]`)
	if err := os.WriteFile(name, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	js, err := fromJSON(name)
	if err != nil {
		t.Fatal(err)
	}
	table := []element{{tag: 0x00020010, keyword: "TransferSyntaxUID", vr: "UI", vm: "1", source: "table_7-1"}}
	rest, err := mergeJSON(js, table)
	if err != nil || len(rest) != 4000 {
		t.Errorf("agreeing rows: %d, %v", len(rest), err)
	}
	table[0].vr = "UN"
	if _, err := mergeJSON(js, table); err == nil {
		t.Error("a row the table contradicts is accepted")
	}
}

func TestUIDTable(t *testing.T) {
	a1 := [][]string{
		{"UID Value", "UID Name", "UID Keyword", "UID Type", "Part"},
		{"1.2.840.10008.1.1", "Verification SOP Class", "Verification", "SOP Class", "PS3.4"},
		{"1.2.840.10008.5.1.1.27", "Stored Print Storage SOP Class (Retired)", "StoredPrintStorage", "SOP Class", "PS3.4"},
	}
	a2 := [][]string{
		{"UID Value", "UID Name", "UID Keyword", "Normative Reference"},
		{"1.2.840.10008.1.4.1.1", "Talairach Brain Atlas Frame of Reference", "TalairachBrainAtlas", "Talairach J."},
	}
	us, err := uidTable(a1, a2)
	if err != nil {
		t.Fatal(err)
	}
	if len(us) != 3 || us[0].retired || !us[1].retired || us[1].name != "Stored Print Storage SOP Class" || us[2].typ != "Well-known frame of reference" {
		t.Errorf("%+v", us)
	}
	if _, err := uidTable(append(a1, a1[1]), a2); err == nil {
		t.Error("a UID twice is accepted")
	}
	if _, err := uidTable(append(a1, []string{"1.2.x", "n", "k", "SOP Class", ""}), a2); err == nil {
		t.Error("a malformed UID is accepted")
	}
}
