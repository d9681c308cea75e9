package dicom

import (
	"bufio"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// maxKept bounds the number of attributes Scan retains.
const maxKept = 4096

// maxCharsetLen bounds Specific Character Set, which Scan always keeps.
const maxCharsetLen = 1024

// Attrs holds the top-level attributes Scan was asked to keep, with their
// raw value bytes in the data set's byte order.
type Attrs struct {
	ts      *TransferSyntax
	entries []attr // ascending by tag
	charset []string
	csOK    bool
	csDone  bool
	seqs    []keptSeq // ascending by tag
}

// keptSeq is a sequence kept by ScanWith: per first-level item, the kept
// attributes ascending by tag.
type keptSeq struct {
	tag   Tag
	big   bool // item values are big endian
	items [][]attr
}

type attr struct {
	tag   Tag
	vr    vr // 0 when the data set is implicit VR
	value []byte
}

func (a *Attrs) find(t Tag) *attr {
	i := sort.Search(len(a.entries), func(i int) bool { return a.entries[i].tag >= t })
	if i < len(a.entries) && a.entries[i].tag == t {
		return &a.entries[i]
	}
	return nil
}

// Raw returns the raw value of t as received (including padding).
func (a *Attrs) Raw(t Tag) ([]byte, bool) {
	if a == nil {
		return nil, false
	}
	e := a.find(t)
	if e == nil {
		return nil, false
	}
	return e.value, true
}

// VR returns the VR of t: the explicit VR from the stream, or the
// dictionary VR for implicit data sets.
func (a *Attrs) VR(t Tag) string {
	if a == nil {
		return ""
	}
	if e := a.find(t); e != nil && e.vr != 0 {
		return e.vr.String()
	}
	return VROf(t)
}

// Tags returns the tags kept, ascending.
func (a *Attrs) Tags() []Tag {
	if a == nil {
		return nil
	}
	ts := make([]Tag, len(a.entries))
	for i, e := range a.entries {
		ts[i] = e.tag
	}
	return ts
}

// TransferSyntax returns the syntax the attributes were read in.
func (a *Attrs) TransferSyntax() *TransferSyntax { return a.ts }

func (a *Attrs) ensureCharset() {
	if a.csDone {
		return
	}
	a.csDone = true
	a.csOK = true
	if raw, ok := a.Raw(SpecificCharacterSet); ok {
		a.charset = splitCharset(raw)
		a.csOK = CharsetSupported(a.charset)
	}
}

// CharsetUnsupported reports whether the data set's Specific Character Set
// names a repertoire Ward cannot decode; String then returns the bytes
// as Latin-1.
func (a *Attrs) CharsetUnsupported() bool {
	if a == nil {
		return false
	}
	a.ensureCharset()
	return !a.csOK
}

// Charset returns the Specific Character Set values.
func (a *Attrs) Charset() []string {
	if a == nil {
		return nil
	}
	a.ensureCharset()
	return a.charset
}

// String returns the value of t decoded to UTF-8 with the data set's
// Specific Character Set, leading/trailing padding trimmed per value,
// multiple values joined by '\'. Binary VRs (US, UL, SS, SL, FL, FD) are
// formatted as decimal text. Missing attributes yield "".
func (a *Attrs) String(t Tag) string {
	if a == nil {
		return ""
	}
	e := a.find(t)
	if e == nil {
		return ""
	}
	v := effectiveVR(e.vr.String(), t)
	a.ensureCharset()
	return valueString(a.charset, v, e.value, a.ts != nil && a.ts.BigEndian)
}

// Int returns the first value of t as an integer for US, SS, UL, SL, IS
// (and other numeric strings holding an integer).
func (a *Attrs) Int(t Tag) (int, bool) {
	if a == nil {
		return 0, false
	}
	e := a.find(t)
	if e == nil {
		return 0, false
	}
	v := effectiveVR(e.vr.String(), t)
	return valueInt(v, e.value, a.ts != nil && a.ts.BigEndian)
}

func valueInt(v string, raw []byte, big bool) (int, bool) {
	c := coding{big: big}
	switch v {
	case "US":
		if len(raw) < 2 {
			return 0, false
		}
		return int(c.u16(raw)), true
	case "SS":
		if len(raw) < 2 {
			return 0, false
		}
		return int(int16(c.u16(raw))), true
	case "UL":
		if len(raw) < 4 {
			return 0, false
		}
		return int(c.u32(raw)), true
	case "SL":
		if len(raw) < 4 {
			return 0, false
		}
		return int(int32(c.u32(raw))), true
	}
	s := string(raw)
	if i := strings.IndexByte(s, '\\'); i >= 0 {
		s = s[:i]
	}
	s = strings.Trim(s, " \x00")
	n, err := strconv.Atoi(strings.TrimPrefix(s, "+"))
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != float64(int(f)) {
			return 0, false
		}
		return int(f), true
	}
	return n, true
}

