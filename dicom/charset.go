package dicom

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
)

// Character repertoires of PS3.3 C.12.1.1.2 (Specific Character Set).
//
// A set is either a whole-value encoding (single-byte ISO_IR terms without
// code extensions, ISO_IR 192, GB18030, GBK) or an ISO 2022 element: a G0
// or G1 graphic set switched in by escape sequences (PS3.5 6.1.2.5).

type gset int

const (
	gNone       gset = iota
	gASCII           // ISO-IR 6, G0
	gRomaji          // ISO-IR 14 (JIS X 0201 Roman), G0; decoded as ASCII
	gKatakana        // ISO-IR 13 (JIS X 0201 Katakana), G1
	gJIS0208         // ISO-IR 87, G0, two bytes
	gJIS0212         // ISO-IR 159, G0, two bytes
	gKSX1001         // ISO-IR 149, G1, two bytes
	gGB2312          // ISO-IR 58, G1, two bytes
	gSingleHigh      // a 96-character single-byte set in G1, decoded by cm
)

type csTerm struct {
	g0, g1 gset
	cm     *charmap.Charmap // for gSingleHigh and single-byte terms
	whole  encoding.Encoding
	utf8   bool
	// escape sequence (after ESC) designating this term's set
	esc string
}

func single(cm *charmap.Charmap, esc string) csTerm {
	return csTerm{g0: gASCII, g1: gSingleHigh, cm: cm, esc: esc}
}

// terms maps the normalised Defined Term (spaces, '_' and '-' removed,
// upper case) to its definition.
var terms = map[string]csTerm{
	"":             {g0: gASCII},
	"ISOIR6":       {g0: gASCII},
	"ISOIR100":     single(charmap.ISO8859_1, "-A"),
	"ISOIR101":     single(charmap.ISO8859_2, "-B"),
	"ISOIR109":     single(charmap.ISO8859_3, "-C"),
	"ISOIR110":     single(charmap.ISO8859_4, "-D"),
	"ISOIR144":     single(charmap.ISO8859_5, "-L"),
	"ISOIR127":     single(charmap.ISO8859_6, "-G"),
	"ISOIR126":     single(charmap.ISO8859_7, "-F"),
	"ISOIR138":     single(charmap.ISO8859_8, "-H"),
	"ISOIR148":     single(charmap.ISO8859_9, "-M"),
	"ISOIR203":     single(charmap.ISO8859_15, "-b"),
	"ISOIR166":     single(charmap.Windows874, "-T"),
	"ISOIR13":      {g0: gRomaji, g1: gKatakana, esc: ")I"},
	"ISOIR192":     {utf8: true},
	"GB18030":      {whole: simplifiedchinese.GB18030},
	"GBK":          {whole: simplifiedchinese.GBK},
	"ISO2022IR6":   {g0: gASCII, esc: "(B"},
	"ISO2022IR87":  {g0: gJIS0208, esc: "$B"},
	"ISO2022IR159": {g0: gJIS0212, esc: "$(D"},
	"ISO2022IR149": {g1: gKSX1001, esc: "$)C"},
	"ISO2022IR58":  {g1: gGB2312, esc: "$)A"},
}

func init() {
	// ISO 2022 forms of the single-byte sets.
	for _, n := range []string{"100", "101", "109", "110", "144", "127", "126", "138", "148", "203", "166", "13"} {
		terms["ISO2022IR"+n] = terms["ISOIR"+n]
	}
}

// escapes maps escape sequences (bytes after ESC) to the set they designate.
var escapes = map[string]csTerm{
	"(B":  {g0: gASCII},
	"(J":  {g0: gRomaji},
	")I":  {g1: gKatakana},
	"$B":  {g0: gJIS0208},
	"$@":  {g0: gJIS0208}, // JIS C 6226-1978, decoded as JIS X 0208
	"$(D": {g0: gJIS0212},
	"$)C": {g1: gKSX1001},
	"$)A": {g1: gGB2312},
}

func init() {
	for k, t := range terms {
		if t.g1 == gSingleHigh && strings.HasPrefix(k, "ISOIR") {
			escapes[t.esc] = csTerm{g1: gSingleHigh, cm: t.cm}
		}
	}
}

func normTerm(s string) string {
	s = strings.Trim(s, " \x00")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' || c == '_' || c == '-' {
			continue
		}
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}

