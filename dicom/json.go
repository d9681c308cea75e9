package dicom

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MarshalJSON encodes the data set in the DICOM JSON Model (PS3.18 F.2):
// an object keyed by "GGGGEEEE" with "vr" and "Value" (or "InlineBinary"
// for binary VRs). Text is decoded with the top-level Specific Character
// Set. Encapsulated pixel data is left without a value.
func (ds *DataSet) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	if err := ds.appendJSON(&b, ds.charset(), 0, nil); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// AppendMetadataJSON appends the data set to b in the DICOM JSON Model,
// as MarshalJSON does, with each Bulk element (ReadMetadata) given as a
// BulkDataURI (PS3.18 F.2.6): bulkPrefix, a '/' and the element's path
// (FormatBulkPath). bulkPrefix is written as is: it must be valid inside
// a JSON string. Text values are written with <, > and & escaped, so a
// prefix holding one of them can be found and replaced later (a front end
// substitutes its own URL for a placeholder).
func (ds *DataSet) AppendMetadataJSON(b *bytes.Buffer, bulkPrefix string) error {
	return ds.appendJSON(b, ds.charset(), 0, &bulkURI{prefix: bulkPrefix})
}

// bulkURI builds the BulkDataURIs of one encoding: the path of the
// element being written.
type bulkURI struct {
	prefix string
	path   []uint32
}

func (ds *DataSet) appendJSON(b *bytes.Buffer, charset []string, depth int, bk *bulkURI) error {
	if depth > MaxDepth {
		return ErrTooDeep
	}
	b.WriteByte('{')
	if ds != nil {
		for i, e := range ds.Elements {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(b, `"%08X":{"vr":"%s"`, uint32(e.Tag), jsonVR(e))
			if bk != nil {
				bk.path = append(bk.path, uint32(e.Tag))
			}
			if err := ds.appendValue(b, e, charset, depth, bk); err != nil {
				return err
			}
			if bk != nil {
				bk.path = bk.path[:len(bk.path)-1]
			}
			b.WriteByte('}')
		}
	}
	b.WriteByte('}')
	return nil
}

func jsonVR(e *Element) string {
	if e.Items != nil && e.Fragments == nil && e.VR != "UN" {
		return "SQ"
	}
	if len(e.VR) == 2 {
		return e.VR
	}
	return VROf(e.Tag)
}

func writeJSONString(b *bytes.Buffer, s string) {
	j, _ := json.Marshal(s)
	b.Write(j)
}

func (ds *DataSet) appendValue(b *bytes.Buffer, e *Element, charset []string, depth int, bk *bulkURI) error {
	vr := jsonVR(e)
	if e.Bulk {
		if bk != nil {
			b.WriteString(`,"BulkDataURI":"`)
			b.WriteString(bk.prefix)
			b.WriteByte('/')
			b.WriteString(FormatBulkPath(bk.path))
			b.WriteByte('"')
		}
		return nil
	}
	switch {
	case vr == "SQ" || (e.Items != nil && e.Fragments == nil):
		if len(e.Items) == 0 {
			return nil
		}
		b.WriteString(`,"Value":[`)
		for i, it := range e.Items {
			if i > 0 {
				b.WriteByte(',')
			}
			if bk != nil {
				bk.path = append(bk.path, uint32(i))
			}
			if err := it.appendJSON(b, charset, depth+1, bk); err != nil {
				return err
			}
			if bk != nil {
				bk.path = bk.path[:len(bk.path)-1]
			}
		}
		b.WriteByte(']')
		return nil
	case e.Fragments != nil || len(e.Value) == 0:
		return nil
	}
	order := binary.ByteOrder(binary.LittleEndian)
	if ds.big {
		order = binary.BigEndian
	}
	var vals []string // JSON-encoded values
	switch vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "UN":
		b.WriteString(`,"InlineBinary":`)
		writeJSONString(b, base64.StdEncoding.EncodeToString(e.Value))
		return nil
	case "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT":
		size := numberSize(vr)
		for v := e.Value; len(v) >= size; v = v[size:] {
			switch vr {
			case "US":
				vals = append(vals, strconv.FormatUint(uint64(order.Uint16(v)), 10))
			case "SS":
				vals = append(vals, strconv.FormatInt(int64(int16(order.Uint16(v))), 10))
			case "UL":
				vals = append(vals, strconv.FormatUint(uint64(order.Uint32(v)), 10))
			case "SL":
				vals = append(vals, strconv.FormatInt(int64(int32(order.Uint32(v))), 10))
			case "UV":
				vals = append(vals, strconv.FormatUint(order.Uint64(v), 10))
			case "SV":
				vals = append(vals, strconv.FormatInt(int64(order.Uint64(v)), 10))
			case "FL":
				vals = append(vals, jsonFloat(float64(math.Float32frombits(order.Uint32(v)))))
			case "FD":
				vals = append(vals, jsonFloat(math.Float64frombits(order.Uint64(v))))
			case "AT":
				vals = append(vals, fmt.Sprintf(`"%04X%04X"`, order.Uint16(v), order.Uint16(v[2:])))
			}
		}
	default:
		s, _ := DecodeText(charset, vr, e.Value)
		parts := []string{s}
		if vr != "LT" && vr != "ST" && vr != "UT" && vr != "UR" {
			parts = strings.Split(s, `\`)
		}
		for _, p := range parts {
			p = strings.TrimRight(p, " \x00")
			if vr != "LT" && vr != "ST" && vr != "UT" {
				p = strings.TrimLeft(p, " ")
			}
			switch {
			case p == "":
				vals = append(vals, "null")
			case vr == "PN":
				vals = append(vals, jsonPN(p))
			case vr == "IS" || vr == "DS":
				if f, err := strconv.ParseFloat(p, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
					if n, err := strconv.ParseInt(p, 10, 64); vr == "IS" && err == nil {
						vals = append(vals, strconv.FormatInt(n, 10))
					} else {
						vals = append(vals, jsonFloat(f))
					}
				} else {
					j, _ := json.Marshal(p)
					vals = append(vals, string(j))
				}
			default:
				j, _ := json.Marshal(p)
				vals = append(vals, string(j))
			}
		}
	}
	if len(vals) == 0 {
		return nil
	}
	b.WriteString(`,"Value":[`)
	b.WriteString(strings.Join(vals, ","))
	b.WriteByte(']')
	return nil
}

// numberSize is the size of one value of a binary number VR.
func numberSize(vr string) int {
	switch vr {
	case "US", "SS":
		return 2
	case "FD", "UV", "SV":
		return 8
	}
	return 4 // UL, SL, FL, AT
}

func jsonFloat(f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return "null"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func jsonPN(p string) string {
	groups := strings.SplitN(p, "=", 3)
	names := []string{"Alphabetic", "Ideographic", "Phonetic"}
	var parts []string
	for i, g := range groups {
		if g == "" {
			continue
		}
		j, _ := json.Marshal(g)
		parts = append(parts, fmt.Sprintf(`"%s":%s`, names[i], j))
	}
	return "{" + strings.Join(parts, ",") + "}"
}
