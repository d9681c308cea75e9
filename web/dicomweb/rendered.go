package dicomweb

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/draw"
	"image/jpeg"
	"image/png"
	"math"
	"net/http"
	"runtime"
	"strconv"
	"strings"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
)

// Rendered and thumbnail resources (PS3.18 8.3.5, 10.4.1.1.3-4): one
// frame as image/jpeg (the default) or image/png, for native pixel data
// (MONOCHROME1/2 of 1 to 32 bits, signed or not, with the modality
// rescale and a VOI window; RGB and YBR_FULL/YBR_FULL_422 of 8 or 16
// bits, interleaved or planar) and for JPEG baseline and extended (8-bit)
// pixel data, which Go's decoder reads. Other compressed syntaxes, palette
// color and float pixel data are answered 406 with the reason. No
// annotation is ever burned in: a rendered image carries no patient data
// but what the pixels hold.

// Bounds of rendering.
const (
	// maxRenderSamples bounds the samples (rows × columns × samples per
	// pixel) of a frame Ward renders.
	maxRenderSamples = 48 << 20
	// maxViewport bounds each side of a viewport.
	maxViewport = 4096
	// thumbnailSide is the default viewport of a thumbnail.
	thumbnailSide = 128
	// defaultQuality is the JPEG quality without a quality parameter.
	defaultQuality = 90
	// maxThumbnailTries bounds the instances a study or series thumbnail
	// tries before giving up.
	maxThumbnailTries = 8
)

// renderSlots bounds the renderings in progress (each may hold a frame
// of maxRenderSamples and its image): rendering is CPU-bound, so more at
// once than there are CPUs only adds memory.
var renderSlots = make(chan struct{}, max(2, runtime.NumCPU()))

const jpegBaseline = "1.2.840.10008.1.2.4.50"

// renderable: encapsulated syntaxes whose frames Go's image/jpeg decodes
// (8-bit sequential DCT; 12-bit extended frames fail to decode, with a
// 406).
var renderable = map[string]bool{jpegBaseline: true, "1.2.840.10008.1.2.4.51": true}

// renderParams are a rendered request's parameters (PS3.18 8.3.5.1).
type renderParams struct {
	format   string // image/jpeg or image/png
	vw, vh   int    // viewport; 0: the frame's size
	window   *voiWindow
	quality  int // JPEG quality; 0: default
	explicit bool
}

type voiWindow struct {
	center, width float64
	function      string // LINEAR, LINEAR_EXACT, SIGMOID
}

func parseRenderParams(r *http.Request, thumbnail bool) (renderParams, error) {
	var p renderParams
	ranges, err := acceptOf(r)
	if err != nil {
		return p, err
	}
	for _, mr := range ranges {
		if mr.Matches("image/jpeg") {
			p.format = "image/jpeg"
			break
		}
		if mr.Matches("image/png") {
			p.format = "image/png"
			break
		}
	}
	if p.format == "" {
		return p, failf(http.StatusNotAcceptable, "rendered images are image/jpeg or image/png")
	}
	q := r.URL.Query()
	if v := q.Get("viewport"); v != "" {
		f := strings.Split(v, ",")
		if len(f) != 2 {
			return p, failf(http.StatusBadRequest, "viewport is vw,vh (regions of the source are not supported)")
		}
		p.vw, err = strconv.Atoi(strings.TrimSpace(f[0]))
		if err == nil {
			p.vh, err = strconv.Atoi(strings.TrimSpace(f[1]))
		}
		if err != nil || p.vw < 1 || p.vh < 1 || p.vw > maxViewport || p.vh > maxViewport {
			return p, failf(http.StatusBadRequest, "viewport is vw,vh, each from 1 to %d", maxViewport)
		}
	} else if thumbnail {
		p.vw, p.vh = thumbnailSide, thumbnailSide
	}
	if v := q.Get("window"); v != "" {
		f := strings.Split(v, ",")
		w := &voiWindow{function: "LINEAR"}
		var e1, e2 error
		if len(f) >= 2 {
			w.center, e1 = strconv.ParseFloat(strings.TrimSpace(f[0]), 64)
			w.width, e2 = strconv.ParseFloat(strings.TrimSpace(f[1]), 64)
		}
		if len(f) == 3 {
			w.function = strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(f[2]), "-", "_"))
		}
		ok := (len(f) == 2 || len(f) == 3) && e1 == nil && e2 == nil && w.width >= 1 && !math.IsInf(w.center, 0) && !math.IsInf(w.width, 0) &&
			(w.function == "LINEAR" || w.function == "LINEAR_EXACT" || w.function == "SIGMOID")
		if !ok {
			return p, failf(http.StatusBadRequest, "window is center,width[,linear|linear-exact|sigmoid] with width at least 1")
		}
		p.window = w
	}
	if v := q.Get("quality"); v != "" {
		p.quality, err = strconv.Atoi(v)
		if err != nil || p.quality < 1 || p.quality > 100 {
			return p, failf(http.StatusBadRequest, "quality is an integer from 1 to 100")
		}
	}
	p.explicit = q.Has("viewport") || p.window != nil || p.quality != 0
	return p, nil
}

