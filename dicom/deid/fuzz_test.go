package deid

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ward-pacs/ward/dicom"
)

var fuzzProfiles = []string{
	"basic",
	"basic,modified-dates,safe-private,clean-descriptors,clean-structured-content",
	"basic,uids,full-dates,patient-characteristics,device-identity,institution-identity",
}

// FuzzDeidentify feeds arbitrary objects to Transform under each profile:
// an error, never a panic or a hang; what it writes must read back as a
// valid object without private attributes outside the safe list.
func FuzzDeidentify(f *testing.F) {
	f.Add([]byte("DICM"), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		prof := fuzzProfiles[int(which)%len(fuzzProfiles)]
		var out bytes.Buffer
		_, err := Transform(&out, bytes.NewReader(b), &Config{Profile: mustProfile(t, prof), Secret: testSecret, AcceptBurnedIn: which&0x80 != 0})
		if err != nil {
			return
		}
		meta, br, err := dicom.ReadFileHeader(bytes.NewReader(out.Bytes()), dicom.DefaultMetaLimit)
		if err != nil {
			t.Fatalf("output unreadable: %v", err)
		}
		ds, err := dicom.ReadDataSet(br, dicom.LookupTransferSyntax(meta.TransferSyntaxUID), 1<<30)
		if err != nil {
			t.Fatalf("output unreadable: %v", err)
		}
		if ds.String(tagIdentityRemoved) != "YES" {
			t.Fatalf("no Patient Identity Removed")
		}
		if which%3 == 0 {
			for _, e := range ds.Elements {
				if e.Tag.Group()&1 == 1 {
					t.Fatalf("private %v kept", e.Tag)
				}
			}
		}
	})
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzDeidentify from small
// pydicom files when WARD_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("WARD_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set WARD_WRITE_FUZZ_SEEDS=1 to regenerate")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDeidentify")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"rtplan.dcm", "priv_SQ.dcm", "nested_priv_SQ.dcm", "UN_sequence.dcm", "ExplVR_BigEndNoMeta.dcm", "reportsi.dcm", "image_dfl.dcm", "SC_rgb_small_odd.dcm"} {
		b, err := os.ReadFile(filepath.Join(pydicomFiles, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 16<<10 {
			t.Fatalf("%s: %d bytes, too large for a seed", name, len(b))
		}
		seed := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nbyte(%s)\n", strconv.Quote(string(b)), strconv.QuoteRune(rune(uint8(i|0x80))))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(seed), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
