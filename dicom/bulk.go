package dicom

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Bulk data (PS3.18 8.4.1.3 and F.2.6): reading a data set's metadata with
// its large binary values left in the object, and reading one such value
// back by its path.

// ErrNoBulk reports that no element is at the path ReadBulk was given, or
// that the element there holds no bulk value (a sequence).
var ErrNoBulk = errors.New("dicom: no bulk data at that path")

// ErrBulkEncapsulated reports that the element at the path ReadBulk was
// given holds encapsulated fragments, which it does not return as one
// value.
var ErrBulkEncapsulated = errors.New("dicom: bulk data is encapsulated fragments")

// Tags whose value is bulk data whatever its length: the pixel data
// elements (PS3.3 C.7.6.3, C.7.6.24).
const (
	FloatPixelData       Tag = 0x7FE00008
	DoubleFloatPixelData Tag = 0x7FE00009
)

// binaryVR reports the VRs whose values are bytes, not text or numbers.
func binaryVR(v string) bool {
	switch v {
	case "OB", "OD", "OF", "OL", "OV", "OW", "UN":
		return true
	}
	return false
}

// isBulk decides whether e (header h, VR resolved) is left in the object.
func (rd *dsReader) isBulk(e *Element, h *header) bool {
	switch {
	case h.length == undefinedLength: // encapsulated fragments
		return true
	case e.Tag == PixelData || e.Tag == FloatPixelData || e.Tag == DoubleFloatPixelData:
		return true
	}
	return binaryVR(effectiveVR(e.VR, e.Tag)) && int64(h.length) > int64(rd.bulk)
}

// skipBulk consumes a bulk value, or hands it to onBulk when it is the
// target.
func (rd *dsReader) skipBulk(c coding, e *Element, h *header) error {
	d := &rd.d
	e.Bulk = true
	e.BulkLength = int64(h.length)
	start := d.pos
	defer func() { rd.skipped += d.pos - start }()
	if h.length == undefinedLength {
		e.BulkLength = -1
		if rd.onBulk != nil && slices.Equal(rd.path, rd.target) {
			return ErrBulkEncapsulated
		}
		return d.skipFragments(c, h)
	}
	if rd.onBulk != nil && slices.Equal(rd.path, rd.target) {
		vr := &valueReader{r: d.r, n: int64(h.length), tag: h.tag, d: d}
		err := rd.onBulk(e, vr)
		if err == nil {
			err = errBulkDone
		}
		return err
	}
	return d.skip(int64(h.length), h.tag)
}

var errBulkDone = errors.New("dicom: bulk value read")

// valueReader reads the n bytes of a value; the stream ending before
// them is a truncation error, not io.EOF.
type valueReader struct {
	r   io.Reader
	n   int64
	tag Tag
	d   *decoder
}

func (v *valueReader) Read(p []byte) (int, error) {
	if v.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > v.n {
		p = p[:v.n]
	}
	m, err := v.r.Read(p)
	v.n -= int64(m)
	v.d.pos += int64(m)
	if err == io.EOF && v.n > 0 {
		err = truncated("value of "+v.tag.String(), v.d.pos)
	}
	if v.n == 0 && err == nil {
		err = io.EOF
	}
	return m, err
}

// DefaultBulkThreshold is the length above which ReadMetadata leaves a
// binary value in the object.
const DefaultBulkThreshold = 1024

// ReadMetadata reads a whole data set encoded in ts from r (to EOF), like
// ReadDataSet, except that values of binary VRs (OB, OD, OF, OL, OV, OW,
// UN) longer than threshold bytes, the pixel data elements and
// encapsulated fragments are skipped: their elements are marked Bulk,
// without value. limit bounds the bytes kept (bulk values do not count),
// with ErrTooLarge. threshold <= 0 means DefaultBulkThreshold.
func ReadMetadata(r io.Reader, ts *TransferSyntax, limit int64, threshold int) (*DataSet, error) {
	if ts == nil {
		return nil, ErrNoTransferSyntax
	}
	if threshold <= 0 {
		threshold = DefaultBulkThreshold
	}
	src, finish, release := openStream(r, ts)
	defer release()
	rd := &dsReader{d: decoder{r: src}, limit: limit, bulk: threshold}
	ds, err := rd.dataSet(codingOf(ts), -2, 0)
	if err != nil {
		return nil, inflateErr(err)
	}
	if err := finish(); err != nil {
		return nil, inflateErr(err)
	}
	return ds, nil
}

// ReadBulk reads the data set encoded in ts from r up to the element at
// path (as ParseBulkPath returns it) that ReadMetadata, with the same
// threshold, would leave in the object, and calls fn with that element
// (VR, BulkLength) and a reader of its value, in the data set's byte
// order. It stops reading r once fn returned. An element not found or not
// bulk is ErrNoBulk; encapsulated fragments are ErrBulkEncapsulated. limit
// bounds the bytes kept on the way, as for ReadMetadata.
func ReadBulk(r io.Reader, ts *TransferSyntax, path []uint32, limit int64, threshold int, fn func(e *Element, value io.Reader) error) error {
	if ts == nil {
		return ErrNoTransferSyntax
	}
	if threshold <= 0 {
		threshold = DefaultBulkThreshold
	}
	src, _, release := openStream(r, ts)
	defer release()
	rd := &dsReader{d: decoder{r: src}, limit: limit, bulk: threshold, target: path, onBulk: fn}
	_, err := rd.dataSet(codingOf(ts), -2, 0)
	switch {
	case errors.Is(err, errBulkDone):
		return nil
	case err != nil:
		return inflateErr(err)
	}
	return ErrNoBulk
}

// maxBulkPath bounds the steps of a bulk data path (a tag, then item and
// tag pairs down to MaxDepth).
const maxBulkPath = 2*MaxDepth + 1

// FormatBulkPath writes a path (tags and item indexes alternating, top
// down) the way BulkDataURIs name it: "7FE00010", "00540016/0/00181072".
func FormatBulkPath(path []uint32) string {
	var b strings.Builder
	for i, p := range path {
		if i > 0 {
			b.WriteByte('/')
		}
		if i%2 == 0 {
			fmt.Fprintf(&b, "%08X", p)
		} else {
			b.WriteString(strconv.FormatUint(uint64(p), 10))
		}
	}
	return b.String()
}

// ParseBulkPath reads a path written by FormatBulkPath: tags of 8 hex
// digits and item indexes (decimal, from 0) alternating, ending with a
// tag.
func ParseBulkPath(s string) ([]uint32, error) {
	parts := strings.Split(s, "/")
	if len(parts)%2 == 0 || len(parts) > maxBulkPath {
		return nil, fmt.Errorf("%w: a bulk data path is a tag, then item and tag pairs", ErrMalformed)
	}
	path := make([]uint32, len(parts))
	for i, p := range parts {
		var v uint64
		var err error
		if i%2 == 0 {
			if len(p) != 8 {
				err = errors.New("not 8 hex digits")
			} else {
				v, err = strconv.ParseUint(p, 16, 32)
			}
		} else {
			if p == "" || len(p) > 9 || (len(p) > 1 && p[0] == '0') {
				err = errors.New("not an item index")
			} else {
				v, err = strconv.ParseUint(p, 10, 32)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: bulk data path step %q: %v", ErrMalformed, p, err)
		}
		path[i] = uint32(v)
	}
	return path, nil
}
