package archive_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/fsblob"
	"github.com/ward-pacs/ward/store/sqlite"
)

// migrationTarget is an archive over a sqlite index and fs blobs in dir,
// opened as ward migrate opens its destination (recovery first).
type migrationTarget struct {
	ar    *archive.Archive
	idx   *sqlite.DB
	blobs *fsblob.Store
}

func openTarget(t *testing.T, dir string) *migrationTarget {
	t.Helper()
	idx, bs := openStores(t, dir)
	ar := &archive.Archive{Index: idx, Blobs: bs}
	if err := ar.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &migrationTarget{ar: ar, idx: idx, blobs: bs}
}

// close finishes the queued publishing, then closes the stores.
func (m *migrationTarget) close() {
	m.ar.Close()
	m.blobs.Close()
	m.idx.Close()
}

// blobBytes reads an object whole.
func blobBytes(t *testing.T, bs store.Blobs, key string) []byte {
	t.Helper()
	rc, err := bs.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMigrateInterruptedResumes: a migration cancelled part-way, then a
// destination left as a killed run leaves it (an object being written,
// one committed that no row names), is run again: the rerun copies only
// what is missing, the destination's recovery removes what the killed run
// left, and at the end the destination holds every instance once, with
// the source's rows and bytes, and nothing else.
func TestMigrateInterruptedResumes(t *testing.T) {
	ctx := context.Background()
	src := qrFixture(t)
	src.ar.Close() // publish what qrFixture stored
	dir := t.TempDir()
	dst := openTarget(t, dir)

	run, cancel := context.WithCancel(ctx)
	var copied []string
	rep, err := src.ar.Migrate(run, dst.ar, archive.MigrateOptions{
		Copied: func(in *store.Instance) { copied = append(copied, in.SOPInstanceUID) },
		Done: func(r archive.MigrateReport) {
			if r.Instances == 2 {
				cancel()
			}
		},
		Problem: func(p archive.VerifyProblem) { t.Errorf("problem: %+v", p) },
	})
	cancel()
	if !errors.Is(err, context.Canceled) || rep.Copied != 2 || len(copied) != 2 {
		t.Fatalf("cancelled run: %+v, %v", rep, err)
	}
	// As a kill would leave it: an object half written, and one
	// committed but not indexed.
	half, err := dst.blobs.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	half.Write([]byte("half an object"))
	whole, err := dst.blobs.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	whole.Write([]byte("an object without its row"))
	if err := whole.Commit(); err != nil {
		t.Fatal(err)
	}
	dst.close()

	dst = openTarget(t, dir)
	defer dst.close()
	rep, err = src.ar.Migrate(ctx, dst.ar, archive.MigrateOptions{Workers: 3,
		Problem: func(p archive.VerifyProblem) { t.Errorf("problem: %+v", p) }})
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(qrObjects))
	if rep.Instances != n || rep.Copied != n-2 || rep.Present != 2 || rep.Problems != 0 || !rep.CountsMatch() {
		t.Fatalf("resumed run: %+v", rep)
	}
	if rep.Source != (store.Counts{Patients: 3, Studies: 3, Series: 4, Instances: n}) {
		t.Fatalf("source counts %+v", rep.Source)
	}
	dst.ar.Close() // publish
	for _, o := range qrObjects {
		uid := o.inst
		a, err := src.idx.Get(ctx, uid)
		if err != nil {
			t.Fatal(err)
		}
		b, err := dst.idx.Get(ctx, uid)
		if err != nil {
			t.Fatalf("%s not migrated: %v", uid, err)
		}
		if !bytes.Equal(blobBytes(t, src.blobs, a.BlobKey), blobBytes(t, dst.blobs, b.BlobKey)) {
			t.Errorf("%s: the migrated object's bytes differ", uid)
		}
		a.BlobKey, b.BlobKey = "", ""
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: rows differ:\n%+v\n%+v", uid, a, b)
		}
	}
	var blobs, pending int
	if err := dst.blobs.WalkBlobs(ctx, func(key string, published bool) error {
		blobs++
		if !published {
			pending++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if blobs != len(qrObjects) || pending != 0 {
		t.Fatalf("the destination holds %d objects (%d pending), want %d published", blobs, pending, len(qrObjects))
	}

	// A third run copies nothing; a verification reads every object.
	dst.ar = &archive.Archive{Index: dst.idx, Blobs: dst.blobs}
	if err := dst.ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if rep, err = src.ar.Migrate(ctx, dst.ar, archive.MigrateOptions{}); err != nil || rep.Copied != 0 || rep.Present != n {
		t.Fatalf("third run: %+v %v", rep, err)
	}
	if rep, err = src.ar.Migrate(ctx, dst.ar, archive.MigrateOptions{VerifyOnly: true}); err != nil || rep.Verified != n || rep.Problems != 0 {
		t.Fatalf("verification: %+v %v", rep, err)
	}
}

// TestMigrateVerifyFindsCorruption: a destination object altered after
// the migration fails --verify-only, naming its SOP Instance UID; an
// instance only the destination has is a problem and makes the counts
// differ; a source object that does not match its recorded checksum is
// not migrated.
func TestMigrateVerifyFindsCorruption(t *testing.T) {
	ctx := context.Background()
	src := qrFixture(t)
	src.ar.Close()
	dir := t.TempDir()
	dst := openTarget(t, dir)
	defer dst.close()
	if rep, err := src.ar.Migrate(ctx, dst.ar, archive.MigrateOptions{}); err != nil || rep.Problems != 0 {
		t.Fatalf("migration: %+v %v", rep, err)
	}
	dst.ar.Close()
	victim := qrObjects[1].inst
	in, err := dst.idx.Get(ctx, victim)
	if err != nil {
		t.Fatal(err)
	}
	flipped := false
	filepath.WalkDir(filepath.Join(dir, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || flipped || !strings.Contains(p, in.BlobKey) {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b[len(b)-1] ^= 0xff
		flipped = true
		return os.WriteFile(p, b, 0o600)
	})
	if !flipped {
		t.Fatalf("no file for object %s", in.BlobKey)
	}
	dst.ar = &archive.Archive{Index: dst.idx, Blobs: dst.blobs}
	if err := dst.ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	var problems []archive.VerifyProblem
	rep, err := src.ar.Migrate(ctx, dst.ar, archive.MigrateOptions{VerifyOnly: true,
		Problem: func(p archive.VerifyProblem) { problems = append(problems, p) }})
	if err != nil || rep.Problems != 1 || len(problems) != 1 || problems[0].SOPInstanceUID != victim || !strings.Contains(problems[0].Problem, "reads back") {
		t.Fatalf("verification of a corrupted destination: %+v %+v %v", rep, problems, err)
	}

	// The source loses a study: the destination's copy of it is reported.
	if _, err := src.ar.DeleteStudy(ctx, studyC, "test", "tester"); err != nil {
		t.Fatal(err)
	}
	problems = nil
	rep, err = src.ar.Migrate(ctx, dst.ar, archive.MigrateOptions{VerifyOnly: true,
		Problem: func(p archive.VerifyProblem) { problems = append(problems, p) }})
	if err != nil || rep.CountsMatch() || rep.Problems != 2 || problems[1].SOPInstanceUID != studyC+".1.1" || !strings.Contains(problems[1].Problem, "destination only") {
		t.Fatalf("verification with an instance the source lacks: %+v %+v %v", rep, problems, err)
	}

	// A damaged source object is not migrated.
	other := openTarget(t, t.TempDir())
	defer other.close()
	sin, err := src.idx.Get(ctx, qrObjects[0].inst)
	if err != nil {
		t.Fatal(err)
	}
	flipped = false
	filepath.WalkDir(filepath.Join(src.dir, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || flipped || !strings.Contains(p, sin.BlobKey) {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b[len(b)-1] ^= 0xff
		flipped = true
		return os.WriteFile(p, b, 0o600)
	})
	problems = nil
	rep, err = src.ar.Migrate(ctx, other.ar, archive.MigrateOptions{
		Problem: func(p archive.VerifyProblem) { problems = append(problems, p) }})
	if err != nil || rep.Problems != 1 || problems[0].SOPInstanceUID != sin.SOPInstanceUID || rep.CountsMatch() {
		t.Fatalf("migration of a damaged source object: %+v %+v %v", rep, problems, err)
	}
	if _, err := other.idx.Get(ctx, sin.SOPInstanceUID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a damaged source object was migrated: %v", err)
	}
}

// TestMigrateCarriesSequencesAndMetadata: the destination matches the
// indexed sequences of migrated objects (taken again from the objects)
// and returns the metadata the source kept for them.
func TestMigrateCarriesSequencesAndMetadata(t *testing.T) {
	ctx := context.Background()
	src := newFixture(t, "")
	for _, o := range qrObjects {
		obj := o.object(t)
		if o.study == studyA {
			obj.ds.Put(codeSeq([]string{"ISO_IR 192"}, [3]string{"CT123", "LOCAL", "CT Thorax"}))
		}
		if err := src.store(obj, obj.bytes(t)); err != nil {
			t.Fatal(err)
		}
	}
	src.ar.Close()
	uid := qrObjects[0].inst
	in, err := src.idx.Get(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	kept := []byte("ward-metadata/1\n{\"00080018\":{\"vr\":\"UI\",\"Value\":[\"" + uid + "\"]}}")
	if err := src.idx.SetMetadata(ctx, uid, in.BlobKey, kept); err != nil {
		t.Fatal(err)
	}
	dst := openTarget(t, t.TempDir())
	defer dst.close()
	if rep, err := src.ar.Migrate(ctx, dst.ar, archive.MigrateOptions{Workers: 2}); err != nil || rep.Problems != 0 || !rep.CountsMatch() {
		t.Fatalf("migration: %+v %v", rep, err)
	}
	var studies []string
	q := &store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "ProcedureCodeSequence", Kind: store.MatchSequence, Level: store.LevelStudy,
		Items: []store.Key{{Attribute: "CodeValue", Kind: store.MatchSingle, Value: "CT123"}}}}}
	if err := dst.idx.Query(ctx, q, func(m store.Match) error {
		studies = append(studies, m["StudyInstanceUID"])
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(studies) != 1 || studies[0] != studyA {
		t.Fatalf("sequence match in the destination: %v, want %s", studies, studyA)
	}
	var got []byte
	mq := &store.Query{Level: store.LevelImage, WithMetadata: true, Keys: []store.Key{{Attribute: "SOPInstanceUID", Kind: store.MatchSingle, Value: uid}}}
	if err := dst.idx.Instances(ctx, mq, func(m *store.Instance) error {
		got = m.Metadata
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, kept) {
		t.Fatalf("metadata in the destination %q, want the source's %q", got, kept)
	}
}
