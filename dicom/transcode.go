package dicom

import (
	"bufio"
	"compress/flate"
	"fmt"
	"io"
	"sync"
)

// swapSize is the unit in which values of v are byte-swapped between
// little and big endian; 1 means no swapping.
func swapSize(v vr) int {
	switch v.String() {
	case "US", "SS", "OW", "AT":
		return 2
	case "UL", "SL", "FL", "OF", "OL":
		return 4
	case "FD", "OD", "SV", "UV", "OV":
		return 8
	}
	return 1
}

func swapInPlace(b []byte, n int) {
	switch n {
	case 2:
		for i := 0; i+2 <= len(b); i += 2 {
			b[i], b[i+1] = b[i+1], b[i]
		}
	case 4:
		for i := 0; i+4 <= len(b); i += 4 {
			b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
		}
	case 8:
		for i := 0; i+8 <= len(b); i += 8 {
			for j := 0; j < 4; j++ {
				b[i+j], b[i+7-j] = b[i+7-j], b[i+j]
			}
		}
	}
}

// withOutput runs fn on a buffered writer over w, deflating when ts is
// deflated, and flushes.
// outputPool holds the output buffers of WriteDataSet and Transcode: a
// C-FIND encodes one small data set per match, and a buffer each time
// would be most of its cost.
var outputPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}

