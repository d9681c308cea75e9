// Command gendict writes dicom/dict_gen.go, Ward's data dictionary, from
// the text of the DICOM standard:
//
//   - PS3.6 Table 6-1 (registry of data elements), 7-1 (file meta
//     elements), 8-1 (directory structuring elements): tag, keyword, VR as
//     the standard writes it ("US or SS"), VM, retired;
//   - PS3.7 Tables E.1-1 and E.2-1 (command elements, retired ones);
//   - PS3.6 Tables A-1 (UIDs) and A-2 (well-known frames of reference).
//
// Each -std file is either the DocBook source (part06.xml, part07.xml) or a
// chapter of its chunked XHTML rendering (output/chtml/part06/chapter_A.html
// and so on); every table named above must be found in exactly one of them,
// and all must be of the edition given by -edition.
//
// Where Table 6-1 cannot be had in either form, -attributes reads it from
// the JSON extraction of the same edition's Table 6-1 that
// innolitics/dicom-standard publishes (standard/attributes.json); its rows
// for groups 0002 and 0004 must then agree with Tables 7-1 and 8-1, which
// win. That is how dict_gen.go of 2024b was made: part06.xml and
// chapter_6.html of 2024b (each over 4 MiB) were not to be had from the
// mirror it was generated from, so the command was (files taken out of git, not kept in Ward):
//
//	# aglv/dicom-spec, tag 2024b-chtml (NEMA's chtml of 2024b, untouched):
//	#   output/chtml/part06/chapter_7.html, chapter_8.html, chapter_A.html,
//	#   output/chtml/part07/chapter_E.html, sect_E.2.html
//	# innolitics/dicom-standard 8670abd ("Update standard to rev2024b"):
//	#   standard/attributes.json
//	go run ./internal/gendict -edition 2024b -o dict_gen.go \
//	    -std chapter_7.html -std chapter_8.html -std chapter_A.html \
//	    -std chapter_E.html -std sect_E.2.html -attributes attributes.json
//
// With the DocBook at hand, run from dicom/:
//
//	go run ./internal/gendict -edition 2024b -o dict_gen.go \
//	    -std part06.xml -std part07.xml
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/format"
	"log"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/ward-pacs/ward/dicom/internal/stdtable"
)

// element is one row of a registry table.
type element struct {
	tag, xmask uint32 // x digits of the standard's tag: 0 in tag, F in xmask
	text       string // the tag as written, "(60xx,3000)"
	keyword    string
	vr, vm     string
	retired    bool
	source     string // table id
}

type uid struct {
	value, name, keyword, typ string
	retired                   bool
}

// tables of the standard the dictionary is made of, with the part each
// belongs to.
var tables = map[string]int{
	"table_6-1": 6, "table_7-1": 6, "table_8-1": 6, "table_A-1": 6, "table_A-2": 6,
	"table_E.1-1": 7, "table_E.2-1": 7,
}

type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(s string) error { *f = append(*f, s); return nil }

