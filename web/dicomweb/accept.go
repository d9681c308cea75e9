package dicomweb

import (
	"errors"
	"sort"
	"strconv"
	"strings"
)

// MediaRange is one entry of an Accept header (RFC 9110 12.5.1), as
// DICOMweb uses them (PS3.18 8.7): a type, its parameters (type,
// transfer-syntax, charset; names lower case) and its weight.
type MediaRange struct {
	Type   string // lower case, e.g. "multipart/related", "*/*"
	Params map[string]string
	Q      float64
}

// maxAcceptRanges bounds the entries read from Accept headers.
const maxAcceptRanges = 64

// ErrBadAccept: an Accept header that cannot be read.
var ErrBadAccept = errors.New("malformed Accept header")

// ParseAccept reads the Accept headers of a request into media ranges,
// highest weight first (ties keep their order); none gives */*. Ranges
// of weight 0 are dropped.
func ParseAccept(headers []string) ([]MediaRange, error) {
	var out []MediaRange
	for _, h := range headers {
		for _, item := range splitQuoted(h, ',') {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			if len(out) == maxAcceptRanges {
				return nil, ErrBadAccept
			}
			// Read as Content-Type is (parseContentType): some clients
			// send type=application/dicom unquoted, with its slash, which
			// mime.ParseMediaType refuses.
			typ, params, err := parseContentType(item)
			if err != nil {
				return nil, ErrBadAccept
			}
			mr := MediaRange{Type: typ, Params: params, Q: 1}
			if q, ok := params["q"]; ok {
				f, err := strconv.ParseFloat(q, 64)
				if err != nil || f < 0 || f > 1 {
					return nil, ErrBadAccept
				}
				mr.Q = f
				delete(params, "q")
			}
			if mr.Q > 0 {
				out = append(out, mr)
			}
		}
	}
	if len(out) == 0 {
		return []MediaRange{{Type: "*/*", Params: map[string]string{}, Q: 1}}, nil
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Q > out[j].Q })
	return out, nil
}

// Matches reports whether the range accepts the media type typ
// (lower case, without parameters): equal, "*/*" or "major/*".
func (m MediaRange) Matches(typ string) bool {
	if m.Type == "*/*" || m.Type == typ {
		return true
	}
	major, _, _ := strings.Cut(typ, "/")
	return m.Type == major+"/*"
}

// splitQuoted splits s at sep outside double-quoted strings.
func splitQuoted(s string, sep byte) []string {
	var parts []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && quoted && i+1 < len(s):
			i++
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}