func withOutput(w io.Writer, ts *TransferSyntax, fn func(*bufio.Writer) error) error {
	if !ts.Deflated {
		bw := outputPool.Get().(*bufio.Writer)
		bw.Reset(w)
		defer func() { bw.Reset(nil); outputPool.Put(bw) }()
		if err := fn(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	cw := &countingWriter{w: w}
	fw, err := flate.NewWriter(cw, flate.DefaultCompression)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(fw, bufSize)
	if err := fn(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := fw.Close(); err != nil {
		return err
	}
	if cw.n&1 == 1 {
		// PS3.5 A.5: a deflated stream of odd length is padded with one
		// zero byte (receivers refuse odd P-DATA fragments).
		_, err = w.Write([]byte{0})
	}
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Transcode converts a data set among the native transfer syntaxes
// (implicit VR LE, explicit VR LE, explicit VR BE, deflated explicit VR LE)
// element by element with bounded memory. VRs come from the dictionary when
// leaving implicit VR (unknown and private tags become UN; Pixel Data OB or
// OW by Bits Allocated); values of multi-byte binary VRs are swapped when
// the byte order changes; every sequence and item is written with undefined
// length; group length elements (gggg,0000) are dropped. Encapsulated or
// unknown syntaxes yield ErrNotConvertible. src is read to EOF.
func Transcode(dst io.Writer, src io.Reader, from, to *TransferSyntax) error {
	if from == nil || to == nil {
		return ErrNoTransferSyntax
	}
	if !IsUncompressed(from) {
		return fmt.Errorf("%w: from %s", ErrNotConvertible, from.UID)
	}
	if !IsUncompressed(to) {
		return fmt.Errorf("%w: to %s", ErrNotConvertible, to.UID)
	}
	in, finish, release := openStream(src, from)
	defer release()
	return withOutput(dst, to, func(bw *bufio.Writer) error {
		t := &transcoder{d: decoder{r: in}, w: bw, out: codingOf(to), buf: make([]byte, bufSize)}
		if err := t.dataSet(codingOf(from), -2, 0); err != nil {
			return err
		}
		return finish()
	})
}

type transcoder struct {
	d             decoder
	w             *bufio.Writer
	out           coding
	outStack      []coding
	buf           []byte
	hdr           []byte
	bitsAllocated int
}

func (t *transcoder) header(c coding, tag Tag, v vr, length uint32) error {
	t.hdr = appendHeader(t.hdr[:0], c, tag, v, length)
	_, err := t.w.Write(t.hdr)
	return err
}

// dataSet transcodes elements until end (-2 EOF, -1 item delimiter, else
// absolute offset).
func (t *transcoder) dataSet(in coding, end int64, depth int) error {
	return t.d.eachElement(in, end, func(h header) error { return t.element(in, h, depth, end == -2) })
}

func (t *transcoder) element(in coding, h header, depth int, top bool) error {
	d := &t.d
	out := t.out
	seq := isSequence(in, &h)
	if h.tag.Element() == 0 && h.length != undefinedLength && !seq {
		return d.skip(int64(h.length), h.tag) // group length: dropped
	}
	if !out.explicit && in.explicit {
		// Implicit VR is read by the dictionary: a value it would take for
		// a sequence must be one, and Pixel Data must not be.
		switch {
		case seq && h.tag == PixelData:
			return fmt.Errorf("%w: %v is a sequence, which implicit VR cannot carry", ErrNotConvertible, h.tag)
		case !seq && h.length != undefinedLength && VROf(h.tag) == "SQ":
			if h.vr != vrUN {
				return fmt.Errorf("%w: %v has VR %s, but implicit VR would read it as a sequence", ErrNotConvertible, h.tag, h.vr)
			}
			// A sequence sent as UN holds implicit VR LE items (PS3.5
			// 6.2.2): transcode them as such, which checks them too.
			seq = true
		}
	}
	if seq {
		if depth+1 > MaxDepth {
			return fmt.Errorf("%w: at %v, offset %d", ErrTooDeep, h.tag, d.pos)
		}
		ic := innerCoding(in, &h)
		if err := t.header(out, h.tag, vrSQ, undefinedLength); err != nil {
			return err
		}
		err := d.eachItem(ic, &h, func(_ *header, iend int64) error {
			if err := t.header(out, Item, 0, undefinedLength); err != nil {
				return err
			}
			if err := t.dataSet(ic, iend, depth+1); err != nil {
				return err
			}
			return t.header(out, ItemDelimitationItem, 0, 0)
		})
		if err != nil {
			return err
		}
		return t.header(out, SequenceDelimitationItem, 0, 0)
	}
	if h.length == undefinedLength {
		return fmt.Errorf("%w: encapsulated %v in a native transfer syntax", ErrNotConvertible, h.tag)
	}
	v := h.vr
	if !in.explicit {
		v = mkVR(VROf(h.tag))
		if h.tag == PixelData {
			v = vrOW
			if t.bitsAllocated > 0 && t.bitsAllocated <= 8 {
				v = vrOB
			}
		}
		if v == 0 {
			v = vrUN
		}
	}
	ov := v
	if out.explicit && !longVR(ov) && h.length > 0xFFFF {
		ov = vrUN
	}
	if err := t.header(out, h.tag, ov, h.length); err != nil {
		return err
	}
	swap := 1
	if in.big != out.big && ov == v {
		swap = swapSize(v)
	}
	if top && h.tag == BitsAllocated && h.length == 2 {
		if _, err := io.ReadFull(d.r, t.buf[:2]); err != nil {
			return d.ioErr(err, "value of "+h.tag.String())
		}
		d.pos += 2
		t.bitsAllocated = int(in.u16(t.buf[:2]))
		swapInPlace(t.buf[:2], swap)
		_, err := t.w.Write(t.buf[:2])
		return err
	}
	return t.copyValue(int64(h.length), swap, h.tag)
}

// copyValue copies n bytes through the scratch buffer, swapping in units.
func (t *transcoder) copyValue(n int64, swap int, tag Tag) error {
	for n > 0 {
		chunk := int64(len(t.buf))
		if chunk > n {
			chunk = n
		}
		b := t.buf[:chunk]
		m, err := io.ReadFull(t.d.r, b)
		t.d.pos += int64(m)
		if err != nil {
			return t.d.ioErr(err, "value of "+tag.String())
		}
		swapInPlace(b, swap)
		if _, err := t.w.Write(b); err != nil {
			return err
		}
		n -= chunk
	}
	return nil
}
