// Package stdtable reads tables out of the DICOM standard's text, for the
// generators of package dicom (internal/gendict, internal/gensop).
//
// Two renderings of the same text are understood: the DocBook source the
// DICOM Standards Committee publishes (source/docbook/partNN/partNN.xml),
// where a table carries its id as xml:id, and the chunked XHTML it renders
// from that source (output/chtml/partNN/*.html), where an empty anchor with
// the id stands just before the table.
package stdtable

import (
	"encoding/xml"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Doc is what Read found: the edition the text names ("2024b") and, for
// each table asked for and present, its rows of cell texts; the first row
// holds the headings.
type Doc struct {
	Part    int
	Edition string
	Tables  map[string][][]string
}

var editionRE = regexp.MustCompile(`PS ?3\.(\d+) (\d{4}[a-z]?)`)

// Read walks one file of the standard and returns the rows of the tables
// whose ids are given (e.g. "table_6-1"); ids not present are absent from
// Doc.Tables. Each cell is its text with white space collapsed and the
// editors' invisible characters dropped. The edition is the first "PS3.n
// YYYYx" in the text (the book's subtitle, or the page header). A table
// nested in a cell is no part of the cell's text.
func Read(r io.Reader, ids ...string) (*Doc, error) {
	dec := xml.NewDecoder(r)
	dec.Strict = false
	dec.AutoClose = xml.HTMLAutoClose
	dec.Entity = xml.HTMLEntity
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	doc := &Doc{Tables: map[string][][]string{}}
	var pending string // id seen on an anchor, for the next table
	var cur string     // id of the table being read
	var depth int      // tables nested inside it
	var cell *strings.Builder
	var cells []string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			id := ""
			for _, a := range t.Attr {
				if a.Name.Local == "id" && want[a.Value] {
					id = a.Value
				}
			}
			switch t.Name.Local {
			case "table":
				switch {
				case cur != "":
					depth++
				case id != "":
					cur = id
				case pending != "":
					cur, pending = pending, ""
				}
				if cur != "" && depth == 0 {
					if _, dup := doc.Tables[cur]; dup {
						return nil, fmt.Errorf("table %s twice", cur)
					}
					doc.Tables[cur] = nil
				}
			case "tr":
				if depth == 0 {
					cells = nil
				}
			case "td", "th":
				if cur != "" && depth == 0 {
					cell = &strings.Builder{}
				}
			default:
				if id != "" && cur == "" {
					pending = id
				}
			}
		case xml.CharData:
			if doc.Edition == "" {
				if m := editionRE.FindSubmatch(t); m != nil {
					fmt.Sscan(string(m[1]), &doc.Part)
					doc.Edition = string(m[2])
				}
			}
			if cell != nil && depth == 0 {
				cell.Write(t)
				cell.WriteByte(' ')
			}
		case xml.EndElement:
			switch t.Name.Local {
			case "td", "th":
				if cell != nil {
					cells = append(cells, Clean(cell.String()))
					cell = nil
				}
			case "tr":
				if cur != "" && depth == 0 {
					doc.Tables[cur] = append(doc.Tables[cur], cells)
				}
			case "table":
				if depth > 0 {
					depth--
				} else {
					cur = ""
				}
			}
		}
	}
	if doc.Edition == "" {
		return nil, fmt.Errorf("no edition (PS3.n YYYYx) named in the text")
	}
	return doc, nil
}

// invisible are characters the standard carries inside words, UIDs and
// keywords (zero-width spaces that allow line breaks, soft hyphens) that
// are not part of the text.
var invisible = strings.NewReplacer("\u200b", "", "\u200c", "", "\u200d", "", "\u2060", "", "\ufeff", "", "\u00ad", "")

// Clean is a cell's text: invisible characters dropped, white space
// (non-breaking spaces included) collapsed to single spaces.
func Clean(s string) string {
	return strings.Join(strings.Fields(invisible.Replace(s)), " ")
}

// Column returns the index of the heading named (compared after Clean,
// case-insensitively), or -1.
func Column(headings []string, name string) int {
	for i, h := range headings {
		if strings.EqualFold(Clean(h), name) {
			return i
		}
	}
	return -1
}
