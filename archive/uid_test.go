package archive_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
)

// TestStoreRefusesBadUIDs: Study and Series Instance UIDs that could name
// a path, or are longer than 64 characters, are refused with 0xC000 and
// the offending element, and nothing is stored (issue 14, item 13). A
// leading zero in a component, seen from real modalities, is stored.
func TestStoreRefusesBadUIDs(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		tag         dicom.Tag
	}{
		{"study with a slash", "1.2.826.0.1/../../etc", dicom.StudyInstanceUID},
		{"study dot-dot", "..", dicom.StudyInstanceUID},
		{"study too long", "1.2." + strings.Repeat("3", 63), dicom.StudyInstanceUID},
		{"series with a slash", "1.2/3", dicom.SeriesInstanceUID},
		{"series with a backslash", `1.2\3`, dicom.SeriesInstanceUID},
		{"series dot", ".", dicom.SeriesInstanceUID},
		{"series with a control character", "1.2\x1b3", dicom.SeriesInstanceUID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "")
			o := ctObject(t, "1.2.826.0.1.3680043.10.13.1")
			o.ds.Set(tc.tag, tc.value)
			se := wantStatus(t, f.store(o, o.bytes(t)), dimse.StatusCannotUnderstand, dicom.Keyword(tc.tag))
			if len(se.Offending) != 1 || se.Offending[0] != uint32(tc.tag) {
				t.Errorf("offending = %x, want %08x", se.Offending, uint32(tc.tag))
			}
			if strings.ContainsAny(se.Comment, "\x1b") {
				t.Errorf("the comment repeats a control character: %q", se.Comment)
			}
			f.checkNothingStored(t, o.inst, 0)
		})
	}
	t.Run("SOP instance dot-dot", func(t *testing.T) {
		// The dispatcher refuses it first (0117); the archive refuses it
		// on its own too.
		f := newFixture(t, "")
		o := ctObject(t, "..")
		wantStatus(t, f.store(o, o.bytes(t)), dimse.StatusCannotUnderstand, "sop instance uid")
		f.checkNothingStored(t, "..", 0)
	})
	t.Run("leading zero accepted", func(t *testing.T) {
		f := newFixture(t, "")
		o := ctObject(t, "1.2.826.0.1.3680043.10.013.2")
		o.ds.Set(dicom.StudyInstanceUID, "1.2.840.0113654.2.70.1")
		if err := f.store(o, o.bytes(t)); err != nil {
			t.Fatal(err)
		}
		in, err := f.idx.Get(context.Background(), o.inst)
		if err != nil || in.StudyInstanceUID != "1.2.840.0113654.2.70.1" {
			t.Fatalf("stored %+v, %v", in, err)
		}
	})
}

// TestExportBadStoredUID: an index row holding UIDs that could name a
// path (stored before Ward checked them) is exported under derived names
// inside the export folder, and the rest of the study with it.
func TestExportBadStoredUID(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "")
	const study = "1.2.826.0.1.3680043.10.13.10"
	good := ctObject(t, "1.2.826.0.1.3680043.10.13.11")
	good.ds.Set(dicom.StudyInstanceUID, study)
	if err := f.store(good, good.bytes(t)); err != nil {
		t.Fatal(err)
	}
	bad := ctObject(t, "1.2.826.0.1.3680043.10.13.12")
	bad.ds.Set(dicom.StudyInstanceUID, study)
	if err := f.store(bad, bad.bytes(t)); err != nil {
		t.Fatal(err)
	}
	f.ar.Close() // finish publishing
	in, err := f.idx.Get(ctx, bad.inst)
	if err != nil {
		t.Fatal(err)
	}
	// Plant bad values in the row, as an older Ward could have stored them.
	if err := f.idx.Delete(ctx, bad.inst); err != nil {
		t.Fatal(err)
	}
	in.SeriesInstanceUID = "../../../escaped"
	in.SOPInstanceUID = ".."
	if _, err := f.idx.Put(ctx, in); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	out := filepath.Join(root, "export")
	d, err := f.ar.ExportStudy(ctx, study, out)
	if err != nil {
		t.Fatalf("export refused the study: %v", err)
	}
	if n := d.Classes[ctImageStorage]; n != 2 {
		t.Errorf("exported %d objects, want 2", n)
	}
	var files []string
	filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			rel, _ := filepath.Rel(out, p)
			files = append(files, rel)
		}
		return nil
	})
	if len(files) != 2 {
		t.Fatalf("files written: %v", files)
	}
	for _, rel := range files {
		if strings.HasPrefix(rel, "..") {
			t.Errorf("%s is outside the export folder", rel)
		}
		if !strings.HasPrefix(rel, study+string(filepath.Separator)) {
			t.Errorf("%s is not in the study's folder", rel)
		}
	}
	// ward study verify names the row.
	_, problems := verifyAll(t, f, study)
	if p := problems[".."]; !strings.Contains(p, "Ward now refuses") {
		t.Errorf("verify: %v", problems)
	}
}
