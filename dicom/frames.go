package dicom

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Frames of pixel data, read from a data set stream (PS3.5 8.2, A.4): the
// Image Pixel module's description of the pixels, and frame N's bytes,
// native or encapsulated. The reader goes forward only: it stops at the
// top-level pixel data element without buffering any other bulk value,
// then reads frames in ascending order; a frame before the position
// reached is ErrFramePassed (open the object again).

// Attributes of the Image Pixel and VOI LUT modules the reader keeps.
const (
	tagPlanarConfiguration Tag = 0x00280006
	tagWindowCenter        Tag = 0x00281050
	tagWindowWidth         Tag = 0x00281051
	tagRescaleIntercept    Tag = 0x00281052
	tagRescaleSlope        Tag = 0x00281053
	tagVOILUTFunction      Tag = 0x00281056
	tagExtendedOffsetTable Tag = 0x7FE00001
	tagExtendedOffsetLens  Tag = 0x7FE00002
	tagFloatPixelData      Tag = 0x7FE00008
	tagDoubleFloatPixel    Tag = 0x7FE00009
)

// keptPixelAttrs are the attributes OpenFrames keeps.
var keptPixelAttrs = map[Tag]bool{
	SamplesPerPixel: true, PhotometricInterpretation: true, tagPlanarConfiguration: true, NumberOfFrames: true,
	Rows: true, Columns: true, BitsAllocated: true, BitsStored: true, HighBit: true, PixelRepresentation: true,
	tagWindowCenter: true, tagWindowWidth: true, tagRescaleIntercept: true, tagRescaleSlope: true, tagVOILUTFunction: true,
}

// Bounds of what the frame reader accepts.
const (
	// MaxFrames bounds Number of Frames.
	MaxFrames = 1 << 20
	// maxPixelAttr bounds a kept attribute's value (the Extended Offset
	// Table, bounded by Number of Frames, is read apart).
	maxPixelAttr = 64 << 10
)

var (
	// ErrNoPixelData: the data set has no top-level pixel data.
	ErrNoPixelData = errors.New("dicom: no pixel data")
	// ErrFramePassed: a frame before the reader's position was asked
	// for; frames are read in ascending order from one stream.
	ErrFramePassed = errors.New("dicom: frame already passed")
)

// PixelInfo describes the pixels of an image (PS3.3 C.7.6.3, C.11.2).
type PixelInfo struct {
	Rows, Columns, SamplesPerPixel                      int
	BitsAllocated, BitsStored, HighBit                  int
	PixelRepresentation, PlanarConfiguration, NumFrames int
	Photometric                                         string
	// RescaleSlope and RescaleIntercept (1 and 0 when absent).
	RescaleSlope, RescaleIntercept float64
	// WindowCenter and WindowWidth are the first VOI window, if any.
	WindowCenter, WindowWidth float64
	HasWindow                 bool
	// VOILUTFunction: "LINEAR" (default), "LINEAR_EXACT" or "SIGMOID".
	VOILUTFunction string
}

// FrameBits is the size of one native frame in bits. YBR_FULL_422 keeps
// two values per pixel (PS3.3 C.7.6.3.1.2).
func (p *PixelInfo) FrameBits() int64 {
	samples := int64(p.SamplesPerPixel)
	if p.Photometric == "YBR_FULL_422" && samples == 3 {
		samples = 2
	}
	return int64(p.Rows) * int64(p.Columns) * samples * int64(p.BitsAllocated)
}

// Frames reads the frames of one data set; Close releases it.
type Frames struct {
	Info PixelInfo
	// TS is the syntax the data set (and so the frames) are encoded in.
	TS *TransferSyntax
	// Encapsulated: the pixel data is in fragments (a compressed syntax).
	Encapsulated bool

	// Float: the pixel data is Float or Double Float Pixel Data
	// (7FE0,0008 or 0009), IEEE values rather than integers.
	Float bool

	d       *decoder
	c       coding
	release func()
	// src is the buffered reader over the data set, and seeker the
	// stream under it when that can seek (origin: its offset at the data
	// set's start): skips within the pixel data then seek.
	src    *bufio.Reader
	seeker io.ReadSeeker
	origin int64

	// native: value length, bytes consumed of the value, and the last
	// byte read (1-bit frames may share a byte).
	length, at int64
	lastByte   byte

	// encapsulated: frame start offsets (relative to the first fragment
	// item), the position of the first fragment, the peeked fragment
	// header and its frame, the frames begun so far, and the marker a
	// frame's first fragment starts with (nil: one fragment per frame).
	eot      []byte // the Extended Offset Table's value, if usable
	offsets  []uint64
	base     int64
	peeked   bool
	peekLen  uint32
	peekFrm  int
	frameAt  int // frame of the last fragment read (-1 none)
	ended    bool
	marker   [][]byte
	consumed int // frames fully passed: a frame < consumed is ErrFramePassed
}