func main() {
	var std files
	flag.Var(&std, "std", "a file of the standard (DocBook partNN.xml or a chtml chapter); repeat")
	attrs := flag.String("attributes", "", "Table 6-1 as innolitics/dicom-standard attributes.json, when no -std file has it")
	edition := flag.String("edition", "", "edition every file must be of, e.g. 2024b")
	out := flag.String("o", "dict_gen.go", "Go file to write")
	flag.Parse()
	if *edition == "" || len(std) == 0 {
		log.Fatal("gendict: -edition and at least one -std are required")
	}
	ids := make([]string, 0, len(tables))
	for id := range tables {
		ids = append(ids, id)
	}
	got := map[string][][]string{}
	for _, name := range std {
		f, err := os.Open(name)
		if err != nil {
			log.Fatal(err)
		}
		doc, err := stdtable.Read(f, ids...)
		f.Close()
		if err != nil {
			log.Fatalf("gendict: %s: %v", name, err)
		}
		if doc.Edition != *edition {
			log.Fatalf("gendict: %s is of edition %s, not %s", name, doc.Edition, *edition)
		}
		for id, rows := range doc.Tables {
			if tables[id] != doc.Part {
				continue // a table of that number in another part
			}
			if _, dup := got[id]; dup {
				log.Fatalf("gendict: %s found twice", id)
			}
			got[id] = rows
		}
	}
	var elems []element
	add := func(es []element, err error) {
		if err != nil {
			log.Fatalf("gendict: %v", err)
		}
		elems = append(elems, es...)
	}
	for _, id := range []string{"table_7-1", "table_8-1", "table_E.1-1", "table_E.2-1"} {
		add(registry(id, got[id]))
	}
	switch {
	case got["table_6-1"] != nil:
		add(registry("table_6-1", got["table_6-1"]))
	case *attrs != "":
		es, err := fromJSON(*attrs)
		if err != nil {
			log.Fatalf("gendict: %v", err)
		}
		add(mergeJSON(es, elems))
	default:
		log.Fatal("gendict: Table 6-1 is in no -std file and no -attributes is given")
	}
	sort.Slice(elems, func(i, j int) bool {
		if elems[i].tag != elems[j].tag {
			return elems[i].tag < elems[j].tag
		}
		return elems[i].xmask < elems[j].xmask
	})
	if err := check(elems); err != nil {
		log.Fatalf("gendict: %v", err)
	}
	uids, err := uidTable(got["table_A-1"], got["table_A-2"])
	if err != nil {
		log.Fatalf("gendict: %v", err)
	}

	var b bytes.Buffer
	via := ""
	if got["table_6-1"] == nil {
		via = "; Table 6-1 by way of innolitics/dicom-standard attributes.json"
	}
	fmt.Fprintf(&b, "// Code generated by dicom/internal/gendict from DICOM PS3.6 %s (Tables 6-1, 7-1, 8-1, A-1, A-2) and PS3.7 %[1]s (Tables E.1-1, E.2-1)%s; DO NOT EDIT.\n\n", *edition, via)
	b.WriteString("package dicom\n\n")
	fmt.Fprintf(&b, "// DictionaryEdition is the edition of the DICOM standard the data\n// dictionary is transcribed from.\nconst DictionaryEdition = %q\n\n", *edition)
	b.WriteString("// dictElements holds the registered data elements, sorted by tag: tag\n// (an x of the standard as 0), the x digits as a mask, VR as the standard\n// writes it, VM, keyword, retired.\n")
	b.WriteString("var dictElements = [...]dictElement{\n")
	for _, e := range elems {
		fmt.Fprintf(&b, "\t{0x%08X, 0x%08X, %q, %q, %q, %v},\n", e.tag, e.xmask, e.vr, e.vm, e.keyword, e.retired)
	}
	b.WriteString("}\n\n")
	b.WriteString("// dictUIDs holds the UIDs of Tables A-1 and A-2: value, name (without\n// \"(Retired)\"), keyword, type, retired.\n")
	b.WriteString("var dictUIDs = [...]dictUID{\n")
	for _, u := range uids {
		fmt.Fprintf(&b, "\t{%q, %q, %q, %q, %v},\n", u.value, u.name, u.keyword, u.typ, u.retired)
	}
	b.WriteString("}\n")
	src, err := format.Source(b.Bytes())
	if err != nil {
		log.Fatalf("gendict: formatting: %v", err)
	}
	if err := os.WriteFile(*out, src, 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("gendict: PS3.6/PS3.7 %s: %d data elements (%d repeating forms), %d UIDs", *edition, len(elems), masked(elems), len(uids))
}

func masked(es []element) int {
	n := 0
	for _, e := range es {
		if e.xmask != 0 {
			n++
		}
	}
	return n
}

var tagRE = regexp.MustCompile(`^\(([0-9A-Fa-fxX]{4}),([0-9A-Fa-fxX]{4})\)$`)

// parseTag reads "(gggg,eeee)" where any digit may be x.
func parseTag(s string) (tag, xmask uint32, err error) {
	m := tagRE.FindStringSubmatch(s)
	if m == nil {
		return 0, 0, fmt.Errorf("tag %q", s)
	}
	for _, c := range m[1] + m[2] {
		tag <<= 4
		xmask <<= 4
		if c == 'x' || c == 'X' {
			xmask |= 0xF
			continue
		}
		d, _ := strconv.ParseUint(string(c), 16, 8)
		tag |= uint32(d)
	}
	return tag, xmask, nil
}

// vrRE is a VR cell: one VR, several joined by "or", or a reference to a
// note (the item delimiters, whose VR PS3.5 7.5 defines as none), or empty.
var vrRE = regexp.MustCompile(`^(|[A-Z]{2}( or [A-Z]{2})*|See Note.*)$`)

// registry reads a registry table: columns Tag, Keyword, VR, VM by heading;
// a cell beyond the headings, or under an empty one, starting with "RET"
// marks a retired element, and every element of Table E.2-1 is retired.
func registry(id string, rows [][]string) ([]element, error) {
	if len(rows) < 2 {
		return nil, fmt.Errorf("%s not found", id)
	}
	h := rows[0]
	ct, ck, cv, cm := stdtable.Column(h, "Tag"), stdtable.Column(h, "Keyword"), stdtable.Column(h, "VR"), stdtable.Column(h, "VM")
	if ct < 0 || ck < 0 || cv < 0 || cm < 0 {
		return nil, fmt.Errorf("%s: headings %q", id, h)
	}
	var out []element
	for _, c := range rows[1:] {
		if len(c) <= cm {
			return nil, fmt.Errorf("%s: row %q", id, c)
		}
		tag, xmask, err := parseTag(c[ct])
		if err != nil {
			return nil, fmt.Errorf("%s: %v", id, err)
		}
		e := element{tag: tag, xmask: xmask, text: c[ct], keyword: c[ck], vr: c[cv], vm: c[cm], source: id, retired: id == "table_E.2-1"}
		for i := cm + 1; i < len(c); i++ {
			if (i >= len(h) || h[i] == "") && strings.HasPrefix(c[i], "RET") {
				e.retired = true
			}
		}
		if err := valid(e); err != nil {
			return nil, fmt.Errorf("%s: %v", id, err)
		}
		out = append(out, e)
	}
	return out, nil
}

var keywordRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9]*)?$`)

func valid(e element) error {
	if !vrRE.MatchString(e.vr) {
		return fmt.Errorf("%s: VR %q", e.text, e.vr)
	}
	if !keywordRE.MatchString(e.keyword) {
		return fmt.Errorf("%s: keyword %q", e.text, e.keyword)
	}
	return nil
}

// fromJSON reads innolitics/dicom-standard's attributes.json: an array of
// {tag, keyword, valueRepresentation, valueMultiplicity, retired "Y"/"N"}.
func fromJSON(name string) ([]element, error) {
	raw, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var rows []struct {
		Tag     string `json:"tag"`
		Keyword string `json:"keyword"`
		VR      string `json:"valueRepresentation"`
		VM      string `json:"valueMultiplicity"`
		Retired string `json:"retired"`
	}
	if err := json.Unmarshal(raw, &rows); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	var out []element
	for _, r := range rows {
		tag, xmask, err := parseTag(r.Tag)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		if r.Retired != "Y" && r.Retired != "N" {
			return nil, fmt.Errorf("%s: %s: retired %q", name, r.Tag, r.Retired)
		}
		e := element{tag: tag, xmask: xmask, text: r.Tag, keyword: stdtable.Clean(r.Keyword), vr: stdtable.Clean(r.VR), vm: stdtable.Clean(r.VM), retired: r.Retired == "Y", source: "table_6-1"}
		if err := valid(e); err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		out = append(out, e)
	}
	if len(out) < 4000 {
		return nil, fmt.Errorf("%s: only %d elements", name, len(out))
	}
	return out, nil
}

// mergeJSON returns the JSON rows not already read from the standard's own
// tables (groups 0002 and 0004); rows of both must agree.
func mergeJSON(js, have []element) ([]element, error) {
	known := map[[2]uint32]element{}
	for _, e := range have {
		known[[2]uint32{e.tag, e.xmask}] = e
	}
	var out []element
	for _, j := range js {
		e, ok := known[[2]uint32{j.tag, j.xmask}]
		if !ok {
			out = append(out, j)
			continue
		}
		if e.keyword != j.keyword || e.vr != j.vr || e.vm != j.vm || e.retired != j.retired {
			return nil, fmt.Errorf("%s: %s says %s %s %s %v, the JSON %s %s %s %v", e.text, e.source, e.keyword, e.vr, e.vm, e.retired, j.keyword, j.vr, j.vm, j.retired)
		}
	}
	return out, nil
}

// check refuses a tag listed twice and a keyword used twice.
func check(es []element) error {
	kw := map[string]string{}
	for i, e := range es {
		if i > 0 && es[i-1].tag == e.tag && es[i-1].xmask == e.xmask {
			return fmt.Errorf("%s listed twice (%s, %s)", e.text, es[i-1].source, e.source)
		}
		if e.keyword == "" {
			continue
		}
		if prev, dup := kw[e.keyword]; dup {
			return fmt.Errorf("keyword %s for %s and %s", e.keyword, prev, e.text)
		}
		kw[e.keyword] = e.text
	}
	return nil
}

var uidRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)+$`)