func (s *Server) rendered(w http.ResponseWriter, r *http.Request) { s.render(w, r, false) }

func (s *Server) thumbnail(w http.ResponseWriter, r *http.Request) { s.render(w, r, true) }

func (s *Server) render(w http.ResponseWriter, r *http.Request, thumbnail bool) {
	t, ok := targetOf(w, r)
	if !ok {
		return
	}
	p, err := parseRenderParams(r, thumbnail)
	frame := 1
	if err == nil && r.PathValue("frames") != "" {
		var list []int
		if list, err = parseFrameList(r.PathValue("frames")); err == nil && len(list) != 1 {
			err = failf(http.StatusBadRequest, "a rendered frame resource names one frame")
		}
		if err == nil {
			frame = list[0]
		}
	}
	if err == nil && t.Instance == "" && !thumbnail {
		err = failf(http.StatusNotAcceptable, "rendering a whole %s is not supported: ask for an instance's or frame's rendered resource, or the %s's thumbnail", strings.ToLower(t.Level()), strings.ToLower(t.Level()))
	}
	if err != nil {
		s.answerErr(w, r, err)
		return
	}
	s.serveRendered(w, r, t, frame, p)
}

// serveRendered answers frame (1-based) of the instance t names, or of
// the representative instance of its series or study, rendered with p
// (WADO-URI's image requests can be answered by it too, with their
// parameters read into p).
func (s *Server) serveRendered(w http.ResponseWriter, r *http.Request, t Target, frame int, p renderParams) {
	insts, err := s.findInstances(r.Context(), t.RetrieveRequest())
	var out []byte
	if err == nil {
		out, err = s.renderOne(r.Context(), insts, frame, p, r.Method == http.MethodHead)
	}
	if err != nil {
		s.answerErr(w, r, err)
		return
	}
	w.Header().Set("Content-Type", p.format)
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(out)
	}
}

// renderOne renders the representative instance of insts (the middle
// one; the next ones in turn if it cannot be rendered) and reports every
// instance's outcome (for a HEAD request, whose image is not sent, the
// rendered one as not attempted).
func (s *Server) renderOne(ctx context.Context, insts []*archive.Instance, frame int, p renderParams, head bool) ([]byte, error) {
	if len(insts) == 0 {
		return nil, failf(http.StatusNotFound, "no such instance")
	}
	start := len(insts) / 2
	if len(insts) == 1 {
		start = 0
	}
	var out []byte
	var firstErr error
	tried := 0
	for k := range insts {
		inst := insts[(start+k)%len(insts)]
		if out != nil || tried == maxThumbnailTries {
			report(inst, archive.ErrNotAttempted)
			continue
		}
		tried++
		b, err := renderInstance(ctx, inst, frame, p)
		if err == nil && head {
			report(inst, archive.ErrNotAttempted)
		} else {
			report(inst, err)
		}
		if err == nil {
			out = b
			continue
		}
		if firstErr == nil {
			firstErr = err
		}
		var he *httpError
		if !errors.As(err, &he) || ctx.Err() != nil {
			return nil, err // storage or cancellation: no use trying others
		}
	}
	if out == nil {
		return nil, firstErr
	}
	return out, nil
}

