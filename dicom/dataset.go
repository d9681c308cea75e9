package dicom

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"sort"
)

// Element is one attribute of a DataSet.
type Element struct {
	Tag Tag
	// VR as encoded (explicit) or from the dictionary (implicit). A UN
	// element of undefined length holding a sequence keeps VR "UN" and
	// carries Items (encoded in implicit VR little endian when written).
	VR string
	// Value holds the raw bytes in the data set's byte order, padding
	// included (not for SQ or encapsulated pixel data).
	Value []byte
	// Items of a sequence.
	Items []*DataSet
	// Fragments of encapsulated pixel data: the Basic Offset Table first,
	// then each fragment.
	Fragments [][]byte
	// Undefined reports that the element was encoded with undefined length.
	Undefined bool
	// Bulk reports a value ReadMetadata left in the object (bulk data):
	// Value and Fragments are nil, BulkLength is the value's length (-1
	// for encapsulated fragments).
	Bulk       bool
	BulkLength int64
}

// IsSequence reports whether e holds items.
func (e *Element) IsSequence() bool {
	return e.VR == "SQ" || (e.Items != nil && e.Fragments == nil)
}

// DataSet is an in-memory data set; Elements are sorted by tag.
type DataSet struct {
	Elements []*Element
	// big records that values are big endian (read from Explicit VR Big
	// Endian); Set/Put values must then be big endian too.
	big bool
}

// BigEndian reports whether the raw values are big endian.
func (ds *DataSet) BigEndian() bool { return ds != nil && ds.big }

func (ds *DataSet) index(t Tag) (int, bool) {
	i := sort.Search(len(ds.Elements), func(i int) bool { return ds.Elements[i].Tag >= t })
	return i, i < len(ds.Elements) && ds.Elements[i].Tag == t
}

// Get returns the element with tag t, or nil.
func (ds *DataSet) Get(t Tag) *Element {
	if ds == nil {
		return nil
	}
	if i, ok := ds.index(t); ok {
		return ds.Elements[i]
	}
	return nil
}

// Put inserts or replaces e, keeping Elements sorted.
func (ds *DataSet) Put(e *Element) {
	i, ok := ds.index(e.Tag)
	if ok {
		ds.Elements[i] = e
		return
	}
	ds.Elements = append(ds.Elements, nil)
	copy(ds.Elements[i+1:], ds.Elements[i:])
	ds.Elements[i] = e
}

// Delete removes the element with tag t if present.
func (ds *DataSet) Delete(t Tag) {
	if i, ok := ds.index(t); ok {
		ds.Elements = append(ds.Elements[:i], ds.Elements[i+1:]...)
	}
}

// Set stores a string value for t with its dictionary VR, encoded in the
// data set's Specific Character Set where the VR uses it (falling back to
// the raw UTF-8 bytes) and padded to even length (NUL for UI, space
// otherwise). Binary VRs (US, UL, ...) are not handled: use Put.
func (ds *DataSet) Set(t Tag, value string) {
	ds.SetIn(ds.charset(), t, value)
}

// SetIn is Set with the character set given: for the items of a sequence,
// which are encoded in the Specific Character Set of the data set holding
// the sequence.
func (ds *DataSet) SetIn(charset []string, t Tag, value string) {
	vr := VROf(t)
	var b []byte
	encoded := false
	if textVR(vr) {
		b, encoded = EncodeText(charset, value)
	}
	if !encoded {
		// The raw bytes, with room for the padding.
		b = make([]byte, len(value), len(value)+len(value)%2)
		copy(b, value)
	}
	if len(b)%2 == 1 {
		if vr == "UI" {
			b = append(b, 0)
		} else {
			b = append(b, ' ')
		}
	}
	ds.Put(&Element{Tag: t, VR: vr, Value: b})
}

func (ds *DataSet) charset() []string {
	if e := ds.Get(SpecificCharacterSet); e != nil {
		return splitCharset(e.Value)
	}
	return nil
}

// String returns the value of t decoded to UTF-8 with the data set's
// Specific Character Set, trimmed, values joined by '\'; "" when absent.
func (ds *DataSet) String(t Tag) string {
	e := ds.Get(t)
	if e == nil {
		return ""
	}
	return valueString(ds.charset(), effectiveVR(e.VR, t), e.Value, ds.big)
}

// StringIn is String with the character set given: for the items of a
// sequence, decoded with the Specific Character Set of the data set holding
// the sequence.
func (ds *DataSet) StringIn(charset []string, t Tag) string {
	e := ds.Get(t)
	if e == nil {
		return ""
	}
	return valueString(charset, effectiveVR(e.VR, t), e.Value, ds.big)
}

