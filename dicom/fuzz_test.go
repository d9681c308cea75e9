package dicom

import (
	"bytes"
	"errors"
	"io"
	"testing"
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