// renderInstance renders frame n of inst with p, when a rendering slot
// is free.
func renderInstance(ctx context.Context, inst *archive.Instance, n int, p renderParams) ([]byte, error) {
	select {
	case renderSlots <- struct{}{}:
		defer func() { <-renderSlots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	f, c, err := openFrames(ctx, inst)
	if err != nil {
		return nil, err
	}
	defer func() { f.Close(); c.Close() }()
	info := &f.Info
	if n > info.NumFrames {
		return nil, failf(http.StatusNotFound, "frame %d is beyond the instance's %d frames", n, info.NumFrames)
	}
	if samples := int64(info.Rows) * int64(info.Columns) * int64(info.SamplesPerPixel); samples > maxRenderSamples {
		return nil, failf(http.StatusNotAcceptable, "the frame has %d samples, over the %d Ward renders; ask for its frames instead", samples, maxRenderSamples)
	}
	var img image.Image
	switch {
	case !f.Encapsulated:
		if f.Float {
			return nil, failf(http.StatusNotAcceptable, "rendering float pixel data is not supported; ask for its frames instead")
		}
		raw, err := f.ReadFrame(n, int64(maxRenderSamples)*8)
		if err != nil {
			return nil, frameErr(ctx, err)
		}
		if img, err = renderNative(info, raw, p.window); err != nil {
			return nil, err
		}
	case renderable[f.TS.UID]:
		raw, err := f.ReadFrame(n, int64(maxRenderSamples))
		if err != nil {
			return nil, frameErr(ctx, err)
		}
		if p.format == "image/jpeg" && !p.explicit && p.vw == 0 && f.TS.UID == jpegBaseline && info.Photometric != "MONOCHROME1" {
			return raw, nil // as stored: the frame is a JPEG image
		}
		if img, err = renderJPEG(info, raw, p.window); err != nil {
			return nil, err
		}
	default:
		name := f.TS.Name
		if name == "" {
			name = "transfer syntax " + f.TS.UID
		}
		return nil, failf(http.StatusNotAcceptable, "rendering %s is not supported; ask for the frames with transfer-syntax=* (or %s)", name, f.TS.UID)
	}
	img = fit(img, p.vw, p.vh)
	var b bytes.Buffer
	if p.format == "image/png" {
		err = png.Encode(&b, img)
	} else {
		q := p.quality
		if q == 0 {
			q = defaultQuality
		}
		err = jpeg.Encode(&b, img, &jpeg.Options{Quality: q})
	}
	if err != nil {
		return nil, &archive.Error{Kind: archive.ErrProcessing, Comment: "encoding the rendered image failed", Err: err}
	}
	return b.Bytes(), nil
}

// frameErr maps an error reading a frame.
func frameErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, dicom.ErrTooLarge) {
		return failf(http.StatusNotAcceptable, "the frame is too large to render; ask for its frames instead")
	}
	return &archive.Error{Kind: archive.ErrProcessing, Comment: "the stored object's pixel data cannot be read", Err: err}
}

// renderNative turns a native frame (little endian, as Frames gives it)
// into an 8-bit image.
func renderNative(info *dicom.PixelInfo, raw []byte, win *voiWindow) (image.Image, error) {
	w, h := info.Columns, info.Rows
	switch pi := info.Photometric; {
	case (pi == "MONOCHROME1" || pi == "MONOCHROME2") && info.SamplesPerPixel == 1:
		return renderGray(info, raw, win), nil
	case pi == "YBR_FULL_422" && w%2 != 0:
		return nil, failf(http.StatusNotAcceptable, "YBR_FULL_422 pixel data with an odd number of columns cannot be rendered")
	case (pi == "RGB" || pi == "YBR_FULL" || pi == "YBR_FULL_422") && info.SamplesPerPixel == 3 && (info.BitsAllocated == 8 || info.BitsAllocated == 16):
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		bps := info.BitsAllocated / 8
		shift := uint(max(info.BitsStored-8, 0))
		sample := func(i int) uint8 {
			if bps == 1 {
				return raw[i]
			}
			return uint8(min((uint16(raw[2*i])|uint16(raw[2*i+1])<<8)>>shift, 255))
		}
		px := w * h
		for i := 0; i < px; i++ {
			var a, b, c uint8
			switch {
			case pi == "YBR_FULL_422":
				pair := i / 2
				a, b, c = sample(4*pair+i%2), sample(4*pair+2), sample(4*pair+3)
			case info.PlanarConfiguration == 1:
				a, b, c = sample(i), sample(px+i), sample(2*px+i)
			default:
				a, b, c = sample(3*i), sample(3*i+1), sample(3*i+2)
			}
			if pi != "RGB" {
				a, b, c = color.YCbCrToRGB(a, b, c)
			}
			o := 4 * i
			img.Pix[o], img.Pix[o+1], img.Pix[o+2], img.Pix[o+3] = a, b, c, 255
		}
		return img, nil
	case pi == "PALETTE COLOR":
		return nil, failf(http.StatusNotAcceptable, "rendering PALETTE COLOR pixel data is not supported; ask for its frames instead")
	}
	return nil, failf(http.StatusNotAcceptable, "rendering %q pixel data of %d samples and %d bits is not supported; ask for its frames instead", info.Photometric, info.SamplesPerPixel, info.BitsAllocated)
}