// Scan reads the whole data set encoded in ts from r, keeping the values of
// the top-level attributes for which want returns true (want may be nil for
// none; Specific Character Set is always kept). Every other value is
// skipped without being buffered, whatever its size. A kept value longer
// than maxValue bytes is an error wrapping ErrTooLarge; wanted elements of
// undefined length (encapsulated pixel data) and sequences are skipped
// (validated), not kept.
//
// Scan consumes r to EOF (for deflated syntaxes it inflates internally and
// then drains r), so a caller teeing r sees exactly the data set bytes.
// Structure is validated strictly: tags must ascend, items and delimiters
// must be well formed, nesting is bounded by MaxDepth. Truncated input yields
// an error wrapping both ErrMalformed and io.ErrUnexpectedEOF.
func Scan(r io.Reader, ts *TransferSyntax, want func(Tag) bool, maxValue int) (*Attrs, error) {
	return ScanWith(r, ts, want, maxValue, nil)
}

// Defaults of KeepSequences.
const (
	DefaultMaxKeptItems = 64
	DefaultMaxKeptBytes = 16 << 10
)

// KeepSequences asks ScanWith to keep some attributes of the first-level
// items of some top-level sequences (for indexing sequence matching keys).
// What is kept is bounded: at most MaxItems items per sequence (further
// items are validated and skipped) and at most MaxBytes value bytes per
// sequence (a value that would exceed the budget is skipped, not kept, and
// so are the values after it). Nested sequences, values of undefined length
// and attributes Item does not want are skipped.
type KeepSequences struct {
	// Item returns, for a top-level sequence tag, which attributes of its
	// items to keep; nil skips the sequence.
	Item func(seq Tag) func(Tag) bool
	// MaxItems bounds the items kept per sequence (<= 0: DefaultMaxKeptItems).
	MaxItems int
	// MaxBytes bounds the value bytes kept per sequence (<= 0:
	// DefaultMaxKeptBytes).
	MaxBytes int
}