func splitCharset(raw []byte) []string {
	s := strings.TrimRight(string(raw), " \x00")
	if s == "" {
		return nil
	}
	parts := strings.Split(s, `\`)
	for i := range parts {
		parts[i] = strings.Trim(parts[i], " ")
	}
	return parts
}

// CharsetSupported reports whether every value of a Specific Character Set
// is one DecodeText understands.
func CharsetSupported(charset []string) bool {
	for _, c := range charset {
		if _, ok := terms[normTerm(c)]; !ok {
			return false
		}
	}
	return true
}

// textVR reports VRs whose values use the Specific Character Set.
func textVR(v string) bool {
	switch v {
	case "SH", "LO", "ST", "LT", "UC", "UT", "PN", "":
		return true
	}
	return false
}

// multiValueVR: '\' separates values (not so in ST, LT, UT).
func multiValueVR(v string) bool {
	switch v {
	case "ST", "LT", "UT":
		return false
	}
	return true
}

func latin1(raw []byte) string {
	ascii := true
	for _, c := range raw {
		if c >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return string(raw)
	}
	rs := make([]rune, len(raw))
	for i, c := range raw {
		rs[i] = rune(c)
	}
	return string(rs)
}

// DecodeText decodes a raw value of VR vr to UTF-8 using the Specific
// Character Set values charset, honouring ISO 2022 code extensions: escape
// sequences switch G0/G1 within a value and the state returns to that of
// value 1 at CR, LF, TAB, FF, at '\' between values and, for PN, at '^' and
// '=' (PS3.5 6.1.2.5.3). VRs that never use the character set (CS, UI, DA,
// ...) are decoded as ASCII/Latin-1. ok is false when a term is unknown; the
// value is then decoded as Latin-1. Padding is not trimmed.
func DecodeText(charset []string, vr string, raw []byte) (string, bool) {
	if !textVR(vr) {
		return latin1(raw), true
	}
	if !CharsetSupported(charset) {
		return latin1(raw), false
	}
	first := csTerm{g0: gASCII}
	if len(charset) > 0 {
		first = terms[normTerm(charset[0])]
	}
	if first.utf8 {
		if utf8.Valid(raw) {
			return string(raw), true
		}
		return strings.ToValidUTF8(string(raw), "\uFFFD"), true
	}
	if first.whole != nil {
		s, err := first.whole.NewDecoder().Bytes(raw)
		if err != nil {
			return latin1(raw), true
		}
		return string(s), true
	}
	if first.g0 == gNone {
		first.g0 = gASCII
	}
	// Fast path: no escapes and no high bytes.
	plain := true
	for _, c := range raw {
		if c >= 0x80 || c == 0x1B {
			plain = false
			break
		}
	}
	if plain {
		return string(raw), true
	}
	return decode2022(first, vr, raw), true
}

func decode2022(first csTerm, vr string, raw []byte) string {
	var out strings.Builder
	out.Grow(len(raw) * 2)
	g0, g1, cm := first.g0, first.g1, first.cm
	pn := vr == "PN"
	multi := multiValueVR(vr)
	var pend []byte // bytes of the current run in one state
	pendG0, pendG1, pendCM := g0, g1, cm
	flush := func() {
		if len(pend) > 0 {
			decodeRun(&out, pend, pendG0, pendG1, pendCM)
			pend = pend[:0]
		}
	}
	setState := func(n0, n1 gset, ncm *charmap.Charmap) {
		if n0 != g0 || n1 != g1 || ncm != cm {
			flush()
			g0, g1, cm = n0, n1, ncm
		}
		pendG0, pendG1, pendCM = g0, g1, cm
	}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == 0x1B {
			matched := false
			for l := 2; l <= 3 && i+l < len(raw); l++ {
				if t, ok := escapes[string(raw[i+1:i+1+l])]; ok {
					n0, n1, ncm := g0, g1, cm
					if t.g0 != gNone {
						n0 = t.g0
					}
					if t.g1 != gNone {
						n1, ncm = t.g1, t.cm
					}
					setState(n0, n1, ncm)
					i += l
					matched = true
					break
				}
			}
			if !matched {
				flush()
				out.WriteRune('\uFFFD')
			}
			continue
		}
		twoByteG0 := g0 == gJIS0208 || g0 == gJIS0212
		isDelim := c == '\r' || c == '\n' || c == '\t' || c == '\f' ||
			(!twoByteG0 && ((multi && c == '\\') || (pn && (c == '^' || c == '='))))
		if isDelim {
			setState(first.g0, first.g1, first.cm)
			flush()
			out.WriteByte(c)
			continue
		}
		pend = append(pend, c)
	}
	flush()
	return out.String()
}

// decodeRun decodes bytes that are all in one G0/G1 state.
func decodeRun(out *strings.Builder, b []byte, g0, g1 gset, cm *charmap.Charmap) {
	// Transform into an encoding x/text can decode as a whole.
	var enc encoding.Encoding
	var buf []byte
	switch {
	case g0 == gJIS0208 || g0 == gJIS0212 || g1 == gKatakana:
		enc = japanese.EUCJP
		for i := 0; i < len(b); i++ {
			c := b[i]
			switch {
			case c >= 0x80 && g1 == gKatakana:
				buf = append(buf, 0x8E, c)
			case c >= 0x21 && c <= 0x7E && (g0 == gJIS0208 || g0 == gJIS0212) && i+1 < len(b):
				if g0 == gJIS0212 {
					buf = append(buf, 0x8F)
				}
				buf = append(buf, c|0x80, b[i+1]|0x80)
				i++
			default:
				buf = append(buf, c)
			}
		}
	case g1 == gKSX1001:
		enc = korean.EUCKR
		buf = b
	case g1 == gGB2312:
		enc = simplifiedchinese.GBK
		buf = b
	case g1 == gSingleHigh && cm != nil:
		enc = cm
		buf = b
	default:
		out.WriteString(latin1(b))
		return
	}
	s, err := enc.NewDecoder().Bytes(buf)
	if err != nil {
		out.WriteString(latin1(b))
		return
	}
	out.Write(s)
}

// EncodeText encodes s for the Specific Character Set charset. It supports
// the default repertoire, the single-byte ISO_IR terms (value 1 only),
// ISO_IR 192, GB18030 and GBK; ok is false when the set is not supported for
// encoding or s has characters outside it.
func EncodeText(charset []string, s string) ([]byte, bool) {
	first := csTerm{g0: gASCII}
	if len(charset) > 0 {
		t, ok := terms[normTerm(charset[0])]
		if !ok {
			return nil, false
		}
		first = t
	}
	switch {
	case first.utf8:
		return []byte(s), utf8.ValidString(s)
	case first.whole != nil:
		b, err := first.whole.NewEncoder().Bytes([]byte(s))
		return b, err == nil
	case first.g1 == gSingleHigh && first.cm != nil:
		b, err := first.cm.NewEncoder().Bytes([]byte(s))
		return b, err == nil
	case first.g0 == gASCII && first.g1 == gNone:
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				return nil, false
			}
		}
		return []byte(s), true
	}
	return nil, false
}

// valueString renders a raw value as text: binary numbers in decimal,
// text decoded with charset and trimmed per value.
func valueString(charset []string, v string, raw []byte, big bool) string {
	c := coding{big: big}
	switch v {
	case "US", "SS", "UL", "SL", "FL", "FD", "AT", "SV", "UV":
		return binaryString(c, v, raw)
	case "OB", "OW", "OD", "OF", "OL", "OV", "UN", "SQ":
		return ""
	}
	s, _ := DecodeText(charset, v, raw)
	if !multiValueVR(v) {
		if v == "UT" || v == "ST" || v == "LT" {
			return strings.TrimRight(s, " \x00")
		}
	}
	if !strings.Contains(s, `\`) {
		return strings.Trim(s, " \x00")
	}
	parts := strings.Split(s, `\`)
	for i := range parts {
		parts[i] = strings.Trim(parts[i], " \x00")
	}
	return strings.Join(parts, `\`)
}

func binaryString(c coding, v string, raw []byte) string {
	size := numberSize(v)
	var b bytes.Buffer
	for i := 0; i+size <= len(raw); i += size {
		if i > 0 {
			b.WriteByte('\\')
		}
		p := raw[i : i+size]
		switch v {
		case "US":
			b.WriteString(strconv.FormatUint(uint64(c.u16(p)), 10))
		case "SS":
			b.WriteString(strconv.FormatInt(int64(int16(c.u16(p))), 10))
		case "UL":
			b.WriteString(strconv.FormatUint(uint64(c.u32(p)), 10))
		case "SL":
			b.WriteString(strconv.FormatInt(int64(int32(c.u32(p))), 10))
		case "FL":
			b.WriteString(strconv.FormatFloat(float64(float32frombits(c.u32(p))), 'g', -1, 32))
		case "FD":
			b.WriteString(strconv.FormatFloat(float64frombits(c.order().Uint64(p)), 'g', -1, 64))
		case "AT":
			b.WriteString(NewTag(c.u16(p[0:2]), c.u16(p[2:4])).String())
		case "SV":
			b.WriteString(strconv.FormatInt(int64(c.order().Uint64(p)), 10))
		case "UV":
			b.WriteString(strconv.FormatUint(c.order().Uint64(p), 10))
		}
	}
	return b.String()
}
