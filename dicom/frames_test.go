package dicom

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ward-pacs/ward/internal/testci"
)

// framesOracle prints, per pydicom test file with pixel data, its
// transfer syntax and the SHA-256 of every frame as pydicom splits them:
// native frames as little endian bytes, encapsulated ones as
// generate_pixel_data_frame gives them.
const framesOracle = `
import sys, json, hashlib, pydicom, numpy as np
from pydicom.encaps import generate_pixel_data_frame
out = {}
for f in sys.argv[1:]:
    try:
        ds = pydicom.dcmread(f)
        if 'PixelData' not in ds:
            continue
        n = int(ds.get('NumberOfFrames', 1) or 1)
        ts = ds.file_meta.TransferSyntaxUID
        hs = []
        if ts.is_compressed:
            for fr in generate_pixel_data_frame(ds.PixelData, n):
                hs.append(hashlib.sha256(fr).hexdigest())
        else:
            ba = ds.BitsAllocated
            if ba == 1:
                continue
            spp = 2 if ds.PhotometricInterpretation == 'YBR_FULL_422' else ds.SamplesPerPixel
            size = ds.Rows*ds.Columns*spp*ba//8
            pd = ds.PixelData
            for i in range(n):
                b = pd[i*size:(i+1)*size]
                if not ts.is_little_endian and ba > 8:
                    b = np.frombuffer(b, dtype='>u%d' % (ba//8)).astype('<u%d' % (ba//8)).tobytes()
                hs.append(hashlib.sha256(b).hexdigest())
        out[f] = {"ts": str(ts), "sha": hs}
    except Exception:
        pass
print(json.dumps(out))
`

// TestFramesPydicom: every frame of every pydicom test file with pixel
// data, native (implicit, explicit, big endian, deflated) or encapsulated
// (JPEG, JPEG-LS, JPEG 2000, RLE; single and multi-frame), is the bytes
// pydicom reads.
func TestFramesPydicom(t *testing.T) {
	files := testFiles(t)
	if _, err := exec.LookPath(systemPy); err != nil {
		testci.SkipOrFail(t, "python3 missing")
	}
	out, err := exec.Command(systemPy, append([]string{"-c", framesOracle}, files...)...).Output()
	if err != nil {
		testci.SkipOrFail(t, "pydicom/numpy oracle failed: %v", err)
	}
	var want map[string]struct {
		TS  string   `json:"ts"`
		SHA []string `json:"sha"`
	}
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) < 30 {
		t.Fatalf("oracle read only %d files", len(want))
	}
	// Files pydicom reads leniently and Ward does not: a data set in
	// implicit VR labelled JPEG baseline, and one cut short in its pixel
	// data.
	refused := map[string]bool{"SC_rgb_jpeg.dcm": true, "MR_truncated.dcm": true}
	multi := 0
	for path, w := range want {
		t.Run(filepath.Base(path), func(t *testing.T) {
			if refused[filepath.Base(path)] {
				meta, rc, err := OpenFile(path)
				if err == nil {
					defer rc.Close()
					var f *Frames
					if f, err = OpenFrames(rc, LookupTransferSyntax(meta.TransferSyntaxUID)); err == nil {
						_, err = f.WriteFrame(io.Discard, 1)
						f.Close()
					}
				}
				if !errors.Is(err, ErrMalformed) {
					t.Errorf("read: %v, want ErrMalformed", err)
				}
				return
			}
			meta, rc, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if meta.TransferSyntaxUID != w.TS {
				t.Fatalf("syntax %s, pydicom %s", meta.TransferSyntaxUID, w.TS)
			}
			f, err := OpenFrames(rc, LookupTransferSyntax(meta.TransferSyntaxUID))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Info.NumFrames != len(w.SHA) {
				t.Fatalf("%d frames, pydicom %d", f.Info.NumFrames, len(w.SHA))
			}
			if len(w.SHA) > 1 {
				multi++
			}
			for i, sum := range w.SHA {
				h := sha256.New()
				if _, err := f.WriteFrame(h, i+1); err != nil {
					t.Fatalf("frame %d: %v", i+1, err)
				}
				if got := hex.EncodeToString(h.Sum(nil)); got != sum {
					t.Errorf("frame %d differs from pydicom's", i+1)
				}
			}
			if _, err := f.WriteFrame(io.Discard, 1); len(w.SHA) > 0 && !errors.Is(err, ErrFramePassed) {
				t.Errorf("frame 1 again: %v, want ErrFramePassed", err)
			}
		})
	}
	if multi < 4 {
		t.Errorf("only %d multi-frame files compared", multi)
	}
}