// OpenFrames reads the data set r, encoded in ts, up to its top-level
// pixel data (Pixel Data, Float or Double Float Pixel Data), keeping the
// attributes that describe it; the reader is then positioned at the
// pixel data's value. When r is an io.ReadSeeker (positioned at the data
// set's start) and ts is not deflated, frames and fragments passed over
// are skipped by seeking rather than reading. A data set without pixel data is ErrNoPixelData;
// a description that cannot hold (no rows, bits allocated not 1, 8, 16,
// 32 or 64, native pixel data shorter than its frames) is ErrMalformed.
func OpenFrames(r io.Reader, ts *TransferSyntax) (*Frames, error) {
	if ts == nil {
		return nil, ErrNoTransferSyntax
	}
	var seeker io.ReadSeeker
	var origin int64
	if rs, ok := r.(io.ReadSeeker); ok && !ts.Deflated {
		if off, err := rs.Seek(0, io.SeekCurrent); err == nil {
			seeker, origin = rs, off
		}
	}
	src, _, release := openStream(r, ts)
	f := &Frames{TS: ts, d: &decoder{r: src, ts: ts}, c: codingOf(ts), release: release, frameAt: -1, src: src, seeker: seeker, origin: origin}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	a := &Attrs{ts: ts}
	want := func(t Tag) bool { return keptPixelAttrs[t] }
	pixel := func(h *header) bool {
		return h.tag == PixelData || h.tag == tagFloatPixelData || h.tag == tagDoubleFloatPixel
	}
	stop := func(h *header) bool { return h.tag == tagExtendedOffsetTable || pixel(h) }
	h, err := f.d.scanTop(f.c, a, want, maxPixelAttr, nil, stop)
	if err == nil && h != nil && h.tag == tagExtendedOffsetTable {
		// Kept only when it has 8 bytes per frame; the scan then goes on
		// to the pixel data.
		frames, _ := a.Int(NumberOfFrames)
		if h.length != undefinedLength && !isSequence(f.c, h) && frames >= 1 && frames <= MaxFrames && int64(h.length) == 8*int64(frames) {
			f.eot, err = f.d.readValue(h.length, h.tag)
		} else {
			err = f.d.skipElement(f.c, h, 0)
		}
		if err == nil {
			h, err = f.d.scanTop(f.c, a, want, maxPixelAttr, nil, pixel)
		}
	}
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, ErrNoPixelData
	}
	if isSequence(f.c, h) {
		return nil, malformed(f.d.pos, "%v is a sequence", h.tag)
	}
	f.Float = h.tag != PixelData
	if err := f.describe(a); err != nil {
		return nil, err
	}
	if h.length == undefinedLength {
		f.Encapsulated = true
		if f.Float {
			return nil, malformed(f.d.pos, "%v encapsulated", h.tag)
		}
		if err := f.startFragments(a); err != nil {
			return nil, err
		}
	} else {
		f.length = int64(h.length)
		if need := (f.Info.FrameBits()*int64(f.Info.NumFrames) + 7) / 8; need > f.length {
			return nil, malformed(f.d.pos, "pixel data has %d bytes, %d frames of %d bits need %d", f.length, f.Info.NumFrames, f.Info.FrameBits(), need)
		}
	}
	ok = true
	return f, nil
}

// Close releases the reader (not the underlying stream).
func (f *Frames) Close() {
	if f.release != nil {
		f.release()
		f.release = nil
	}
}

