package dicom

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
)

const (
	undefinedLength = 0xFFFFFFFF
	bufSize         = 64 << 10
)

// coding is the element encoding in force: a nested UN value of undefined
// length switches to implicit VR little endian (PS3.5 6.2.2).
type coding struct {
	explicit bool
	big      bool
}

func codingOf(ts *TransferSyntax) coding { return coding{explicit: ts.Explicit, big: ts.BigEndian} }

var implicitLE = coding{}

func (c coding) u16(b []byte) uint16 {
	if c.big {
		return binary.BigEndian.Uint16(b)
	}
	return binary.LittleEndian.Uint16(b)
}

func (c coding) u32(b []byte) uint32 {
	if c.big {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

func (c coding) order() binary.ByteOrder {
	if c.big {
		return binary.BigEndian
	}
	return binary.LittleEndian
}

// vr is a two-letter value representation packed into 16 bits; 0 when the
// encoding is implicit.
type vr uint16

func mkVR(s string) vr {
	if len(s) != 2 {
		return 0
	}
	return vr(s[0])<<8 | vr(s[1])
}

// vrStrings holds the string of every VR of two upper-case letters (each
// standard VR among them), indexed by vrIndex: String allocates nothing
// for them, once for every element decoded otherwise.
var vrStrings = func() (t [26 * 26]string) {
	for i := range t {
		t[i] = string([]byte{'A' + byte(i/26), 'A' + byte(i%26)})
	}
	return t
}()

func (v vr) String() string {
	if v == 0 {
		return ""
	}
	hi, lo := byte(v>>8)-'A', byte(v)-'A' // wrap around below 'A'
	if hi < 26 && lo < 26 {
		return vrStrings[int(hi)*26+int(lo)]
	}
	return string([]byte{byte(v >> 8), byte(v)})
}

var (
	vrOB = mkVR("OB")
	vrOD = mkVR("OD")
	vrOF = mkVR("OF")
	vrOL = mkVR("OL")
	vrOV = mkVR("OV")
	vrOW = mkVR("OW")
	vrSQ = mkVR("SQ")
	vrUC = mkVR("UC")
	vrUN = mkVR("UN")
	vrUR = mkVR("UR")
	vrUT = mkVR("UT")
	vrSV = mkVR("SV")
	vrUV = mkVR("UV")
	vrUL = mkVR("UL")
	vrLO = mkVR("LO")
)

// knownVRs lists the VRs of PS3.5 Table 6.2-1.
var knownVRs = map[vr]bool{}

func init() {
	for _, s := range []string{"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"} {
		knownVRs[mkVR(s)] = true
	}
}

// longVR reports whether explicit VR headers for v use 2 reserved bytes and
// a 4-byte length. VRs unknown to this implementation use the long form, as
// every VR added since 2000 does.
func longVR(v vr) bool {
	switch v {
	case vrOB, vrOD, vrOF, vrOL, vrOV, vrOW, vrSQ, vrUC, vrUN, vrUR, vrUT, vrSV, vrUV:
		return true
	}
	return !knownVRs[v]
}

type header struct {
	tag    Tag
	vr     vr
	length uint32
}

// decoder reads elements from a buffered stream and counts bytes consumed.
type decoder struct {
	r   *bufio.Reader
	pos int64
	// ts, when set, is the transfer syntax whose pixel data length form
	// checkPixel enforces (Scan sets it; the other readers do not).
	ts *TransferSyntax
}

func truncated(what string, pos int64) error {
	return fmt.Errorf("%w: truncated %s at offset %d: %w", ErrMalformed, what, pos, io.ErrUnexpectedEOF)
}

func malformed(pos int64, format string, args ...any) error {
	return fmt.Errorf("%w: offset %d: %s", ErrMalformed, pos, fmt.Sprintf(format, args...))
}

// readHeader reads one element, item or delimiter header. It returns io.EOF
// (unwrapped) only when the stream ends cleanly before the first byte.
func (d *decoder) readHeader(c coding, h *header) error {
	b, err := d.r.Peek(8)
	if len(b) < 8 {
		if len(b) == 0 && err == io.EOF {
			return io.EOF
		}
		return d.ioErr(err, "element header")
	}
	g, e := c.u16(b[0:2]), c.u16(b[2:4])
	h.tag = Tag(g)<<16 | Tag(e)
	if g == 0xFFFE || !c.explicit {
		h.vr = 0
		h.length = c.u32(b[4:8])
		d.r.Discard(8)
		d.pos += 8
		return nil
	}
	if b[4] < 'A' || b[4] > 'Z' || b[5] < 'A' || b[5] > 'Z' {
		return malformed(d.pos, "invalid VR bytes %#02x %#02x in element %v", b[4], b[5], h.tag)
	}
	h.vr = vr(b[4])<<8 | vr(b[5])
	if !longVR(h.vr) {
		h.length = uint32(c.u16(b[6:8]))
		d.r.Discard(8)
		d.pos += 8
		return nil
	}
	b, err = d.r.Peek(12)
	if len(b) < 12 {
		return d.ioErr(err, "element header")
	}
	h.length = c.u32(b[8:12])
	d.r.Discard(12)
	d.pos += 12
	return nil
}

// skip discards n value bytes without buffering them.
func (d *decoder) skip(n int64, what Tag) error {
	for n > 0 {
		chunk := n
		if chunk > 1<<30 {
			chunk = 1 << 30
		}
		m, err := d.r.Discard(int(chunk))
		d.pos += int64(m)
		n -= int64(m)
		if err != nil {
			return d.ioErr(err, "value of "+what.String())
		}
	}
	return nil
}

// readValue reads exactly n bytes into a new slice; the caller has bounded n.
func (d *decoder) readValue(n uint32, what Tag) ([]byte, error) {
	buf := make([]byte, n)
	m, err := io.ReadFull(d.r, buf)
	d.pos += int64(m)
	if err != nil {
		return nil, d.ioErr(err, "value of "+what.String())
	}
	return buf, nil
}

// isSequence decides whether an element header starts a sequence.
// In implicit VR the dictionary decides; an undefined length other than
// on Pixel Data always means a sequence. Explicit UN with undefined length
// is a sequence encoded in implicit VR little endian.
func isSequence(c coding, h *header) bool {
	if c.explicit {
		if h.vr == vrSQ {
			return true
		}
		return h.vr == vrUN && h.length == undefinedLength
	}
	if h.length == undefinedLength {
		return h.tag != PixelData
	}
	return VROf(h.tag) == "SQ"
}

// innerCoding is the coding of the items of a sequence.
func innerCoding(c coding, h *header) coding {
	if c.explicit && h.vr == vrUN {
		return implicitLE
	}
	return c
}

// isFragments reports encapsulated pixel data (undefined length, not SQ).
func isFragments(c coding, h *header) bool {
	return h.length == undefinedLength && !isSequence(c, h)
}

// skipSequence consumes the items of a sequence whose header was h,
// validating item structure.
func (d *decoder) skipSequence(c coding, h *header, depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("%w: at %v, offset %d", ErrTooDeep, h.tag, d.pos)
	}
	ic := innerCoding(c, h)
	return d.eachItem(ic, h, func(ih *header, _ int64) error {
		return d.skipItem(ic, ih.length, depth)
	})
}

// eachElement reads the element headers of a data set until end (-2:
// EOF, the top level; -1: an item delimiter; else the absolute offset
// where the item ends), checking the bounds, the delimiter and the order
// of the tags, and calls fn with each header; fn reads or skips the
// element's value. The one walk over a data set's elements, as eachItem
// is over a sequence's items.
func (d *decoder) eachElement(c coding, end int64, fn func(h header) error) error {
	var h header
	var last Tag
	first := true
	for {
		if end >= 0 && d.pos >= end {
			if d.pos > end {
				return malformed(d.pos, "elements overrun item")
			}
			return nil
		}
		err := d.readHeader(c, &h)
		if err == io.EOF && end == -2 {
			return nil
		}
		if err == io.EOF {
			return truncated("item", d.pos)
		}
		if err != nil {
			return err
		}
		if h.tag == ItemDelimitationItem && end >= 0 {
			return malformed(d.pos, "item delimiter in defined-length item")
		}
		if h.tag == ItemDelimitationItem && end == -1 {
			if h.length != 0 {
				return malformed(d.pos, "item delimiter with length %d", h.length)
			}
			return nil
		}
		if err := d.checkOrder(&h, &last, &first); err != nil {
			return err
		}
		if err := fn(h); err != nil { // by value: h stays on the stack
			return err
		}
	}
}

// eachItem reads the items of the sequence whose header was h (read just
// now: its value starts at d.pos), in the sequence's inner coding ic, and
// checks their structure: items only, a defined length neither overrun
// nor ended by a delimiter, an undefined length ended by a zero-length
// Sequence Delimitation Item, which it consumes. item is called after
// each item's header with the offset its value ends at (-1: undefined
// length); it must consume the item's value. Every walk over a
// sequence's items (skipping, transcoding, rewriting) goes through here.
func (d *decoder) eachItem(ic coding, h *header, item func(ih *header, end int64) error) error {
	end := int64(-1)
	if h.length != undefinedLength {
		end = d.pos + int64(h.length)
	}
	var ih header
	for {
		if end >= 0 && d.pos >= end {
			if d.pos > end {
				return malformed(d.pos, "items overrun sequence %v", h.tag)
			}
			return nil
		}
		if err := d.readHeader(ic, &ih); err != nil {
			if err == io.EOF {
				return truncated("sequence "+h.tag.String(), d.pos)
			}
			return err
		}
		switch ih.tag {
		case Item:
			iend := int64(-1)
			if ih.length != undefinedLength {
				iend = d.pos + int64(ih.length)
			}
			if err := item(&ih, iend); err != nil {
				return err
			}
		case SequenceDelimitationItem:
			if end >= 0 {
				return malformed(d.pos, "sequence delimiter in defined-length sequence %v", h.tag)
			}
			if ih.length != 0 {
				return malformed(d.pos, "sequence delimiter with length %d", ih.length)
			}
			return nil
		default:
			return malformed(d.pos, "unexpected %v in sequence %v", ih.tag, h.tag)
		}
	}
}

// skipItem consumes the elements of one item of the given length.
func (d *decoder) skipItem(c coding, length uint32, depth int) error {
	return d.eachElement(c, itemEnd(d, length), func(h header) error {
		if err := d.checkPixel(c, &h, true); err != nil {
			return err
		}
		return d.skipElement(c, &h, depth)
	})
}

// itemEnd is the end of an item of length that starts here, as
// eachElement takes it: -1 for an undefined length.
func itemEnd(d *decoder, length uint32) int64 {
	if length == undefinedLength {
		return -1
	}
	return d.pos + int64(length)
}

// checkOrder enforces strictly ascending tags within a data set and rejects
// stray item/delimiter tags.
func (d *decoder) checkOrder(h *header, last *Tag, first *bool) error {
	if h.tag.Group() == 0xFFFE {
		return malformed(d.pos, "unexpected %v in data set", h.tag)
	}
	if !*first && h.tag <= *last {
		return malformed(d.pos, "element %v out of order after %v", h.tag, *last)
	}
	*first = false
	*last = h.tag
	return nil
}

// skipElement consumes the value of an element whose header has been read.
func (d *decoder) skipElement(c coding, h *header, depth int) error {
	if isSequence(c, h) {
		return d.skipSequence(c, h, depth+1)
	}
	if h.length == undefinedLength {
		return d.skipFragments(c, h)
	}
	return d.skip(int64(h.length), h.tag)
}

// skipFragments consumes encapsulated pixel data: items of defined length
// up to the sequence delimiter.
func (d *decoder) skipFragments(c coding, h *header) error {
	var ih header
	for {
		if err := d.readHeader(c, &ih); err != nil {
			if err == io.EOF {
				return truncated("encapsulated "+h.tag.String(), d.pos)
			}
			return err
		}
		switch ih.tag {
		case Item:
			if ih.length == undefinedLength {
				return malformed(d.pos, "fragment of undefined length in %v", h.tag)
			}
			if err := d.skip(int64(ih.length), h.tag); err != nil {
				return err
			}
		case SequenceDelimitationItem:
			if ih.length != 0 {
				return malformed(d.pos, "sequence delimiter with length %d", ih.length)
			}
			return nil
		default:
			return malformed(d.pos, "unexpected %v in encapsulated %v", ih.tag, h.tag)
		}
	}
}

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}