// dsBuilder builds data sets for the tests.
type dsBuilder struct {
	b []byte
	c coding
}

// newDS starts an explicit VR little endian data set.
func newDS() *dsBuilder { return &dsBuilder{c: coding{explicit: true}} }

func (d *dsBuilder) el(t Tag, v string, val []byte) *dsBuilder {
	d.b = appendHeader(d.b, d.c, t, mkVR(v), uint32(len(val)))
	d.b = append(d.b, val...)
	return d
}

func (d *dsBuilder) us(t Tag, n int) *dsBuilder {
	return d.el(t, "US", d.c.appendU16(nil, uint16(n)))
}

func (d *dsBuilder) str(t Tag, v, s string) *dsBuilder {
	if len(s)%2 == 1 {
		s += " "
	}
	return d.el(t, v, []byte(s))
}

func (d *dsBuilder) image(rows, cols, samples, bits, frames int, photometric string) *dsBuilder {
	d.us(SamplesPerPixel, samples).str(PhotometricInterpretation, "CS", photometric)
	if frames > 0 {
		d.str(NumberOfFrames, "IS", strconv.Itoa(frames))
	}
	return d.us(Rows, rows).us(Columns, cols).us(BitsAllocated, bits).us(BitsStored, bits).us(HighBit, bits-1).us(PixelRepresentation, 0)
}

// encapsulated appends Pixel Data of undefined length with the given
// basic offset table and fragments.
func (d *dsBuilder) encapsulated(bot []uint32, frags ...[]byte) *dsBuilder {
	d.b = appendHeader(d.b, d.c, PixelData, vrOB, undefinedLength)
	d.b = appendHeader(d.b, d.c, Item, 0, uint32(4*len(bot)))
	for _, o := range bot {
		d.b = d.c.appendU32(d.b, o)
	}
	for _, f := range frags {
		d.b = appendHeader(d.b, d.c, Item, 0, uint32(len(f)))
		d.b = append(d.b, f...)
	}
	d.b = appendHeader(d.b, d.c, SequenceDelimitationItem, 0, 0)
	return d
}

func readAll(t *testing.T, data []byte, ts *TransferSyntax, order ...int) [][]byte {
	t.Helper()
	f, err := OpenFrames(bytes.NewReader(data), ts)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	for _, n := range order {
		b, err := f.ReadFrame(n, 1<<20)
		if err != nil {
			t.Fatalf("frame %d: %v", n, err)
		}
		out = append(out, b)
	}
	return out
}

var jpegTS = LookupTransferSyntax("1.2.840.10008.1.2.4.50")