func (f *Frames) describe(a *Attrs) error {
	p := &f.Info
	num := func(t Tag, def int) int {
		if v, ok := a.Int(t); ok {
			return v
		}
		return def
	}
	p.Rows, p.Columns = num(Rows, 0), num(Columns, 0)
	p.SamplesPerPixel = num(SamplesPerPixel, 1)
	p.BitsAllocated = num(BitsAllocated, 0)
	p.BitsStored = num(BitsStored, p.BitsAllocated)
	p.HighBit = num(HighBit, p.BitsStored-1)
	p.PixelRepresentation = num(PixelRepresentation, 0)
	p.PlanarConfiguration = num(tagPlanarConfiguration, 0)
	p.NumFrames = num(NumberOfFrames, 1)
	p.Photometric = strings.ToUpper(a.String(PhotometricInterpretation))
	p.RescaleSlope, p.RescaleIntercept = 1, 0
	if v, ok := firstFloat(a.String(tagRescaleSlope)); ok && v != 0 {
		p.RescaleSlope = v
	}
	if v, ok := firstFloat(a.String(tagRescaleIntercept)); ok {
		p.RescaleIntercept = v
	}
	c, okc := firstFloat(a.String(tagWindowCenter))
	w, okw := firstFloat(a.String(tagWindowWidth))
	if okc && okw && w >= 1 {
		p.WindowCenter, p.WindowWidth, p.HasWindow = c, w, true
	}
	p.VOILUTFunction = strings.ToUpper(strings.TrimSpace(a.String(tagVOILUTFunction)))
	switch {
	case p.Rows <= 0 || p.Columns <= 0 || p.Rows > 0xFFFF || p.Columns > 0xFFFF:
		return malformed(f.d.pos, "rows %d, columns %d", p.Rows, p.Columns)
	case p.SamplesPerPixel != 1 && p.SamplesPerPixel != 3 && p.SamplesPerPixel != 4:
		return malformed(f.d.pos, "samples per pixel %d", p.SamplesPerPixel)
	case p.NumFrames < 1 || p.NumFrames > MaxFrames:
		return malformed(f.d.pos, "number of frames %d (1 to %d)", p.NumFrames, MaxFrames)
	case p.BitsStored < 1 || p.BitsStored > p.BitsAllocated:
		return malformed(f.d.pos, "bits stored %d, bits allocated %d", p.BitsStored, p.BitsAllocated)
	}
	switch p.BitsAllocated {
	case 1, 8, 16, 32, 64:
	default:
		return malformed(f.d.pos, "bits allocated %d", p.BitsAllocated)
	}
	return nil
}