// bufferedReader returns r itself when it is already a large enough
// *bufio.Reader, else a pooled one; release must be called when done.
func bufferedReader(r io.Reader) (br *bufio.Reader, release func()) {
	if b, ok := r.(*bufio.Reader); ok && b.Size() >= bufSize {
		return b, func() {}
	}
	b := readerPool.Get().(*bufio.Reader)
	b.Reset(r)
	return b, func() { b.Reset(nil); readerPool.Put(b) }
}

func float32frombits(u uint32) float32 { return math.Float32frombits(u) }
func float64frombits(u uint64) float64 { return math.Float64frombits(u) }

// ioErr classifies a read error: end of input becomes a truncation error,
// corrupt deflate data becomes ErrMalformed, anything else passes through.
func (d *decoder) ioErr(err error, what string) error {
	if err == nil || err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return truncated(what, d.pos)
	}
	return inflateErr(err)
}

func (c coding) appendU16(dst []byte, v uint16) []byte {
	if c.big {
		return binary.BigEndian.AppendUint16(dst, v)
	}
	return binary.LittleEndian.AppendUint16(dst, v)
}

func (c coding) appendU32(dst []byte, v uint32) []byte {
	if c.big {
		return binary.BigEndian.AppendUint32(dst, v)
	}
	return binary.LittleEndian.AppendUint32(dst, v)
}