// TestFramesFragments: how fragments are grouped into frames, by each
// rule of PS3.5 A.4 the reader follows.
func TestFramesFragments(t *testing.T) {
	soi := func(s string) []byte { return append([]byte{0xFF, 0xD8}, s...) }
	cont := func(s string) []byte { return []byte("xx" + s) }
	// Three frames in five fragments: 2 + 1 + 2.
	frags := [][]byte{soi("a1"), cont("a2"), soi("b1"), soi("c1"), cont("c2")}
	want := []string{string(soi("a1")) + string(cont("a2")), string(soi("b1")), string(soi("c1")) + string(cont("c2"))}
	item := func(b []byte) uint32 { return uint32(8 + len(b)) }
	o1 := item(frags[0]) + item(frags[1])
	o2 := o1 + item(frags[2])
	cases := []struct {
		name string
		data []byte
	}{
		{"markers, no offset table", newDS().image(2, 2, 1, 8, 3, "MONOCHROME2").encapsulated(nil, frags...).b},
		{"basic offset table", newDS().image(2, 2, 1, 8, 3, "MONOCHROME2").encapsulated([]uint32{0, o1, o2}, frags...).b},
	}
	eot := make([]byte, 0, 24)
	for _, o := range []uint64{0, uint64(o1), uint64(o2)} {
		eot = binary.LittleEndian.AppendUint64(eot, o)
	}
	withEOT := newDS().image(2, 2, 1, 8, 3, "MONOCHROME2").el(tagExtendedOffsetTable, "OV", eot).el(tagExtendedOffsetLens, "OV", make([]byte, 24))
	cases = append(cases, struct {
		name string
		data []byte
	}{"extended offset table", withEOT.encapsulated(nil, frags...).b})
	// A table of the wrong size is not used (markers then decide), and
	// attributes of group 0028 not needed are skipped, not held.
	badEOT := newDS().image(2, 2, 1, 8, 3, "MONOCHROME2").el(0x00281201, "OW", make([]byte, 200<<10)).el(tagExtendedOffsetTable, "OV", eot[:16])
	cases = append(cases, struct {
		name string
		data []byte
	}{"extended offset table of the wrong size", badEOT.encapsulated(nil, frags...).b})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := readAll(t, c.data, jpegTS, 1, 2, 3)
			for i := range want {
				if string(got[i]) != want[i] {
					t.Errorf("frame %d: %q, want %q", i+1, got[i], want[i])
				}
			}
			// Skipping frames: only frame 3.
			if got := readAll(t, c.data, jpegTS, 3); string(got[0]) != want[2] {
				t.Errorf("frame 3 alone: %q", got[0])
			}
		})
	}
	t.Run("single frame, all fragments", func(t *testing.T) {
		data := newDS().image(2, 2, 1, 8, 0, "MONOCHROME2").encapsulated(nil, soi("a"), cont("b"), cont("c")).b
		if got := readAll(t, data, jpegTS, 1); string(got[0]) != string(soi("a"))+string(cont("b"))+string(cont("c")) {
			t.Errorf("%q", got[0])
		}
	})
	t.Run("RLE: one fragment per frame", func(t *testing.T) {
		rle := LookupTransferSyntax("1.2.840.10008.1.2.5")
		data := newDS().image(2, 2, 1, 8, 2, "MONOCHROME2").encapsulated(nil, []byte("one."), []byte("two.")).b
		got := readAll(t, data, rle, 1, 2)
		if string(got[0]) != "one." || string(got[1]) != "two." {
			t.Errorf("%q", got)
		}
	})
	t.Run("fewer fragments than frames", func(t *testing.T) {
		data := newDS().image(2, 2, 1, 8, 3, "MONOCHROME2").encapsulated(nil, soi("a"), soi("b")).b
		f, err := OpenFrames(bytes.NewReader(data), jpegTS)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.ReadFrame(3, 1<<20); !errors.Is(err, ErrMalformed) {
			t.Errorf("frame 3: %v", err)
		}
	})
}