// firstFloat parses the first value of a decimal string.
func firstFloat(s string) (float64, bool) {
	if i := strings.IndexByte(s, '\\'); i >= 0 {
		s = s[:i]
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}

// WriteFrame writes frame n (1-based) to w: native frames as little
// endian values (bit-packed for 1-bit pixel data, starting on a byte),
// encapsulated ones as the concatenation of their fragments. A frame
// before one already written is ErrFramePassed. It returns the bytes
// written.
func (f *Frames) WriteFrame(w io.Writer, n int) (int64, error) {
	if n < 1 || n > f.Info.NumFrames {
		return 0, fmt.Errorf("%w: frame %d of %d", ErrMalformed, n, f.Info.NumFrames)
	}
	if n-1 < f.consumed {
		return 0, ErrFramePassed
	}
	f.consumed = n
	if f.Encapsulated {
		return f.writeFragments(w, n-1)
	}
	return f.writeNative(w, n-1)
}

// ReadFrame is WriteFrame into memory, refusing (ErrTooLarge) a frame
// over limit bytes before reading it when its size is known, and as soon
// as it passes limit otherwise.
func (f *Frames) ReadFrame(n int, limit int64) ([]byte, error) {
	if !f.Encapsulated && (f.Info.FrameBits()+7)/8 > limit {
		return nil, fmt.Errorf("%w: frame of %d bytes, limit %d", ErrTooLarge, (f.Info.FrameBits()+7)/8, limit)
	}
	var b bytes.Buffer
	_, err := f.WriteFrame(&limitedWriter{w: &b, left: limit}, n)
	if err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

type limitedWriter struct {
	w    io.Writer
	left int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		return 0, fmt.Errorf("%w: frame over the limit", ErrTooLarge)
	}
	l.left -= int64(len(p))
	return l.w.Write(p)
}

// swapUnit is the byte-swap unit of native values read big endian.
func (f *Frames) swapUnit() int {
	if !f.c.big {
		return 1
	}
	switch {
	case f.Float && f.Info.BitsAllocated == 64:
		return 8
	case f.Info.BitsAllocated >= 16:
		return f.Info.BitsAllocated / 8
	}
	return 1
}

func (f *Frames) writeNative(w io.Writer, i int) (int64, error) {
	bits := f.Info.FrameBits()
	startBit := int64(i) * bits
	start, shift := startBit/8, uint(startBit%8)
	end := (startBit + bits + 7) / 8
	var prefix []byte
	switch {
	case start == f.at-1 && shift != 0:
		prefix = []byte{f.lastByte} // shared with the previous frame
	case start < f.at:
		return 0, ErrFramePassed
	case start > f.at:
		if err := f.skip(start - f.at); err != nil {
			return 0, err
		}
		f.at = start
	}
	if shift == 0 && bits%8 == 0 {
		n, err := f.copyValue(w, end-f.at, f.swapUnit())
		return n, err
	}
	// 1-bit pixel data not aligned on bytes: re-pack from bit 0.
	var raw bytes.Buffer
	raw.Write(prefix)
	if _, err := f.copyValue(&raw, end-f.at, 1); err != nil {
		return 0, err
	}
	in := raw.Bytes()
	out := make([]byte, (bits+7)/8)
	for k := range out {
		v := in[k] >> shift
		if shift != 0 && k+1 < len(in) {
			v |= in[k+1] << (8 - shift)
		}
		out[k] = v
	}
	if rem := bits % 8; rem != 0 {
		out[len(out)-1] &= byte(1<<rem) - 1
	}
	m, err := w.Write(out)
	return int64(m), err
}

// skip passes over n bytes of the pixel data: by seeking the stream
// under the buffer when it can and n is more than the buffer holds, else
// by reading. A seek past the end is found by the next read.
func (f *Frames) skip(n int64) error {
	if f.seeker == nil || n <= int64(f.src.Buffered()) {
		return f.d.skip(n, PixelData)
	}
	if _, err := f.seeker.Seek(f.origin+f.d.pos+n, io.SeekStart); err != nil {
		return fmt.Errorf("seeking in the pixel data: %w", err)
	}
	f.src.Reset(f.seeker)
	f.d.pos += n
	return nil
}

// copyValue copies n bytes of the pixel value to w, swapping in units of
// swap bytes.
func (f *Frames) copyValue(w io.Writer, n int64, swap int) (int64, error) {
	var written int64
	buf := make([]byte, min(n, 64<<10))
	for n > 0 {
		chunk := min(int64(len(buf)), n)
		b := buf[:chunk]
		m, err := io.ReadFull(f.d.r, b)
		f.d.pos += int64(m)
		f.at += int64(m)
		if err != nil {
			return written, f.d.ioErr(err, "pixel data")
		}
		f.lastByte = b[len(b)-1]
		swapInPlace(b, swap)
		k, err := w.Write(b)
		written += int64(k)
		if err != nil {
			return written, err
		}
		n -= chunk
	}
	return written, nil
}

// frameMarkers are the bytes a frame's first fragment starts with, per
// compressed syntax, when a frame may span fragments (PS3.5 A.4): the
// JPEG and JPEG-LS start of image, the JPEG 2000 codestream's SOC and
// SIZ, a JP2 signature box, a JPEG XL codestream or container.
var frameMarkers = map[string][][]byte{}

func init() {
	jpeg := [][]byte{{0xFF, 0xD8}}
	j2k := [][]byte{{0xFF, 0x4F, 0xFF, 0x51}, {0, 0, 0, 0x0C, 'j', 'P', ' ', ' '}}
	for _, s := range []string{"50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60", "61", "62", "63", "64", "65", "66", "70", "80", "81"} {
		frameMarkers["1.2.840.10008.1.2.4."+s] = jpeg
	}
	for _, s := range []string{"90", "91", "92", "93", "201", "202", "203"} {
		frameMarkers["1.2.840.10008.1.2.4."+s] = j2k
	}
	jxl := [][]byte{{0xFF, 0x0A}, {0, 0, 0, 0x0C, 'J', 'X', 'L', ' '}}
	for _, s := range []string{"110", "111", "112"} {
		frameMarkers["1.2.840.10008.1.2.4."+s] = jxl
	}
}

// startFragments reads the Basic Offset Table and decides how fragments
// map to frames: by the Extended Offset Table, else by the Basic Offset
// Table when it has one entry per frame, else all fragments for a single
// frame, else by the syntax's start markers, else one fragment per frame.
func (f *Frames) startFragments(a *Attrs) error {
	var h header
	if err := f.d.readHeader(f.c, &h); err != nil {
		if err == io.EOF {
			return truncated("basic offset table", f.d.pos)
		}
		return err
	}
	if h.tag != Item || h.length == undefinedLength {
		return malformed(f.d.pos, "encapsulated pixel data starts with %v, not the basic offset table item", h.tag)
	}
	frames := f.Info.NumFrames
	var bot []uint64
	if h.length%4 == 0 && int64(h.length) == 4*int64(frames) {
		v, err := f.d.readValue(h.length, PixelData)
		if err != nil {
			return err
		}
		bot = make([]uint64, frames)
		for i := range bot {
			bot[i] = uint64(f.c.u32(v[4*i:]))
		}
	} else if err := f.d.skip(int64(h.length), PixelData); err != nil {
		return err
	}
	f.base = f.d.pos
	if raw := f.eot; len(raw) == 8*frames {
		eot := make([]uint64, frames)
		order := f.c.order()
		for i := range eot {
			eot[i] = order.Uint64(raw[8*i:])
		}
		if ascending(eot) {
			f.offsets = eot
			return nil
		}
	}
	if bot != nil && ascending(bot) {
		f.offsets = bot
		return nil
	}
	if frames > 1 {
		f.marker = frameMarkers[f.TS.UID]
	}
	return nil
}

func ascending(o []uint64) bool {
	if len(o) == 0 || o[0] != 0 {
		return false
	}
	for i := 1; i < len(o); i++ {
		if o[i] <= o[i-1] {
			return false
		}
	}
	return true
}

// peek reads the next fragment's header and decides its frame; false at
// the end of the fragments.
func (f *Frames) peek() (bool, error) {
	if f.peeked {
		return true, nil
	}
	if f.ended {
		return false, nil
	}
	itemAt := uint64(f.d.pos - f.base)
	var h header
	if err := f.d.readHeader(f.c, &h); err != nil {
		if err == io.EOF {
			return false, truncated("encapsulated pixel data", f.d.pos)
		}
		return false, err
	}
	switch h.tag {
	case SequenceDelimitationItem:
		f.ended = true
		return false, nil
	case Item:
	default:
		return false, malformed(f.d.pos, "unexpected %v in encapsulated pixel data", h.tag)
	}
	if h.length == undefinedLength {
		return false, malformed(f.d.pos, "fragment of undefined length")
	}
	frame := f.frameAt + 1 // one fragment per frame
	switch {
	case f.offsets != nil:
		frame = f.frameAt
		for frame+1 < len(f.offsets) && f.offsets[frame+1] <= itemAt {
			frame++
		}
		if frame < 0 {
			frame = 0
		}
	case f.Info.NumFrames == 1:
		frame = 0
	case f.marker != nil && f.frameAt >= 0:
		frame = f.frameAt
		b, _ := f.d.r.Peek(int(min(h.length, 8)))
		for _, m := range f.marker {
			if bytes.HasPrefix(b, m) {
				frame++
				break
			}
		}
	}
	f.peeked, f.peekLen, f.peekFrm = true, h.length, frame
	return true, nil
}

func (f *Frames) writeFragments(w io.Writer, i int) (int64, error) {
	var written int64
	found := false
	for {
		more, err := f.peek()
		if err != nil {
			return written, err
		}
		if !more || f.peekFrm > i {
			break
		}
		f.peeked = false
		f.frameAt = f.peekFrm
		if f.peekFrm < i {
			if err := f.skip(int64(f.peekLen)); err != nil {
				return written, err
			}
			continue
		}
		found = true
		n, err := f.copyValue(w, int64(f.peekLen), 1)
		written += n
		if err != nil {
			return written, err
		}
	}
	if !found {
		return written, malformed(f.d.pos, "frame %d of %d has no fragment", i+1, f.Info.NumFrames)
	}
	return written, nil
}
