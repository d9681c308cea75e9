package dicom

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

// Seed corpora live in testdata/fuzz/Fuzz*/ (real, small data sets:
// pydicom's rtplan, rtstruct, UN_sequence, priv_SQ, nested_priv_SQ,
// chrH31, SC_rgb_rle and ExplVR_BigEndNoMeta, plus a deflated one), written
// by TestWriteFuzzSeeds when WARD_WRITE_FUZZ_SEEDS=1.

var fuzzSyntaxes = []*TransferSyntax{ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian, LookupTransferSyntax("1.2.840.10008.1.2.5")}

func fuzzTS(i uint8) *TransferSyntax { return fuzzSyntaxes[int(i)%len(fuzzSyntaxes)] }

func checkErr(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range []error{ErrMalformed, ErrTooLarge, ErrTooDeep, ErrNotConvertible, io.ErrUnexpectedEOF} {
		if errors.Is(err, s) {
			return
		}
	}
	t.Fatalf("error wraps no sentinel: %v", err)
}

func FuzzScan(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, tsi uint8) {
		ts := fuzzTS(tsi)
		all := func(Tag) bool { return true }
		keep := &KeepSequences{Item: func(Tag) func(Tag) bool { return all }, MaxItems: 4, MaxBytes: 512}
		a, err := ScanWith(bytes.NewReader(data), ts, all, 256, keep)
		checkErr(t, err)
		if err != nil {
			return
		}
		for _, s := range a.seqs {
			_ = a.Items(s.tag)
		}
		_ = a.String(PatientName)
		_, _ = a.Int(Rows)
		// Scan and ReadDataSet validate the same structure.
		if _, err := ReadDataSet(bytes.NewReader(data), ts, 1<<24); err != nil && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Scan accepted, ReadDataSet: %v", err)
		}
	})
}

func FuzzReadFileHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, br, err := ReadFileHeader(bytes.NewReader(data), 4096)
		if err != nil {
			if !errors.Is(err, ErrNotDICOM) && !errors.Is(err, ErrNoTransferSyntax) {
				checkErr(t, err)
			}
			return
		}
		if LookupTransferSyntax(m.TransferSyntaxUID) == nil {
			t.Fatalf("accepted invalid transfer syntax %q", m.TransferSyntaxUID)
		}
		io.Copy(io.Discard, br)
	})
}

func FuzzReadDataSet(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, tsi uint8) {
		ts := fuzzTS(tsi)
		ds, err := ReadDataSet(bytes.NewReader(data), ts, 1<<20)
		checkErr(t, err)
		if err != nil {
			return
		}
		_ = ds.String(PatientName)
		var buf bytes.Buffer
		if err := WriteDataSet(&buf, ds, ts); err != nil {
			t.Fatalf("write: %v", err)
		}
		back, err := ReadDataSet(bytes.NewReader(buf.Bytes()), ts, 1<<22)
		if err != nil {
			t.Fatalf("re-read: %v", err)
		}
		if err := equalDataSets(ds, back, ""); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzTranscode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, fi, ti uint8) {
		from, to := fuzzTS(fi), fuzzTS(ti)
		var out bytes.Buffer
		err := Transcode(&out, bytes.NewReader(data), from, to)
		checkErr(t, err)
		if err != nil {
			return
		}
		if _, err := ReadDataSet(bytes.NewReader(out.Bytes()), to, 1<<22); err != nil {
			t.Fatalf("transcoded output unreadable: %v", err)
		}
	})
}

var fuzzTextVRs = []string{"PN", "LO", "SH", "LT", "ST", "UT", "UC", "CS", "UI", "DA"}

// FuzzDecodeText: any Specific Character Set value, VR and bytes decode to
// valid UTF-8 of bounded size, never a panic; an unsupported set decodes as
// Latin-1; text Ward can encode for the set decodes back to itself.
func FuzzDecodeText(f *testing.F) {
	for _, s := range []struct{ cs, raw string }{
		{"", "Doe^John"},
		{"ISO_IR 100", "Buc^J\xe9r\xf4me"},
		{"ISO_IR 144", "\xbb\xee\xdace\xdc\xd1yp\xd3"},
		{"ISO_IR 192", "Wang^XiaoDong=\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1="},
		{"GB18030", "Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab="},
		{`\ISO 2022 IR 87`, "Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"},
		{`ISO 2022 IR 13\ISO 2022 IR 87`, "\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J"},
		{`\ISO 2022 IR 149`, "Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7"},
		{`\ISO 2022 IR 58`, "Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab="},
		{`\ISO 2022 IR 159`, "\x1b$(D\x30\x21\x1b(B"},
		{`\ISO 2022 IR 100`, "a\x1b-A\xe9"},
		{`\ISO 2022 IR 87`, "\x1b$B;3\x1b(B\\x"},
		{"ISO_IR 999", "A\xe9"},
	} {
		f.Add(s.cs, uint8(0), []byte(s.raw))
	}
	f.Fuzz(func(t *testing.T, cs string, vri uint8, raw []byte) {
		charset := splitCharset([]byte(cs))
		vr := fuzzTextVRs[int(vri)%len(fuzzTextVRs)]
		out, ok := DecodeText(charset, vr, raw)
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 %q", out)
		}
		// A byte may become two for the decoder (a JIS X 0201 katakana
		// byte gets its EUC-JP prefix), each at worst a U+FFFD.
		if len(out) > 6*len(raw) {
			t.Fatalf("%d bytes decoded to %d", len(raw), len(out))
		}
		if !ok && out != latin1(raw) {
			t.Fatalf("unsupported set %q: %q is not the Latin-1 reading", cs, out)
		}
		if !ok || !textVR(vr) || strings.ContainsAny(out, "\x1b\ufffd") {
			return
		}
		enc, ok := EncodeText(charset, out)
		if !ok {
			return
		}
		if back, _ := DecodeText(charset, vr, enc); back != out {
			t.Fatalf("%q encoded for %q as %q decodes to %q", out, cs, enc, back)
		}
	})
}