// TestFramesNative: byte order, 1-bit frames that do not start on a byte,
// skipping, and the checks made before any frame is read.
func TestFramesNative(t *testing.T) {
	t.Run("big endian 16-bit to little endian", func(t *testing.T) {
		d := &dsBuilder{c: coding{explicit: true, big: true}}
		d.image(1, 2, 1, 16, 2, "MONOCHROME2").el(PixelData, "OW", []byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08})
		got := readAll(t, d.b, ExplicitVRBigEndian, 2)
		if !bytes.Equal(got[0], []byte{0x06, 0x05, 0x08, 0x07}) {
			t.Errorf("% x", got[0])
		}
	})
	t.Run("1-bit frames of 9 pixels", func(t *testing.T) {
		// Three 3x3 frames: all ones, all zeros, alternating from 1.
		bits := []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1}
		packed := make([]byte, 4)
		for i, b := range bits {
			packed[i/8] |= byte(b << (i % 8))
		}
		data := newDS().image(3, 3, 1, 1, 3, "MONOCHROME2").el(PixelData, "OB", packed).b
		got := readAll(t, data, ExplicitVRLittleEndian, 1, 2, 3)
		want := [][]byte{{0xFF, 0x01}, {0, 0}, {0x55, 0x01}}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Errorf("frame %d: % x, want % x", i+1, got[i], want[i])
			}
		}
		if got := readAll(t, data, ExplicitVRLittleEndian, 3); !bytes.Equal(got[0], want[2]) {
			t.Errorf("frame 3 alone: % x", got[0])
		}
	})
	for _, c := range []struct {
		name string
		data []byte
		want error
	}{
		{"no pixel data", newDS().image(2, 2, 1, 8, 1, "MONOCHROME2").b, ErrNoPixelData},
		{"pixel data shorter than its frames", newDS().image(2, 2, 1, 8, 3, "MONOCHROME2").el(PixelData, "OB", make([]byte, 8)).b, ErrMalformed},
		{"no rows", newDS().image(0, 2, 1, 8, 1, "MONOCHROME2").el(PixelData, "OB", make([]byte, 4)).b, ErrMalformed},
		{"bits allocated 12", newDS().image(2, 2, 1, 12, 1, "MONOCHROME2").el(PixelData, "OB", make([]byte, 6)).b, ErrMalformed},
		{"frames over the limit", newDS().image(2, 2, 1, 8, MaxFrames+1, "MONOCHROME2").el(PixelData, "OB", make([]byte, 4)).b, ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := OpenFrames(bytes.NewReader(c.data), ExplicitVRLittleEndian)
			if !errors.Is(err, c.want) {
				t.Errorf("%v, want %v", err, c.want)
			}
		})
	}
	t.Run("frame over the read limit", func(t *testing.T) {
		data := newDS().image(64, 64, 1, 16, 1, "MONOCHROME2").el(PixelData, "OW", make([]byte, 8192)).b
		f, err := OpenFrames(bytes.NewReader(data), ExplicitVRLittleEndian)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.ReadFrame(1, 4096); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%v", err)
		}
	})
}

// TestFramesHugeLengths: lengths read from the stream are never
// allocated: a fragment or offset table claiming 4 GiB in a short input
// ends in a truncation error.
func TestFramesHugeLengths(t *testing.T) {
	d := newDS().image(2, 2, 1, 8, 2, "MONOCHROME2")
	d.b = appendHeader(d.b, d.c, PixelData, vrOB, undefinedLength)
	botHuge := append(appendHeader(append([]byte(nil), d.b...), d.c, Item, 0, 0xFFFFFFF0), 1, 2, 3, 4)
	fragHuge := append(appendHeader(appendHeader(append([]byte(nil), d.b...), d.c, Item, 0, 0), d.c, Item, 0, 0xFFFFFFF0), 0xFF, 0xD8)
	for name, data := range map[string][]byte{"offset table": botHuge, "fragment": fragHuge} {
		t.Run(name, func(t *testing.T) {
			f, err := OpenFrames(bytes.NewReader(data), jpegTS)
			if err == nil {
				_, err = f.ReadFrame(1, 1<<20)
				f.Close()
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Errorf("%v", err)
			}
		})
	}
}

// frameSyntaxes are the syntaxes FuzzFrames reads its inputs in.
var frameSyntaxes = []*TransferSyntax{ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian,
	LookupTransferSyntax("1.2.840.10008.1.2.5"), jpegTS, LookupTransferSyntax("1.2.840.10008.1.2.4.90"), LookupTransferSyntax("1.2.840.10008.1.2.4.80")}