// ScanWith is Scan that also keeps the items of the sequences seqs asks
// for (nil: none, as Scan); Attrs.Items returns them.
func ScanWith(r io.Reader, ts *TransferSyntax, want func(Tag) bool, maxValue int, seqs *KeepSequences) (*Attrs, error) {
	if ts == nil {
		return nil, ErrNoTransferSyntax
	}
	if maxValue < 0 {
		maxValue = 0
	}
	src, finish, release := openStream(r, ts)
	defer release()
	d := &decoder{r: src, ts: ts}
	a := &Attrs{ts: ts}
	if _, err := d.scanTop(codingOf(ts), a, want, maxValue, seqs, nil); err != nil {
		return nil, err
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return a, nil
}

// scanTop is the top-level element loop of ScanWith: it keeps into a the
// values want asks for (within maxValue) and the sequences seqs asks for,
// and validates and skips everything else, until the end of the stream
// (nil, nil) or an element for which stop returns true: that element's
// header is returned with its value not yet read (the element was checked
// for order and pixel encoding). Every reader of top-level attributes goes
// through this one loop.
func (d *decoder) scanTop(c coding, a *Attrs, want func(Tag) bool, maxValue int, seqs *KeepSequences, stop func(*header) bool) (*header, error) {
	var h header
	var last Tag
	first := true
	for {
		err := d.readHeader(c, &h)
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if err := d.checkOrder(&h, &last, &first); err != nil {
			return nil, err
		}
		if err := d.checkPixel(c, &h, false); err != nil {
			return nil, err
		}
		if stop != nil && stop(&h) {
			return &h, nil
		}
		if seqs != nil && seqs.Item != nil && isSequence(c, &h) {
			if item := seqs.Item(h.tag); item != nil {
				ks, err := d.keepSequence(c, &h, item, seqs)
				if err != nil {
					return nil, err
				}
				a.seqs = append(a.seqs, ks)
				continue
			}
		}
		keep := h.length != undefinedLength && (h.tag == SpecificCharacterSet || (want != nil && want(h.tag))) && !isSequence(c, &h)
		if !keep {
			if err := d.skipElement(c, &h, 0); err != nil {
				return nil, err
			}
			continue
		}
		limit := maxValue
		if h.tag == SpecificCharacterSet && limit < maxCharsetLen {
			limit = maxCharsetLen
		}
		if int64(h.length) > int64(limit) {
			return nil, fmt.Errorf("%w: %v has %d bytes, limit %d", ErrTooLarge, h.tag, h.length, limit)
		}
		if len(a.entries) >= maxKept {
			return nil, fmt.Errorf("%w: more than %d attributes kept", ErrTooLarge, maxKept)
		}
		v, err := d.readValue(h.length, h.tag)
		if err != nil {
			return nil, err
		}
		a.entries = append(a.entries, attr{tag: h.tag, vr: h.vr, value: v})
	}
}

// keepSequence reads the items of the top-level sequence whose header is h,
// keeping the wanted attributes of the first items within the bounds of
// seqs; everything else is validated and skipped as skipSequence does.
func (d *decoder) keepSequence(c coding, h *header, want func(Tag) bool, seqs *KeepSequences) (keptSeq, error) {
	maxItems, budget := seqs.MaxItems, seqs.MaxBytes
	if maxItems <= 0 {
		maxItems = DefaultMaxKeptItems
	}
	if budget <= 0 {
		budget = DefaultMaxKeptBytes
	}
	ic := innerCoding(c, h)
	ks := keptSeq{tag: h.tag, big: ic.big}
	const depth = 1
	err := d.eachItem(ic, h, func(ih *header, _ int64) error {
		if len(ks.items) >= maxItems {
			return d.skipItem(ic, ih.length, depth)
		}
		it, err := d.keepItem(ic, ih.length, want, &budget)
		if err != nil {
			return err
		}
		ks.items = append(ks.items, it)
		return nil
	})
	return ks, err
}

// keepItem is skipItem keeping the wanted attributes while *budget allows.
func (d *decoder) keepItem(c coding, length uint32, want func(Tag) bool, budget *int) ([]attr, error) {
	const depth = 1
	var kept []attr
	err := d.eachElement(c, itemEnd(d, length), func(h header) error {
		if err := d.checkPixel(c, &h, true); err != nil {
			return err
		}
		keep := h.length != undefinedLength && !isSequence(c, &h) && want(h.tag)
		if keep && int64(h.length) > int64(*budget) {
			keep, *budget = false, 0 // keep nothing after a value that did not fit
		}
		if !keep {
			return d.skipElement(c, &h, depth)
		}
		v, err := d.readValue(h.length, h.tag)
		if err != nil {
			return err
		}
		*budget -= int(h.length)
		kept = append(kept, attr{tag: h.tag, vr: h.vr, value: v})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return kept, nil
}

// Items returns the kept items of the top-level sequence t (see
// KeepSequences): per item, the kept attributes decoded as String does,
// with the data set's Specific Character Set. nil when t was not kept (not
// asked for, absent or empty).
func (a *Attrs) Items(t Tag) []map[Tag]string {
	if a == nil {
		return nil
	}
	for i := range a.seqs {
		ks := &a.seqs[i]
		if ks.tag != t {
			continue
		}
		if len(ks.items) == 0 {
			return nil
		}
		a.ensureCharset()
		out := make([]map[Tag]string, len(ks.items))
		for j, it := range ks.items {
			m := make(map[Tag]string, len(it))
			for _, e := range it {
				m[e.tag] = valueString(a.charset, effectiveVR(e.vr.String(), e.tag), e.value, ks.big)
			}
			out[j] = m
		}
		return out
	}
	return nil
}

// openStream prepares a buffered reader over the data set bytes of r,
// inflating when ts is deflated. finish drains what follows the deflate
// stream so that r is read to EOF.
func openStream(r io.Reader, ts *TransferSyntax) (src *bufio.Reader, finish func() error, release func()) {
	if !ts.Deflated {
		br, rel := bufferedReader(r)
		return br, func() error { return nil }, rel
	}
	raw, rel1 := bufferedReader(r)
	fr := flate.NewReader(raw)
	br, rel2 := bufferedReader(fr)
	finish = func() error {
		if _, err := io.Copy(io.Discard, raw); err != nil {
			return err
		}
		return nil
	}
	release = func() { rel2(); fr.Close(); rel1() }
	return br, finish, release
}

// inflateErr converts flate errors into package errors.
func inflateErr(err error) error {
	var ce flate.CorruptInputError
	if errors.As(err, &ce) {
		return fmt.Errorf("%w: deflate stream: %w", ErrMalformed, err)
	}
	return err
}

// effectiveVR resolves the VR used to interpret a value: the dictionary VR
// for implicit data sets and for UN elements of known tags.
func effectiveVR(v string, t Tag) string {
	if v == "" || v == "UN" {
		if d := VROf(t); d != "UN" && d != "SQ" && d != "" {
			return d
		}
		if v == "" {
			return "UN"
		}
	}
	return v
}
