package archive_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/archive"
)

// blobFile is the file holding the instance's published object.
func (f *fixture) blobFile(t *testing.T, uid string) string {
	t.Helper()
	in, err := f.idx.Get(context.Background(), uid)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.files(t, "objects") {
		if strings.HasPrefix(filepath.Base(p), in.BlobKey) {
			return filepath.Join(f.dir, "objects", p)
		}
	}
	t.Fatalf("no file for %s", uid)
	return ""
}

// flipBit changes one bit of the file, fromEnd bytes before its end.
func flipBit(t *testing.T, path string, fromEnd int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-fromEnd] ^= 0x40
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func verifyAll(t *testing.T, f *fixture, studies ...string) (archive.VerifyReport, map[string]string) {
	t.Helper()
	got := map[string]string{}
	rep, err := f.ar.Verify(context.Background(), archive.VerifyOptions{Studies: studies}, func(p archive.VerifyProblem) {
		if p.SOPInstanceUID == "" && p.BlobKey == "" {
			t.Errorf("a problem names neither instance nor object: %+v", p)
		}
		if got[p.SOPInstanceUID] != "" {
			t.Errorf("%s reported twice", p.SOPInstanceUID)
		}
		got[p.SOPInstanceUID] = p.Problem
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Problems != int64(len(got)) {
		t.Errorf("report counts %d problems, %d were reported", rep.Problems, len(got))
	}
	return rep, got
}

func TestVerify(t *testing.T) {
	f := qrFixture(t)
	// Finish the publishing queued after the responses, so that the files
	// altered below stay where they are.
	f.ar.Close()
	rep, problems := verifyAll(t, f)
	if rep.Instances != int64(len(qrObjects)) || len(problems) != 0 || rep.Bytes == 0 || rep.NoChecksum != 0 {
		t.Fatalf("clean archive: %+v %v", rep, problems)
	}
	size := rep.Bytes

	// Damage four objects, each in its own way.
	flipBit(t, f.blobFile(t, studyA+".1.1"), 3)
	if err := os.Truncate(f.blobFile(t, studyA+".1.2"), 200); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.blobFile(t, studyA+".2.1")); err != nil {
		t.Fatal(err)
	}
	pre := f.blobFile(t, studyB+".1.1")
	b, err := os.ReadFile(pre)
	if err != nil {
		t.Fatal(err)
	}
	copy(b, "MZ\x90\x00")
	if err := os.WriteFile(pre, b, 0o640); err != nil {
		t.Fatal(err)
	}

	rep, problems = verifyAll(t, f)
	want := map[string][]string{
		studyA + ".1.1": {"checksum"},
		studyA + ".1.2": {"200 bytes, the index recorded", "checksum"},
		studyA + ".2.1": {"missing"},
		studyB + ".1.1": {"preamble is not zero", "checksum"},
	}
	if rep.Instances != int64(len(qrObjects)) || len(problems) != len(want) || rep.Bytes >= size {
		t.Errorf("damaged archive: %+v %v", rep, problems)
	}
	for uid, frags := range want {
		for _, s := range frags {
			if !strings.Contains(problems[uid], s) {
				t.Errorf("%s: %q lacks %q", uid, problems[uid], s)
			}
		}
	}

	// An object no row names, as a lost deletion would leave: found when
	// every study is verified.
	ctx := context.Background()
	bw, err := f.blobs.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bw.Write([]byte("left behind")); err != nil {
		t.Fatal(err)
	}
	if err := bw.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := f.blobs.Publish(ctx, bw.Key()); err != nil {
		t.Fatal(err)
	}
	rep, problems = verifyAll(t, f)
	if rep.Unreferenced != 1 || rep.Problems != int64(len(want))+1 || !strings.Contains(problems[""], "no index row names") {
		t.Errorf("unreferenced object: %+v %v", rep, problems)
	}

	// One study only.
	rep, problems = verifyAll(t, f, studyB)
	if rep.Instances != 1 || len(problems) != 1 || problems[studyB+".1.1"] == "" {
		t.Errorf("study B: %+v %v", rep, problems)
	}
	if _, err := f.ar.Verify(context.Background(), archive.VerifyOptions{Studies: []string{"1.2.3.4.5"}}, func(archive.VerifyProblem) {}); err == nil {
		t.Error("an unknown study verified")
	}

	// A rate cap spreads the reading out: bytes that take a second at the
	// cap take at least half of one (only the last object's reading is
	// not waited for).
	full, _ := verifyAll(t, f)
	start := time.Now()
	var progress []archive.VerifyReport
	capped, err := f.ar.Verify(context.Background(), archive.VerifyOptions{MaxRate: full.Bytes,
		Progress: func(r archive.VerifyReport) { progress = append(progress, r) }, ProgressEvery: 100 * time.Millisecond},
		func(archive.VerifyProblem) {})
	if err != nil || capped.Bytes != full.Bytes {
		t.Fatalf("capped: %+v %v, uncapped %+v", capped, err, full)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("%d bytes at %d bytes/s took %v", capped.Bytes, full.Bytes, d)
	}
	// Progress came while it ran, counting up.
	if len(progress) == 0 {
		t.Error("no progress reported during a verification of half a second or more")
	}
	for i, p := range progress {
		if p.Instances == 0 || p.Instances >= capped.Instances || (i > 0 && p.Instances < progress[i-1].Instances) {
			t.Errorf("progress %d: %+v of %+v", i, p, capped)
		}
	}
}

// TestVerifyChangedMeanwhile: a row read before its instance was replaced
// (new object, the old one deleted) or deleted is not reported: the
// instance is verified as it is now, or skipped.
func TestVerifyChangedMeanwhile(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, archive.DuplicateReplace)
	first := qrObjects[0]
	obj := first.object(t)
	if err := f.store(obj, obj.bytes(t)); err != nil {
		t.Fatal(err)
	}
	old, err := f.idx.Get(ctx, first.inst)
	if err != nil {
		t.Fatal(err)
	}
	second := first
	second.name = "Doe^Jane"
	obj = second.object(t)
	if err := f.store(obj, obj.bytes(t)); err != nil {
		t.Fatal(err)
	}
	f.ar.Close() // the replaced object is deleted
	in, n, msg := archive.VerifyRow(f.ar, ctx, old)
	if in == nil || in.BlobKey == old.BlobKey || msg != "" || n == 0 {
		t.Fatalf("replaced meanwhile: %+v %d %q", in, n, msg)
	}
	if err := f.idx.Delete(ctx, first.inst); err != nil {
		t.Fatal(err)
	}
	if in, _, msg := archive.VerifyRow(f.ar, ctx, old); in != nil || msg != "" {
		t.Fatalf("deleted meanwhile: %+v %q", in, msg)
	}
}
