package deid

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/dicom"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test")

const pydicomFiles = "/usr/lib/python3/dist-packages/pydicom/data/test_files"

// skipOrFail skips, or fails under CI=true, when a test input is missing.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// sharedData finds ../shared/data/NAME from the repository (CI checks the
// repository out beside shared/): the first ancestor of the working
// directory holding shared/data/NAME.
func sharedData(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "shared", "data", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		up := filepath.Dir(dir)
		if up == dir {
			skipOrFail(t, "shared/data/%s not found beside the repository", name)
		}
		dir = up
	}
}

// TestTableMatchesReference checks the transcribed Table E.1-1 against the
// independent machine-readable copy: every attribute of either is in the
// other, with the same name and the same action in every column, except
// the rows listed (where the two editions differ, each with its reason).
func TestTableMatchesReference(t *testing.T) {
	b, err := os.ReadFile(sharedData(t, "ps3.15-table-e.1-1.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref []map[string]string
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	// refTag is the reference's spelling of a tag; the private attributes
	// row is "(GGGG,EEEE) WHERE GGGG IS ODD" there.
	refTag := func(s string) string {
		s = strings.ToUpper(s)
		if strings.HasPrefix(s, "(GGGG,EEEE)") {
			return "(GGGG,EEEE)"
		}
		return s
	}
	byTag := map[string]map[string]string{}
	for _, e := range ref {
		byTag[refTag(e["tag"])] = e
	}
	// Rows where this table's edition and the reference differ, each with
	// the reason. None for 2024b: the reference (extracted 2024-04-18)
	// agrees with it on every attribute.
	differ := map[string]string{}
	ours := map[string]bool{}
	found := 0
	for i := range table {
		r := &table[i]
		tag := refTag(r.tag)
		ours[tag] = true
		e := byTag[tag]
		if e == nil {
			t.Errorf("%s %s: not in the reference", r.tag, r.name)
			continue
		}
		if why, ok := differ[tag]; ok {
			t.Logf("%s %s: differs from the reference (%s)", r.tag, r.name, why)
			continue
		}
		found++
		if name := strings.Join(strings.Fields(e["name"]), " "); name != r.name {
			t.Errorf("%s: name %q, the reference has %q", r.tag, r.name, name)
		}
		for _, c := range []struct{ key, ours string }{
			{"basicProfile", r.basic}, {"rtnSafePrivOpt", r.safePriv}, {"rtnUIDsOpt", r.uids}, {"rtnDevIdOpt", r.devID},
			{"rtnInstIdOpt", r.instID}, {"rtnPatCharsOpt", r.patChars}, {"rtnLongFullDatesOpt", r.fullDates},
			{"rtnLongModifDatesOpt", r.modifDates}, {"cleanDescOpt", r.cleanDesc}, {"cleanStructContOpt", r.cleanStruct},
			{"cleanGraphOpt", r.cleanGraph},
		} {
			if e[c.key] != c.ours {
				t.Errorf("%s %s: %s is %q, the reference has %q", r.tag, r.name, c.key, c.ours, e[c.key])
			}
		}
	}
	for tag, e := range byTag {
		if !ours[tag] {
			t.Errorf("%s %s: in the reference, not in the table", e["tag"], e["name"])
		}
	}
	for tag := range differ {
		if !ours[tag] {
			t.Errorf("%s: listed as differing, not in the table", tag)
		}
	}
	t.Logf("PS3.15 %s: %d of the reference's %d attributes match; %d listed as differing", Edition, found, len(ref), len(differ))
	if found < 615 {
		t.Errorf("only %d attributes matched", found)
	}
}

// TestTableActions: every action code of the table is one Transform
// implements (actionOf), so that none falls to the catch-all removal
// unnoticed; and the U rows name UID attributes (or sequences of them, or
// attributes Ward's dictionary does not know: remapUIDs takes a UN value
// made of UIDs as one).
func TestTableActions(t *testing.T) {
	for i := range table {
		r := &table[i]
		for _, a := range []string{r.basic, r.safePriv, r.uids, r.devID, r.instID, r.patChars, r.fullDates, r.modifDates, r.cleanDesc, r.cleanStruct, r.cleanGraph} {
			if _, ok := actionOf[a]; !ok {
				t.Errorf("%s %s: action %q not implemented", r.tag, r.name, a)
			}
		}
	}
	for tag, r := range tableIndex.exact {
		vr := dicom.VROf(tag)
		if actionOf[r.basic] == actRemap && vr != "UI" && vr != "SQ" && vr != "UN" {
			t.Errorf("%s %s: U on VR %s", r.tag, r.name, vr)
		}
	}
	if tableIndex.private == nil || tableIndex.curve == nil || len(tableIndex.overlay) == 0 {
		t.Errorf("the private, curve and overlay rows are missing")
	}
}

func mustProfile(t testing.TB, s string) *Profile {
	t.Helper()
	p, err := ParseProfile(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func transformFile(t testing.TB, path string, cfg *Config) ([]byte, *Result, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	res, err := Transform(&out, f, cfg)
	return out.Bytes(), res, err
}

func readOut(t testing.TB, b []byte) *dicom.DataSet {
	t.Helper()
	meta, br, err := dicom.ReadFileHeader(bytes.NewReader(b), dicom.DefaultMetaLimit)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := dicom.ReadDataSet(br, dicom.LookupTransferSyntax(meta.TransferSyntaxUID), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func TestProfileParse(t *testing.T) {
	for _, bad := range []string{"", "modified-dates", "basic,clean-pixel-data", "basic,clean-graphics", "basic,nope", "basic,full-dates,modified-dates"} {
		if _, err := ParseProfile(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := ParseProfile("basic,clean-pixel-data"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("clean-pixel-data: %v", err)
	}
	p := mustProfile(t, "basic,uids,modified-dates")
	if p.String() != "basic,modified-dates,uids" {
		t.Errorf("String %q", p.String())
	}
}

// TestOverlaysAndPrivates: a data set with an overlay, a curve and private
// attributes (top level and in a sequence) loses them all under the Basic
// Profile; Retain Safe Private keeps only the listed private attribute.
func TestOverlaysAndPrivates(t *testing.T) {
	ds := baseCT()
	ds.Put(&dicom.Element{Tag: dicom.NewTag(0x0019, 0x0010), VR: "LO", Value: []byte("GEMS_ACQU_01")})
	ds.Put(&dicom.Element{Tag: dicom.NewTag(0x0019, 0x1023), VR: "DS", Value: []byte("1.5 ")})
	ds.Put(&dicom.Element{Tag: dicom.NewTag(0x0019, 0x1099), VR: "LO", Value: []byte("Doe^Jane")})
	ds.Put(&dicom.Element{Tag: dicom.NewTag(0x5000, 0x3000), VR: "OW", Value: []byte{1, 2}})
	ds.Put(&dicom.Element{Tag: dicom.NewTag(0x6000, 0x0010), VR: "US", Value: []byte{1, 0}})
	ds.Put(&dicom.Element{Tag: dicom.NewTag(0x6000, 0x3000), VR: "OW", Value: []byte{1, 2}})
	item := &dicom.DataSet{}
	item.Put(&dicom.Element{Tag: dicom.NewTag(0x0009, 0x0010), VR: "LO", Value: []byte("ACME")})
	item.Put(&dicom.Element{Tag: dicom.NewTag(0x0009, 0x1001), VR: "LO", Value: []byte("Doe^Jane")})
	item.Put(&dicom.Element{Tag: dicom.NewTag(0x0008, 0x1155), VR: "UI", Value: []byte("1.2.3.4\x00")})
	ds.Put(&dicom.Element{Tag: dicom.NewTag(0x0008, 0x1140), VR: "SQ", Items: []*dicom.DataSet{item}})
	body, err := ds.Bytes(dicom.LookupTransferSyntax("1.2.840.10008.1.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	var in bytes.Buffer
	if err := dicom.WriteFileHeader(&in, &dicom.FileMeta{MediaStorageSOPClassUID: "1.2.840.10008.5.1.4.1.1.2", MediaStorageSOPInstanceUID: "1.2.3.4", TransferSyntaxUID: "1.2.840.10008.1.2.1"}); err != nil {
		t.Fatal(err)
	}
	in.Write(body)
	for _, prof := range []string{"basic", "basic,safe-private"} {
		var out bytes.Buffer
		res, err := Transform(&out, bytes.NewReader(in.Bytes()), &Config{Profile: mustProfile(t, prof), Secret: testSecret})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(out.Bytes(), []byte("Doe")) || bytes.Contains(out.Bytes(), []byte("PID123")) {
			t.Errorf("%s: identity left", prof)
		}
		got := readOut(t, out.Bytes())
		for _, e := range got.Elements {
			g := e.Tag.Group()
			if g >= 0x5000 && g < 0x6100 {
				t.Errorf("%s: %v kept", prof, e.Tag)
			}
		}
		safe := got.Get(dicom.NewTag(0x0019, 0x1023))
		if (prof == "basic") != (safe == nil) {
			t.Errorf("%s: safe private attribute %v", prof, safe)
		}
		if got.Get(dicom.NewTag(0x0019, 0x1099)) != nil {
			t.Errorf("%s: unsafe private attribute kept", prof)
		}
		ref := got.Get(dicom.NewTag(0x0008, 0x1140))
		if ref == nil || len(ref.Items) != 1 || len(ref.Items[0].Elements) != 1 || ref.Items[0].String(dicom.NewTag(0x0008, 0x1155)) != res.SOPInstanceUID {
			t.Errorf("%s: referenced image item %+v", prof, ref)
		}
	}
}
