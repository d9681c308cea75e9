package dicom

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestWriteFuzzSeeds regenerates testdata/fuzz/ from pydicom's files when
// WARD_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("WARD_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set WARD_WRITE_FUZZ_SEEDS=1 to regenerate")
	}
	names := []string{"test_files/rtplan.dcm", "test_files/rtstruct.dcm", "test_files/UN_sequence.dcm", "test_files/priv_SQ.dcm", "test_files/nested_priv_SQ.dcm", "charset_files/chrH31.dcm", "test_files/SC_rgb_rle.dcm", "test_files/ExplVR_BigEndNoMeta.dcm"}
	idx := func(ts *TransferSyntax) uint8 {
		for i, s := range fuzzSyntaxes {
			if s.UID == ts.UID {
				return uint8(i)
			}
		}
		return 1
	}
	write := func(target, name string, args ...any) {
		dir := filepath.Join("testdata", "fuzz", target)
		os.MkdirAll(dir, 0o755)
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch v := a.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(v)))
			case uint8:
				fmt.Fprintf(&b, "byte(%s)\n", strconv.QuoteRune(rune(v)))
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Kept sequences (ScanWith): code items with a nested sequence, in
	// explicit and implicit VR, little and big endian.
	for i, ts := range fuzzSyntaxes[:3] {
		ds := seqDataSet("ISO_IR 100", codeItem("CT123", "LOCAL", "CT Thorax"), codeItem("MR9", "99X", "Kopf Übersicht"))
		b, err := ds.Bytes(ts)
		if err != nil {
			t.Fatal(err)
		}
		write("FuzzScan", "procedure_code_seq_"+strconv.Itoa(i), b, idx(ts))
	}
	// Pixel Data whose length form contradicts the syntax (issue 14,
	// item 18), and the same that agrees: top level and icon.
	rle := fuzzSyntaxes[4]
	for _, c := range []struct {
		name string
		enc  bool
		icon string
		ts   *TransferSyntax
	}{
		{"pixel_encapsulated_on_native", true, "", ExplicitVRLittleEndian},
		{"pixel_native_on_rle", false, "", rle},
		{"pixel_icon_encapsulated_on_native", false, "encapsulated", ImplicitVRLittleEndian},
		{"pixel_icon_encapsulated_on_rle", true, "encapsulated", rle},
	} {
		b, err := pixelDataSet(c.enc, c.icon).Bytes(c.ts)
		if err != nil {
			t.Fatal(err)
		}
		write("FuzzScan", c.name, b, idx(c.ts))
	}
	for _, n := range names {
		raw, err := os.ReadFile(filepath.Join(pydicomData, n))
		if err != nil {
			t.Fatal(err)
		}
		m, br, err := ReadFileHeader(bytes.NewReader(raw), 4096)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		body.ReadFrom(br)
		ts := LookupTransferSyntax(m.TransferSyntaxUID)
		base := filepath.Base(n)
		write("FuzzReadFileHeader", base, raw)
		write("FuzzScan", base, body.Bytes(), idx(ts))
		write("FuzzReadDataSet", base, body.Bytes(), idx(ts))
		if IsUncompressed(ts) {
			write("FuzzTranscode", base, body.Bytes(), idx(ts), uint8(2))
		}
	}
	small := synthCT(t, 64)
	var dfl bytes.Buffer
	if err := Transcode(&dfl, bytes.NewReader(small), ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian); err != nil {
		t.Fatal(err)
	}
	write("FuzzScan", "synth_deflated", dfl.Bytes(), uint8(3))
	write("FuzzTranscode", "synth_deflated", dfl.Bytes(), uint8(3), uint8(0))
	write("FuzzReadDataSet", "synth_explicit", small, uint8(1))
}