// renderGray maps a monochrome frame through the modality rescale and a
// VOI window (the request's, else the object's first, else the frame's
// range) to 8 bits (PS3.3 C.11.2.1.2), inverted for MONOCHROME1.
func renderGray(info *dicom.PixelInfo, raw []byte, win *voiWindow) image.Image {
	w, h := info.Columns, info.Rows
	n := w * h
	bits, stored := info.BitsAllocated, info.BitsStored
	shift := uint(max(info.HighBit+1-stored, 0))
	mask := uint64(1)<<uint(stored) - 1
	signed := info.PixelRepresentation == 1
	value := func(i int) float64 {
		var u uint64
		switch bits {
		case 1:
			u = uint64(raw[i/8]>>(i%8)) & 1
		case 8:
			u = uint64(raw[i])
		case 16:
			u = uint64(raw[2*i]) | uint64(raw[2*i+1])<<8
		case 32:
			u = uint64(raw[4*i]) | uint64(raw[4*i+1])<<8 | uint64(raw[4*i+2])<<16 | uint64(raw[4*i+3])<<24
		default:
			o := 8 * i
			for k := 7; k >= 0; k-- {
				u = u<<8 | uint64(raw[o+k])
			}
		}
		u = u >> shift & mask
		v := float64(u)
		if signed && stored > 1 && u&(1<<uint(stored-1)) != 0 {
			v -= float64(uint64(1) << uint(stored))
		}
		return v*info.RescaleSlope + info.RescaleIntercept
	}
	var c, wd float64
	fn := "LINEAR"
	switch {
	case win != nil:
		c, wd, fn = win.center, win.width, win.function
	case info.HasWindow:
		c, wd = info.WindowCenter, info.WindowWidth
		if info.VOILUTFunction == "LINEAR_EXACT" || info.VOILUTFunction == "SIGMOID" {
			fn = info.VOILUTFunction
		}
	default:
		lo, hi := math.Inf(1), math.Inf(-1)
		for i := 0; i < n; i++ {
			v := value(i)
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
		c, wd, fn = (lo+hi)/2, hi-lo, "LINEAR_EXACT"
		if wd <= 0 {
			wd = 1
		}
	}
	voi := func(x float64) uint8 {
		var y float64
		switch fn {
		case "SIGMOID":
			y = 255 / (1 + math.Exp(-4*(x-c)/wd))
		case "LINEAR_EXACT":
			y = ((x-c)/wd + 0.5) * 255
		default:
			if wd < 1 {
				wd = 1
			}
			switch {
			case x <= c-0.5-(wd-1)/2:
				y = 0
			case x > c-0.5+(wd-1)/2:
				y = 255
			default:
				y = ((x-(c-0.5))/(wd-1) + 0.5) * 255
			}
		}
		return uint8(math.Round(math.Max(0, math.Min(255, y))))
	}
	invert := info.Photometric == "MONOCHROME1"
	img := image.NewGray(image.Rect(0, 0, w, h))
	if bits <= 16 {
		// A table over every stored value.
		lut := make([]uint8, 1<<uint(stored))
		for u := range lut {
			v := float64(u)
			if signed && stored > 1 && u&(1<<uint(stored-1)) != 0 {
				v -= float64(uint64(1) << uint(stored))
			}
			lut[u] = voi(v*info.RescaleSlope + info.RescaleIntercept)
			if invert {
				lut[u] = 255 - lut[u]
			}
		}
		for i := 0; i < n; i++ {
			var u uint64
			switch bits {
			case 1:
				u = uint64(raw[i/8]>>(i%8)) & 1
			case 8:
				u = uint64(raw[i])
			default:
				u = uint64(raw[2*i]) | uint64(raw[2*i+1])<<8
			}
			img.Pix[i] = lut[u>>shift&mask]
		}
		return img
	}
	for i := 0; i < n; i++ {
		g := voi(value(i))
		if invert {
			g = 255 - g
		}
		img.Pix[i] = g
	}
	return img
}

// renderJPEG decodes a JPEG frame, checking its size first; a grey image
// is windowed when asked (its 8-bit values taken as stored values) and
// inverted for MONOCHROME1.
func renderJPEG(info *dicom.PixelInfo, raw []byte, win *voiWindow) (image.Image, error) {
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(raw))
	if err == nil && int64(cfg.Width)*int64(cfg.Height)*3 > maxRenderSamples {
		return nil, failf(http.StatusNotAcceptable, "the frame is too large to render; ask for its frames instead")
	}
	var img image.Image
	if err == nil {
		img, err = jpeg.Decode(bytes.NewReader(raw))
	}
	if err != nil {
		return nil, failf(http.StatusNotAcceptable, "Ward cannot decode this JPEG frame (%v); ask for its frames with transfer-syntax=*", err)
	}
	g, gray := img.(*image.Gray)
	if !gray {
		return img, nil
	}
	if win == nil && info.Photometric != "MONOCHROME1" {
		return g, nil
	}
	gi := *info
	gi.BitsAllocated, gi.BitsStored, gi.HighBit, gi.PixelRepresentation = 8, 8, 7, 0
	gi.Rows, gi.Columns = g.Rect.Dy(), g.Rect.Dx()
	pix := g.Pix
	if g.Stride != gi.Columns {
		pix = make([]byte, 0, gi.Rows*gi.Columns)
		for y := 0; y < gi.Rows; y++ {
			pix = append(pix, g.Pix[y*g.Stride:y*g.Stride+gi.Columns]...)
		}
	}
	if win == nil {
		win = &voiWindow{center: 127.5, width: 256, function: "LINEAR_EXACT"}
		gi.RescaleSlope, gi.RescaleIntercept = 1, 0
	}
	return renderGray(&gi, pix, win), nil
}

