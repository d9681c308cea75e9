package dicom

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// MaxEditValue bounds the values Rewrite hands to an editor: a longer value
// (and every encapsulated pixel data element) is shown by its header only
// and streamed through or dropped, never buffered.
const MaxEditValue = 64 << 10

// MaxLookahead bounds the bytes Rewrite holds while it reads ahead to the
// attributes its Prepare step asks for.
const MaxLookahead = 32 << 20

// RewriteElement is one element of the data set being rewritten, as shown
// to Rewriter.Edit.
type RewriteElement struct {
	Tag Tag
	// VR is the explicit VR, or the dictionary's for implicit VR ("UN"
	// when unknown).
	VR string
	// Path holds the tags of the enclosing sequences, outermost first;
	// it is empty at the top level.
	Path []Tag
	// Length is the value length as encoded (0xFFFFFFFF for sequences and
	// encapsulated pixel data of undefined length).
	Length uint32
	// Value is the raw value (in the data set's byte order) when it is at
	// most MaxEditValue bytes long and not a sequence or encapsulated;
	// nil otherwise.
	Value []byte
	// Sequence reports a sequence (its items are edited in turn when kept).
	Sequence bool
	// BigEndian reports big endian values.
	BigEndian bool
	// DataSet numbers the data set the element is in: 0 for the top level,
	// a new number for each item, in stream order (private creators are
	// scoped by it).
	DataSet int64
}

// EditOp is what Rewrite does with an element.
type EditOp int

const (
	// EditKeep copies the element; a sequence is kept and its items'
	// elements are edited in turn.
	EditKeep EditOp = iota
	// EditRemove drops the element.
	EditRemove
	// EditReplace writes Edit.Element in its place (same tag expected):
	// a value (raw, in the data set's byte order) or a sequence of Items.
	EditReplace
)

// Edit is an editor's decision on one element.
type Edit struct {
	Op      EditOp
	Element *Element
}

// Rewriter edits a data set as it streams through Rewrite.
type Rewriter struct {
	// Lookahead names the top-level attributes Prepare needs; Rewrite
	// reads ahead (holding at most MaxLookahead bytes) to the first
	// top-level element past Until, or the end, before writing anything.
	Lookahead func(Tag) bool
	Until     Tag
	// Prepare sees the attributes read ahead (values up to MaxEditValue
	// bytes) and may refuse the object; it returns top-level elements to
	// add (any order): each replaces an element of the same tag.
	Prepare func(a *Attrs) ([]*Element, error)
	// Edit decides each element's fate (nil: keep everything).
	Edit func(e *RewriteElement) Edit
}

// Rewrite copies the data set encoded in ts from src to dst in the same
// transfer syntax, element by element with bounded memory, applying rw:
// values are replaced or dropped, sequences recursed into, elements added.
// Every sequence and item is written with undefined length and group
// length elements (gggg,0000) are dropped, since lengths change. Pixel
// data, native or encapsulated, is streamed through. src is read to EOF;
// the input is validated as strictly as Scan does.
func Rewrite(dst io.Writer, src io.Reader, ts *TransferSyntax, rw *Rewriter) error {
	if ts == nil {
		return ErrNoTransferSyntax
	}
	var adds []*Element
	if rw.Prepare != nil {
		rec := &recorder{r: src, max: MaxLookahead}
		a, err := lookahead(rec, ts, rw.Lookahead, rw.Until)
		if err != nil {
			return err
		}
		if adds, err = rw.Prepare(a); err != nil {
			return err
		}
		src = io.MultiReader(bytes.NewReader(rec.buf), src)
	}
	adds = append([]*Element(nil), adds...)
	sortElements(adds)
	in, finish, release := openStream(src, ts)
	defer release()
	return withOutput(dst, ts, func(bw *bufio.Writer) error {
		c := codingOf(ts)
		r := &rewriter{d: decoder{r: in, ts: ts}, w: bw, rw: rw, buf: make([]byte, bufSize), adds: adds,
			dw: &dsWriter{w: bw}, addSet: &DataSet{big: c.big}}
		if err := r.dataSet(c, -2, 0, nil); err != nil {
			return err
		}
		if err := r.flushAdds(c, ^Tag(0)); err != nil {
			return err
		}
		return finish()
	})
}

func sortElements(es []*Element) {
	for i := 1; i < len(es); i++ {
		for j := i; j > 0 && es[j].Tag < es[j-1].Tag; j-- {
			es[j], es[j-1] = es[j-1], es[j]
		}
	}
}

// recorder keeps the bytes read through it, up to max.
type recorder struct {
	r   io.Reader
	buf []byte
	max int
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	if len(r.buf) > r.max {
		return n, fmt.Errorf("%w: more than %d bytes before the attributes needed to decide", ErrTooLarge, r.max)
	}
	return n, err
}

// lookahead scans the top-level attributes want asks for up to the first
// element past until.
func lookahead(r io.Reader, ts *TransferSyntax, want func(Tag) bool, until Tag) (*Attrs, error) {
	src, _, release := openStream(r, ts)
	defer release()
	d := &decoder{r: src, ts: ts}
	a := &Attrs{ts: ts}
	_, err := d.scanTop(codingOf(ts), a, want, MaxEditValue, nil, func(h *header) bool { return h.tag > until })
	return a, err
}

type rewriter struct {
	d      decoder
	w      *bufio.Writer
	dw     *dsWriter
	rw     *Rewriter
	buf    []byte
	hdr    []byte
	adds   []*Element
	addSet *DataSet
	items  int64
}