// Int returns the first value of t as an integer (US, SS, UL, SL, IS).
func (ds *DataSet) Int(t Tag) (int, bool) {
	e := ds.Get(t)
	if e == nil {
		return 0, false
	}
	return valueInt(effectiveVR(e.VR, t), e.Value, ds.big)
}

// ReadDataSet reads a whole data set encoded in ts from r (to EOF),
// refusing data sets larger than limit bytes (after inflation, for
// deflated syntaxes) with ErrTooLarge.
func ReadDataSet(r io.Reader, ts *TransferSyntax, limit int64) (*DataSet, error) {
	if ts == nil {
		return nil, ErrNoTransferSyntax
	}
	src, finish, release := openStream(r, ts)
	defer release()
	rd := &dsReader{d: decoder{r: src}, limit: limit}
	ds, err := rd.dataSet(codingOf(ts), -2, 0)
	if err != nil {
		return nil, err
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return ds, nil
}

type dsReader struct {
	d     decoder
	limit int64
	// Bulk mode (ReadMetadata, ReadBulk): binary values longer than bulk
	// bytes and pixel data are skipped (skipped counts their bytes, which
	// limit does not cover); path is the element being read (tags and
	// item indexes, top down); target and onBulk, when set, receive the
	// value at that path.
	bulk    int
	skipped int64
	path    []uint32
	target  []uint32
	onBulk  func(e *Element, value io.Reader) error
}

func (rd *dsReader) check(n uint32) error {
	if rd.d.pos-rd.skipped+int64(n) > rd.limit {
		return fmt.Errorf("%w: data set larger than %d bytes", ErrTooLarge, rd.limit)
	}
	return nil
}

// checkSpan checks a sequence's or item's length: in bulk mode its bulk
// values do not count, so only the values read are checked.
func (rd *dsReader) checkSpan(n uint32) error {
	if rd.bulk > 0 {
		return nil
	}
	return rd.check(n)
}

// dataSet reads elements until end: -2 means EOF (top level), -1 an item
// delimiter, otherwise the absolute offset where the item ends.
func (rd *dsReader) dataSet(c coding, end int64, depth int) (*DataSet, error) {
	ds := &DataSet{big: c.big}
	bitsAllocated := 0
	err := rd.d.eachElement(c, end, func(h header) error {
		if err := rd.check(0); err != nil {
			return err
		}
		e, err := rd.element(c, &h, depth, bitsAllocated)
		if err != nil {
			return err
		}
		if e.Tag == BitsAllocated && len(e.Value) >= 2 {
			bitsAllocated = int(c.u16(e.Value))
		}
		ds.Elements = append(ds.Elements, e)
		return nil
	})
	if err == nil && end == -1 {
		err = rd.check(0) // the item delimiter read
	}
	if err != nil {
		return nil, err
	}
	return ds, nil
}

func (rd *dsReader) element(c coding, h *header, depth, bitsAllocated int) (*Element, error) {
	d := &rd.d
	e := &Element{Tag: h.tag, VR: h.vr.String(), Undefined: h.length == undefinedLength}
	if rd.bulk > 0 {
		rd.path = append(rd.path, uint32(h.tag))
		defer func() { rd.path = rd.path[:len(rd.path)-1] }()
	}
	if isSequence(c, h) {
		if depth+1 > MaxDepth {
			return nil, fmt.Errorf("%w: at %v, offset %d", ErrTooDeep, h.tag, d.pos)
		}
		if !c.explicit {
			e.VR = "SQ"
		}
		ic := innerCoding(c, h)
		if h.length != undefinedLength {
			if err := rd.checkSpan(h.length); err != nil {
				return nil, err
			}
		}
		e.Items = []*DataSet{}
		err := d.eachItem(ic, h, func(ih *header, iend int64) error {
			if ih.length != undefinedLength {
				if err := rd.checkSpan(ih.length); err != nil {
					return err
				}
			}
			if rd.bulk > 0 {
				rd.path = append(rd.path, uint32(len(e.Items)))
			}
			item, err := rd.dataSet(ic, iend, depth+1)
			if rd.bulk > 0 {
				rd.path = rd.path[:len(rd.path)-1]
			}
			if err != nil {
				return err
			}
			e.Items = append(e.Items, item)
			return nil
		})
		if err != nil {
			return nil, err
		}
		return e, nil
	}
	if !c.explicit {
		e.VR = VROf(h.tag)
		if h.tag == PixelData {
			e.VR = "OW"
			if bitsAllocated > 0 && bitsAllocated <= 8 {
				e.VR = "OB"
			}
		}
	}
	if rd.bulk > 0 && rd.isBulk(e, h) {
		return e, rd.skipBulk(c, e, h)
	}
	if h.length == undefinedLength {
		var ih header
		e.Fragments = [][]byte{}
		for {
			if err := d.readHeader(c, &ih); err != nil {
				if err == io.EOF {
					return nil, truncated("encapsulated "+h.tag.String(), d.pos)
				}
				return nil, err
			}
			switch ih.tag {
			case Item:
				if ih.length == undefinedLength {
					return nil, malformed(d.pos, "fragment of undefined length in %v", h.tag)
				}
				if err := rd.check(ih.length); err != nil {
					return nil, err
				}
				v, err := d.readValue(ih.length, h.tag)
				if err != nil {
					return nil, err
				}
				e.Fragments = append(e.Fragments, v)
			case SequenceDelimitationItem:
				if ih.length != 0 {
					return nil, malformed(d.pos, "sequence delimiter with length %d", ih.length)
				}
				return e, nil
			default:
				return nil, malformed(d.pos, "unexpected %v in encapsulated %v", ih.tag, h.tag)
			}
		}
	}
	if err := rd.check(h.length); err != nil {
		return nil, err
	}
	v, err := d.readValue(h.length, h.tag)
	if err != nil {
		return nil, err
	}
	e.Value = v
	return e, nil
}

// WriteDataSet writes ds encoded in ts. Sequences and items are written
// with undefined length; encapsulated pixel data as fragments. Values are
// byte-swapped when ds and ts differ in byte order. Deflated syntaxes are
// compressed.
func WriteDataSet(w io.Writer, ds *DataSet, ts *TransferSyntax) error {
	if ts == nil {
		return ErrNoTransferSyntax
	}
	return withOutput(w, ts, func(bw *bufio.Writer) error {
		enc := &dsWriter{w: bw}
		return enc.dataSet(ds, codingOf(ts), 0)
	})
}

type dsWriter struct {
	w *bufio.Writer
	// buf holds an element header (12 bytes at most): no allocation per
	// header.
	buf [12]byte
}

func (wr *dsWriter) header(c coding, t Tag, v vr, length uint32) error {
	_, err := wr.w.Write(appendHeader(wr.buf[:0], c, t, v, length))
	return err
}

func (wr *dsWriter) dataSet(ds *DataSet, c coding, depth int) error {
	if ds == nil {
		return nil
	}
	if depth > MaxDepth {
		return ErrTooDeep
	}
	for _, e := range ds.Elements {
		if err := wr.element(ds, e, c, depth); err != nil {
			return err
		}
	}
	return nil
}

func (wr *dsWriter) element(ds *DataSet, e *Element, c coding, depth int) error {
	v := mkVR(e.VR)
	if len(e.VR) != 2 {
		v = mkVR(VROf(e.Tag))
	}
	if v == 0 {
		v = vrUN
	}
	switch {
	case e.Items != nil && e.Fragments == nil:
		ic := c
		if v == vrUN && c.explicit {
			ic = implicitLE
		} else {
			v = vrSQ
		}
		if err := wr.header(c, e.Tag, v, undefinedLength); err != nil {
			return err
		}
		for _, it := range e.Items {
			if err := wr.header(ic, Item, 0, undefinedLength); err != nil {
				return err
			}
			if err := wr.dataSet(it, ic, depth+1); err != nil {
				return err
			}
			if err := wr.header(ic, ItemDelimitationItem, 0, 0); err != nil {
				return err
			}
		}
		return wr.header(ic, SequenceDelimitationItem, 0, 0)
	case e.Fragments != nil:
		if err := wr.header(c, e.Tag, v, undefinedLength); err != nil {
			return err
		}
		for _, f := range e.Fragments {
			if err := wr.header(c, Item, 0, uint32(len(f))); err != nil {
				return err
			}
			if _, err := wr.w.Write(f); err != nil {
				return err
			}
		}
		return wr.header(c, SequenceDelimitationItem, 0, 0)
	}
	if int64(len(e.Value)) >= undefinedLength {
		return fmt.Errorf("%w: %v value too long", ErrTooLarge, e.Tag)
	}
	if c.explicit && !longVR(v) && len(e.Value) > 0xFFFF {
		v = vrUN
	}
	if err := wr.header(c, e.Tag, v, uint32(len(e.Value))); err != nil {
		return err
	}
	if ds.big != c.big {
		if n := swapSize(v); n > 1 {
			buf := append([]byte(nil), e.Value...)
			swapInPlace(buf, n)
			_, err := wr.w.Write(buf)
			return err
		}
	}
	_, err := wr.w.Write(e.Value)
	return err
}

// Bytes encodes ds in ts and returns the bytes.
func (ds *DataSet) Bytes(ts *TransferSyntax) ([]byte, error) {
	var b bytes.Buffer
	err := WriteDataSet(&b, ds, ts)
	return b.Bytes(), err
}
