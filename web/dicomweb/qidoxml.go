package dicomweb

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/ward-pacs/ward/dicom"
)

// The QIDO-RS answer in XML: multipart/related; type="application/dicom+xml",
// one part per match holding the match in the Native DICOM Model (PS3.19
// A.1). It is written from the match's DICOM JSON (PS3.18 F.2), which
// holds the values already decoded per VR and character set, so that the
// two forms cannot disagree.

// xmlMaxDepth bounds the nesting of sequences converted.
const xmlMaxDepth = 16

// errJSONModel: a match's JSON is not the DICOM JSON model (a bug).
var errJSONModel = errors.New("dicomweb: not a DICOM JSON object")

type jsonAttr struct {
	VR           string            `json:"vr"`
	Value        []json.RawMessage `json:"Value"`
	InlineBinary *string           `json:"InlineBinary"`
}

// matchXML converts one match's DICOM JSON to a Native DICOM Model
// document.
func matchXML(js []byte) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(xml.Header)
	b.WriteString(`<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM" xml:space="preserve">`)
	if err := xmlAttributes(&b, js, 0); err != nil {
		return nil, err
	}
	b.WriteString("</NativeDicomModel>\n")
	return b.Bytes(), nil
}

func xmlAttributes(b *bytes.Buffer, js []byte, depth int) error {
	if depth > xmlMaxDepth {
		return errJSONModel
	}
	var obj map[string]jsonAttr
	if err := json.Unmarshal(js, &obj); err != nil {
		return fmt.Errorf("%w: %v", errJSONModel, err)
	}
	tags := make([]string, 0, len(obj))
	for t := range obj {
		tags = append(tags, t)
	}
	sort.Strings(tags)
	for _, t := range tags {
		a := obj[t]
		fmt.Fprintf(b, `<DicomAttribute tag="%s" vr="%s"`, xmlEscape(t), xmlEscape(a.VR))
		var n uint32
		if _, err := fmt.Sscanf(t, "%08X", &n); err == nil {
			if kw := dicom.Keyword(dicom.Tag(n)); kw != "" {
				fmt.Fprintf(b, ` keyword="%s"`, kw)
			}
		}
		b.WriteByte('>')
		if a.InlineBinary != nil {
			b.WriteString("<InlineBinary>" + xmlEscape(*a.InlineBinary) + "</InlineBinary>")
		}
		for i, v := range a.Value {
			num := i + 1
			switch {
			case a.VR == "SQ":
				fmt.Fprintf(b, `<Item number="%d">`, num)
				if err := xmlAttributes(b, v, depth+1); err != nil {
					return err
				}
				b.WriteString("</Item>")
			case a.VR == "PN":
				if err := xmlPersonName(b, num, v); err != nil {
					return err
				}
			default:
				var s string
				if err := json.Unmarshal(v, &s); err != nil {
					s = string(v) // a number, or null
					if s == "null" {
						s = ""
					}
				}
				fmt.Fprintf(b, `<Value number="%d">%s</Value>`, num, xmlEscape(s))
			}
		}
		b.WriteString("</DicomAttribute>")
	}
	return nil
}

// xmlPersonName writes a PN value: each component group with its five
// components (PS3.19 A.1.5, PS3.5 6.2.1).
func xmlPersonName(b *bytes.Buffer, num int, v json.RawMessage) error {
	fmt.Fprintf(b, `<PersonName number="%d">`, num)
	if string(v) != "null" {
		var pn map[string]string
		if err := json.Unmarshal(v, &pn); err != nil {
			return fmt.Errorf("%w: %v", errJSONModel, err)
		}
		for _, group := range []string{"Alphabetic", "Ideographic", "Phonetic"} {
			g, ok := pn[group]
			if !ok {
				continue
			}
			b.WriteString("<" + group + ">")
			parts := strings.Split(g, "^")
			for i, name := range []string{"FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix"} {
				if i < len(parts) && parts[i] != "" {
					b.WriteString("<" + name + ">" + xmlEscape(parts[i]) + "</" + name + ">")
				}
			}
			b.WriteString("</" + group + ">")
		}
	}
	b.WriteString("</PersonName>")
	return nil
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