func (r *rewriter) header(c coding, tag Tag, v vr, length uint32) error {
	r.hdr = appendHeader(r.hdr[:0], c, tag, v, length)
	_, err := r.w.Write(r.hdr)
	return err
}

// flushAdds writes the added elements with tags below before.
func (r *rewriter) flushAdds(c coding, before Tag) error {
	for len(r.adds) > 0 && r.adds[0].Tag < before {
		if err := r.dw.element(r.addSet, r.adds[0], c, 0); err != nil {
			return err
		}
		r.adds = r.adds[1:]
	}
	return nil
}

// dataSet rewrites elements until end (-2 EOF, -1 item delimiter, else
// absolute offset).
func (r *rewriter) dataSet(c coding, end int64, depth int, path []Tag) error {
	d := &r.d
	id := int64(0)
	if end != -2 {
		r.items++
		id = r.items
	}
	top := end == -2
	return d.eachElement(c, end, func(h header) error {
		if err := d.checkPixel(c, &h, !top); err != nil {
			return err
		}
		if top {
			if err := r.flushAdds(c, h.tag); err != nil {
				return err
			}
			if len(r.adds) > 0 && r.adds[0].Tag == h.tag {
				// Replaced by an added element.
				if err := d.skipElement(c, &h, depth); err != nil {
					return err
				}
				return r.flushAdds(c, h.tag+1)
			}
		}
		return r.element(c, &h, depth, path, id)
	})
}

func (r *rewriter) element(c coding, h *header, depth int, path []Tag, id int64) error {
	d := &r.d
	seq := isSequence(c, h)
	if h.tag.Element() == 0 && h.length != undefinedLength && !seq {
		return d.skip(int64(h.length), h.tag) // group length: dropped
	}
	v := h.vr
	if !c.explicit {
		v = mkVR(VROf(h.tag))
	}
	if v == 0 {
		v = vrUN
	}
	re := RewriteElement{Tag: h.tag, VR: v.String(), Path: path, Length: h.length, Sequence: seq, BigEndian: c.big, DataSet: id}
	if seq {
		re.VR = "SQ"
		if c.explicit && h.vr == vrUN {
			re.VR = "UN"
		}
	}
	var value []byte
	if !seq && h.length != undefinedLength && h.length <= MaxEditValue {
		var err error
		if value, err = d.readValue(h.length, h.tag); err != nil {
			return err
		}
		re.Value = value
	}
	ed := Edit{}
	if r.rw.Edit != nil {
		ed = r.rw.Edit(&re)
	}
	switch ed.Op {
	case EditRemove:
		if value != nil {
			return nil
		}
		return d.skipElement(c, h, depth)
	case EditReplace:
		if value == nil {
			if err := d.skipElement(c, h, depth); err != nil {
				return err
			}
		}
		if ed.Element == nil {
			return nil
		}
		return r.dw.element(&DataSet{big: c.big}, ed.Element, c, depth)
	}
	if seq {
		return r.sequence(c, h, v, depth, path)
	}
	if h.length == undefinedLength {
		return r.fragments(c, h, v)
	}
	if err := r.header(c, h.tag, v, h.length); err != nil {
		return err
	}
	if value != nil {
		_, err := r.w.Write(value)
		return err
	}
	return r.copyValue(int64(h.length), h.tag)
}

func (r *rewriter) sequence(c coding, h *header, v vr, depth int, path []Tag) error {
	d := &r.d
	if depth+1 > MaxDepth {
		return fmt.Errorf("%w: at %v, offset %d", ErrTooDeep, h.tag, d.pos)
	}
	ic := innerCoding(c, h)
	if v != vrUN {
		v = vrSQ
	}
	if err := r.header(c, h.tag, v, undefinedLength); err != nil {
		return err
	}
	inner := append(path[:len(path):len(path)], h.tag)
	err := d.eachItem(ic, h, func(_ *header, iend int64) error {
		if err := r.header(ic, Item, 0, undefinedLength); err != nil {
			return err
		}
		if err := r.dataSet(ic, iend, depth+1, inner); err != nil {
			return err
		}
		return r.header(ic, ItemDelimitationItem, 0, 0)
	})
	if err != nil {
		return err
	}
	return r.header(ic, SequenceDelimitationItem, 0, 0)
}

// fragments streams encapsulated pixel data through.
func (r *rewriter) fragments(c coding, h *header, v vr) error {
	d := &r.d
	if err := r.header(c, h.tag, v, undefinedLength); err != nil {
		return err
	}
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
			if err := r.header(c, Item, 0, ih.length); err != nil {
				return err
			}
			if err := r.copyValue(int64(ih.length), h.tag); err != nil {
				return err
			}
		case SequenceDelimitationItem:
			if ih.length != 0 {
				return malformed(d.pos, "sequence delimiter with length %d", ih.length)
			}
			return r.header(c, SequenceDelimitationItem, 0, 0)
		default:
			return malformed(d.pos, "unexpected %v in encapsulated %v", ih.tag, h.tag)
		}
	}
}

func (r *rewriter) copyValue(n int64, tag Tag) error {
	for n > 0 {
		chunk := int64(len(r.buf))
		if chunk > n {
			chunk = n
		}
		b := r.buf[:chunk]
		m, err := io.ReadFull(r.d.r, b)
		r.d.pos += int64(m)
		if err != nil {
			return r.d.ioErr(err, "value of "+tag.String())
		}
		if _, err := r.w.Write(b); err != nil {
			return err
		}
		n -= chunk
	}
	return nil
}