// fit scales img to fit a vw × vh viewport, keeping its aspect ratio
// (area averaging down, nearest pixel up); vw 0 keeps its size.
func fit(img image.Image, vw, vh int) image.Image {
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	if vw == 0 || sw == 0 || sh == 0 {
		return img
	}
	scale := math.Min(float64(vw)/float64(sw), float64(vh)/float64(sh))
	ow, oh := max(1, int(math.Round(float64(sw)*scale))), max(1, int(math.Round(float64(sh)*scale)))
	if ow == sw && oh == sh {
		return img
	}
	var src []byte
	var stride, ch int
	switch m := img.(type) {
	case *image.Gray:
		src, stride, ch = m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, 1
	case *image.RGBA:
		src, stride, ch = m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, 4
	default:
		rgba := image.NewRGBA(image.Rect(0, 0, sw, sh))
		draw.Draw(rgba, rgba.Bounds(), img, b.Min, draw.Src)
		src, stride, ch = rgba.Pix, rgba.Stride, 4
	}
	out := make([]byte, ow*oh*ch)
	span := func(o, outN, srcN int) (int, int) {
		a := o * srcN / outN
		return a, max(a+1, (o+1)*srcN/outN)
	}
	sum := make([]int, ch)
	for y := 0; y < oh; y++ {
		y0, y1 := span(y, oh, sh)
		for x := 0; x < ow; x++ {
			x0, x1 := span(x, ow, sw)
			clear(sum)
			for sy := y0; sy < y1; sy++ {
				row := src[sy*stride:]
				for sx := x0; sx < x1; sx++ {
					for k := 0; k < ch; k++ {
						sum[k] += int(row[sx*ch+k])
					}
				}
			}
			cnt := (y1 - y0) * (x1 - x0)
			o := (y*ow + x) * ch
			for k := 0; k < ch; k++ {
				out[o+k] = uint8((sum[k] + cnt/2) / cnt)
			}
		}
	}
	r := image.Rect(0, 0, ow, oh)
	if ch == 1 {
		return &image.Gray{Pix: out, Stride: ow, Rect: r}
	}
	return &image.RGBA{Pix: out, Stride: 4 * ow, Rect: r}
}