// FuzzFrames: any input and syntax gives frames or an error wrapping a
// sentinel, within the read limit, never a panic or a hang. Seeds in
// testdata/fuzz/FuzzFrames (pydicom files, TestWriteFrameSeeds) and the
// synthetic data sets of the tests above.
func FuzzFrames(f *testing.F) {
	soi := []byte{0xFF, 0xD8, 1, 2}
	f.Add(newDS().image(2, 2, 1, 8, 3, "MONOCHROME2").encapsulated(nil, soi, []byte("ab"), soi, soi).b, uint8(5))
	f.Add(newDS().image(2, 2, 1, 8, 2, "MONOCHROME2").encapsulated([]uint32{0, 12}, soi, soi).b, uint8(5))
	f.Add(newDS().image(3, 3, 1, 1, 3, "MONOCHROME2").el(PixelData, "OB", make([]byte, 4)).b, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, tsi uint8) {
		ts := frameSyntaxes[int(tsi)%len(frameSyntaxes)]
		fr, err := OpenFrames(bytes.NewReader(data), ts)
		if err != nil {
			if !errors.Is(err, ErrNoPixelData) {
				checkErr(t, err)
			}
			return
		}
		defer fr.Close()
		for n := 1; n <= fr.Info.NumFrames && n <= 8; n++ {
			b, err := fr.ReadFrame(n, 1<<16)
			checkErr(t, err)
			if len(b) > 1<<16 {
				t.Fatalf("frame of %d bytes over the limit", len(b))
			}
			if err != nil {
				return
			}
		}
	})
}

// TestWriteFrameSeeds regenerates testdata/fuzz/FuzzFrames from small
// pydicom files when WARD_WRITE_FUZZ_SEEDS=1.
func TestWriteFrameSeeds(t *testing.T) {
	if os.Getenv("WARD_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set WARD_WRITE_FUZZ_SEEDS=1 to regenerate")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzFrames")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"SC_rgb_rle_2frame.dcm", "rtdose_rle.dcm", "rtdose_expb.dcm", "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_small_odd_jpeg.dcm", "MR_small_implicit.dcm", "image_dfl.dcm", "JPEG2000.dcm"} {
		meta, rc, err := OpenFile(filepath.Join(pydicomData, "test_files", name))
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		idx := -1
		for i, s := range frameSyntaxes {
			if s.UID == meta.TransferSyntaxUID {
				idx = i
			}
		}
		if idx < 0 {
			t.Fatalf("%s: syntax %s not among the fuzz syntaxes", name, meta.TransferSyntaxUID)
		}
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\nbyte(" + strconv.QuoteRune(rune(idx)) + ")\n")
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// countingSeeker counts the bytes read through it.
type countingSeeker struct {
	*bytes.Reader
	read int64
}

func (c *countingSeeker) Read(p []byte) (int, error) {
	n, err := c.Reader.Read(p)
	c.read += int64(n)
	return n, err
}

// TestFramesSeek: over a seekable stream, the frames and fragments passed
// over are not read; what is read equals what a plain reader gives.
func TestFramesSeek(t *testing.T) {
	const side = 512 // 512 KiB frames of 16 bits
	frame := func(v byte) []byte { return bytes.Repeat([]byte{v, 0}, side*side) }
	var px []byte
	for v := range byte(4) {
		px = append(px, frame(v+1)...)
	}
	native := newDS().image(side, side, 1, 16, 4, "MONOCHROME2").el(PixelData, "OW", px).b
	soi := func(v byte) []byte { return append([]byte{0xFF, 0xD8}, bytes.Repeat([]byte{v}, 300<<10)...) }
	enc := newDS().image(side, side, 1, 8, 4, "MONOCHROME2").encapsulated(nil, soi(1), soi(2), soi(3), soi(4)).b
	for _, c := range []struct {
		name string
		data []byte
		ts   *TransferSyntax
		want []byte
	}{
		{"native", native, ExplicitVRLittleEndian, frame(4)},
		{"fragments", enc, jpegTS, soi(4)},
	} {
		t.Run(c.name, func(t *testing.T) {
			cs := &countingSeeker{Reader: bytes.NewReader(c.data)}
			f, err := OpenFrames(cs, c.ts)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := f.ReadFrame(4, 1<<22)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, c.want) {
				t.Fatal("frame 4 differs")
			}
			if limit := int64(len(c.want)) + 5*bufSize; cs.read > limit { // a buffer per header read
				t.Errorf("read %d bytes for a frame of %d: the frames before were read, not skipped", cs.read, len(c.want))
			}
			// The same through a reader that cannot seek.
			plain, err := OpenFrames(io.MultiReader(bytes.NewReader(c.data)), c.ts)
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			if b, err := plain.ReadFrame(4, 1<<22); err != nil || !bytes.Equal(b, c.want) {
				t.Errorf("plain reader: %v", err)
			}
		})
	}
}