// uidTable reads Table A-1 (value, name, keyword, type) and A-2 (frames of
// reference, type "Well-known frame of reference"); a name ending in
// "(Retired)" marks a retired UID and loses that suffix.
func uidTable(a1, a2 [][]string) ([]uid, error) {
	if len(a1) < 2 || len(a2) < 2 {
		return nil, fmt.Errorf("tables A-1 and A-2 are both needed")
	}
	var out []uid
	seen := map[string]bool{}
	for _, t := range []struct {
		id   string
		rows [][]string
	}{{"A-1", a1}, {"A-2", a2}} {
		h := t.rows[0]
		cv, cn, ck, ct := stdtable.Column(h, "UID Value"), stdtable.Column(h, "UID Name"), stdtable.Column(h, "UID Keyword"), stdtable.Column(h, "UID Type")
		if cv < 0 || cn < 0 || ck < 0 || (ct < 0 && t.id == "A-1") {
			return nil, fmt.Errorf("table %s: headings %q", t.id, h)
		}
		for _, c := range t.rows[1:] {
			if len(c) != len(h) {
				return nil, fmt.Errorf("table %s: row %q", t.id, c)
			}
			u := uid{value: c[cv], name: c[cn], keyword: c[ck], typ: "Well-known frame of reference"}
			if ct >= 0 {
				u.typ = c[ct]
			}
			if !uidRE.MatchString(u.value) || len(u.value) > 64 {
				return nil, fmt.Errorf("table %s: UID %q", t.id, u.value)
			}
			if seen[u.value] {
				return nil, fmt.Errorf("table %s: UID %s twice", t.id, u.value)
			}
			seen[u.value] = true
			if n, ok := strings.CutSuffix(u.name, "(Retired)"); ok {
				u.name, u.retired = strings.TrimSpace(n), true
			}
			out = append(out, u)
		}
	}
	return out, nil
}
