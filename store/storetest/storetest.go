// Package storetest is the conformance suite every store backend passes.
// A backend's test calls TestIndex or TestBlobs with a function that opens a
// fresh, empty store, and TestRecovery with a function that opens an index
// and blobs pair over one persistent location. TestMatrix runs all of it,
// and TestNodes (the multi-node contract), over every pairing of the
// backends Ward is built with, opened by store.Open, and checks that each
// still has the capabilities it is meant to.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-pacs/ward/store"
)

// NewKey returns a random blob key (32 hex digits).
func NewKey() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Sample returns an instance with every field set, distinct per n, in study
// study and series series (both small integers naming UIDs).
func Sample(n, study, series int) *store.Instance {
	return &store.Instance{
		SOPInstanceUID:    fmt.Sprintf("1.2.826.0.1.3680043.10.1234.3.%d", n),
		SOPClassUID:       "1.2.840.10008.5.1.4.1.1.2",
		TransferSyntaxUID: "1.2.840.10008.1.2.1",
		InstanceNumber:    fmt.Sprint(n),
		ContentDate:       "20240131",
		ContentTime:       "101112.123456",
		NumberOfFrames:    "1",
		Rows:              512,
		Columns:           256,

		SeriesInstanceUID:               fmt.Sprintf("1.2.826.0.1.3680043.10.1234.2.%d", series),
		Modality:                        "CT",
		SeriesNumber:                    fmt.Sprint(series),
		SeriesDescription:               "Thorax à contraste",
		SeriesDate:                      "20240131",
		SeriesTime:                      "101000",
		BodyPartExamined:                "CHEST",
		PerformedProcedureStepStartDate: "20240131",

		StudyInstanceUID:       fmt.Sprintf("1.2.826.0.1.3680043.10.1234.1.%d", study),
		StudyDate:              "20240131",
		StudyTime:              "100000",
		AccessionNumber:        fmt.Sprintf("ACC%d", study),
		StudyID:                fmt.Sprint(study),
		StudyDescription:       "CT Thorax",
		ReferringPhysicianName: "Müller^Hans",

		PatientID:         fmt.Sprintf("PID%d", study),
		IssuerOfPatientID: "HOSP",
		PatientName:       "Dürer^Albrecht^^Dr.",
		PatientBirthDate:  "19700101",
		PatientSex:        "M",

		SpecificCharacterSet: "ISO_IR 100",
		CharsetUnsupported:   true,

		SourceAET:  "MODALITY1",
		SourceAddr: "192.0.2.7:104",
		ReceivedAt: time.Date(2024, 1, 31, 10, 11, 12, 123456789, time.UTC),

		BlobKey: NewKey(),
		Size:    123456789012,
	}
}

func equalInstance(a, b *store.Instance) bool {
	if !a.ReceivedAt.Equal(b.ReceivedAt) {
		return false
	}
	x, y := *a, *b
	x.ReceivedAt, y.ReceivedAt = time.Time{}, time.Time{}
	x.Sequences, y.Sequences = nil, nil // held by the parents, not returned by Get
	return reflect.DeepEqual(x, y)
}

func mustPut(t *testing.T, ix store.Index, in *store.Instance) store.PutResult {
	t.Helper()
	res, err := ix.Put(context.Background(), in)
	if err != nil {
		t.Fatalf("Put(%s): %v", in.SOPInstanceUID, err)
	}
	return res
}

func mustGet(t *testing.T, ix store.Index, uid string) *store.Instance {
	t.Helper()
	got, err := ix.Get(context.Background(), uid)
	if err != nil {
		t.Fatalf("Get(%s): %v", uid, err)
	}
	return got
}

func wantCount(t *testing.T, ix store.Index, want int64) {
	t.Helper()
	n, err := ix.CountInstances(context.Background())
	if err != nil {
		t.Fatalf("CountInstances: %v", err)
	}
	if n != want {
		t.Errorf("CountInstances = %d, want %d", n, want)
	}
}

// wantCounts checks every level when the index implements store.Counter.
func wantCounts(t *testing.T, ix store.Index, want store.Counts) {
	t.Helper()
	wantCount(t, ix, want.Instances)
	c, ok := ix.(store.Counter)
	if !ok {
		return
	}
	got, err := c.Counts(context.Background())
	if err != nil {
		t.Fatalf("Counts: %v", err)
	}
	if got != want {
		t.Errorf("Counts = %+v, want %+v", got, want)
	}
}

func pending(t *testing.T, ix store.Index) []string {
	t.Helper()
	keys, err := ix.PendingBlobDeletes(context.Background(), 0)
	if err != nil {
		t.Fatalf("PendingBlobDeletes: %v", err)
	}
	slices.Sort(keys)
	return keys
}

func hasBlob(t *testing.T, ix store.Index, key string) bool {
	t.Helper()
	ok, err := ix.HasBlob(context.Background(), key)
	if err != nil {
		t.Fatalf("HasBlob: %v", err)
	}
	return ok
}

// TestIndex runs the Index conformance suite. open returns a new, empty
// index; TestIndex closes it.
func TestIndex(t *testing.T, open func(t *testing.T) store.Index) {
	ctx := context.Background()
	run := func(name string, f func(t *testing.T, ix store.Index)) {
		t.Run(name, func(t *testing.T) {
			ix := open(t)
			defer func() {
				if err := ix.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			f(t, ix)
		})
	}

	run("RoundTrip", func(t *testing.T, ix store.Index) {
		in := Sample(1, 1, 1)
		if res := mustPut(t, ix, in); res != (store.PutResult{}) {
			t.Errorf("first Put = %+v, want zero PutResult", res)
		}
		if got := mustGet(t, ix, in.SOPInstanceUID); !equalInstance(got, in) {
			t.Errorf("Get =\n%+v\nwant\n%+v", got, in)
		}
		if !hasBlob(t, ix, in.BlobKey) {
			t.Error("HasBlob(new key) = false")
		}
		if hasBlob(t, ix, NewKey()) {
			t.Error("HasBlob(unknown key) = true")
		}
		wantCounts(t, ix, store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: 1})

		// Zero values round-trip too.
		z := &store.Instance{SOPInstanceUID: "1.2.3", SeriesInstanceUID: "1.2.3.1", StudyInstanceUID: "1.2.3.2", BlobKey: NewKey()}
		mustPut(t, ix, z)
		if got := mustGet(t, ix, z.SOPInstanceUID); !equalInstance(got, z) {
			t.Errorf("Get =\n%+v\nwant\n%+v", got, z)
		}
	})

	run("InsertAndChecksum", func(t *testing.T, ix store.Index) {
		ins, ok := ix.(store.Inserter)
		if !ok {
			t.Skip("no Inserter capability")
		}
		in := Sample(7, 1, 1)
		in.Checksum = "crc32c:0a1b2c3d"
		if err := ins.Insert(ctx, in); err != nil {
			t.Fatalf("Insert: %v", err)
		}
		if got := mustGet(t, ix, in.SOPInstanceUID); got.Checksum != in.Checksum || !equalInstance(got, in) {
			t.Fatalf("Get after Insert =\n%+v\nwant\n%+v", got, in)
		}
		again := Sample(7, 2, 2)
		again.BlobKey = NewKey()
		if err := ins.Insert(ctx, again); !errors.Is(err, store.ErrInstanceExists) {
			t.Fatalf("Insert of a stored instance: %v, want ErrInstanceExists", err)
		}
		if got := mustGet(t, ix, in.SOPInstanceUID); got.BlobKey != in.BlobKey || got.SeriesInstanceUID != in.SeriesInstanceUID {
			t.Fatalf("a refused Insert changed the instance: %+v", got)
		}
		if keys, _ := ix.PendingBlobDeletes(ctx, 0); len(keys) != 0 {
			t.Fatalf("a refused Insert recorded deletions: %v", keys)
		}
		if bf, ok := ix.(store.BlobFinder); ok {
			got, err := bf.InstanceByBlob(ctx, in.BlobKey)
			if err != nil || got.SOPInstanceUID != in.SOPInstanceUID {
				t.Fatalf("InstanceByBlob: %v %v", got, err)
			}
			if _, err := bf.InstanceByBlob(ctx, NewKey()); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("InstanceByBlob of an unknown key: %v", err)
			}
		}
	})

	run("NotFound", func(t *testing.T, ix store.Index) {
		if _, err := ix.Get(ctx, "1.2.3.4"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(missing) error = %v, want ErrNotFound", err)
		}
		if err := ix.Delete(ctx, "1.2.3.4"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Delete(missing) error = %v, want ErrNotFound", err)
		}
		if keys := pending(t, ix); len(keys) != 0 {
			t.Errorf("PendingBlobDeletes = %v, want none", keys)
		}
		wantCounts(t, ix, store.Counts{})
	})

	run("Invalid", func(t *testing.T, ix store.Index) {
		for _, f := range []func(*store.Instance){
			func(in *store.Instance) { in.SOPInstanceUID = "" },
			func(in *store.Instance) { in.SeriesInstanceUID = "" },
			func(in *store.Instance) { in.StudyInstanceUID = "" },
			func(in *store.Instance) { in.BlobKey = "" },
		} {
			in := Sample(1, 1, 1)
			f(in)
			if _, err := ix.Put(ctx, in); err == nil {
				t.Errorf("Put(%+v) succeeded", in)
			}
		}
		wantCounts(t, ix, store.Counts{})
	})

	run("CancelledContext", func(t *testing.T, ix store.Index) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := ix.Put(cctx, Sample(1, 1, 1)); err == nil {
			t.Error("Put with cancelled context succeeded")
		}
		wantCounts(t, ix, store.Counts{})
	})

	run("Replace", func(t *testing.T, ix store.Index) {
		a := Sample(1, 1, 1)
		mustPut(t, ix, a)
		b := Sample(1, 1, 1)
		b.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
		res := mustPut(t, ix, b)
		if !res.Replaced || res.OldBlobKey != a.BlobKey {
			t.Errorf("replacing Put = %+v, want Replaced with OldBlobKey %s", res, a.BlobKey)
		}
		if got := mustGet(t, ix, b.SOPInstanceUID); !equalInstance(got, b) {
			t.Errorf("Get after replace =\n%+v\nwant\n%+v", got, b)
		}
		if hasBlob(t, ix, a.BlobKey) || !hasBlob(t, ix, b.BlobKey) {
			t.Error("HasBlob does not follow the replacement")
		}
		if got := pending(t, ix); !slices.Equal(got, []string{a.BlobKey}) {
			t.Errorf("PendingBlobDeletes = %v, want [%s]", got, a.BlobKey)
		}
		wantCounts(t, ix, store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: 1})

		// Re-sent with the same blob key: nothing to delete.
		res = mustPut(t, ix, b)
		if !res.Replaced || res.OldBlobKey != "" {
			t.Errorf("same-key Put = %+v, want Replaced without OldBlobKey", res)
		}
		if got := pending(t, ix); !slices.Equal(got, []string{a.BlobKey}) {
			t.Errorf("PendingBlobDeletes = %v, want [%s]", got, a.BlobKey)
		}

		if err := ix.BlobsDeleted(ctx, []string{a.BlobKey}); err != nil {
			t.Fatalf("BlobsDeleted: %v", err)
		}
		if got := pending(t, ix); len(got) != 0 {
			t.Errorf("PendingBlobDeletes after BlobsDeleted = %v", got)
		}
		if err := ix.BlobsDeleted(ctx, []string{a.BlobKey, NewKey()}); err != nil {
			t.Errorf("BlobsDeleted(unknown): %v", err)
		}
	})

	run("PendingLimit", func(t *testing.T, ix store.Index) {
		in := Sample(1, 1, 1)
		var old []string
		for range 5 {
			old = append(old, in.BlobKey)
			mustPut(t, ix, in)
			in = Sample(1, 1, 1)
		}
		old = old[:4] // the last is live
		keys, err := ix.PendingBlobDeletes(ctx, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 3 {
			t.Errorf("PendingBlobDeletes(3) returned %d keys", len(keys))
		}
		slices.Sort(old)
		if got := pending(t, ix); !slices.Equal(got, old) {
			t.Errorf("PendingBlobDeletes = %v, want %v", got, old)
		}
	})

	run("ParentsUpdated", func(t *testing.T, ix store.Index) {
		a := Sample(1, 1, 1)
		mustPut(t, ix, a)
		b := Sample(2, 1, 1)
		b.PatientName = "Durer^Albrecht"
		b.PatientSex = "O"
		b.StudyDescription = "CT Thorax corrected"
		b.SeriesDescription = "Thorax"
		b.Modality = "PT"
		mustPut(t, ix, b)
		got := mustGet(t, ix, a.SOPInstanceUID)
		if got.PatientName != b.PatientName || got.PatientSex != "O" ||
			got.StudyDescription != b.StudyDescription || got.SeriesDescription != b.SeriesDescription ||
			got.Modality != "PT" {
			t.Errorf("parents of first instance not updated from the newest: %+v", got)
		}
		if got.InstanceNumber != a.InstanceNumber || got.BlobKey != a.BlobKey {
			t.Errorf("instance attributes changed: %+v", got)
		}
		wantCounts(t, ix, store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: 2})
	})

	run("PatientIdentity", func(t *testing.T, ix store.Index) {
		a := Sample(1, 1, 1)
		b := Sample(2, 2, 2)
		b.PatientID = a.PatientID
		b.IssuerOfPatientID = "OTHER"
		c := Sample(3, 3, 3)
		c.PatientID = a.PatientID
		mustPut(t, ix, a)
		mustPut(t, ix, b)
		mustPut(t, ix, c)
		wantCounts(t, ix, store.Counts{Patients: 2, Studies: 3, Series: 3, Instances: 3})
		if got := mustGet(t, ix, b.SOPInstanceUID); got.IssuerOfPatientID != "OTHER" {
			t.Errorf("issuer = %q", got.IssuerOfPatientID)
		}
	})

	run("MoveEmptiesParents", func(t *testing.T, ix store.Index) {
		a := Sample(1, 1, 1) // alone in series 1, study 1, patient PID1
		b := Sample(2, 2, 2)
		mustPut(t, ix, a)
		mustPut(t, ix, b)
		wantCounts(t, ix, store.Counts{Patients: 2, Studies: 2, Series: 2, Instances: 2})

		// a re-sent into series 2 / study 2: series 1, study 1 and patient
		// PID1 are left empty and removed.
		moved := Sample(1, 2, 2)
		res := mustPut(t, ix, moved)
		if !res.Replaced || res.OldBlobKey != a.BlobKey {
			t.Errorf("moving Put = %+v", res)
		}
		got := mustGet(t, ix, a.SOPInstanceUID)
		if got.SeriesInstanceUID != b.SeriesInstanceUID || got.StudyInstanceUID != b.StudyInstanceUID ||
			got.PatientID != b.PatientID {
			t.Errorf("instance not moved: %+v", got)
		}
		wantCounts(t, ix, store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: 2})

		// A series re-sent under another study moves with its instances; a
		// study re-sent under another patient likewise.
		c := Sample(3, 3, 3)
		mustPut(t, ix, c)
		d := Sample(4, 4, 2) // series 2 now says study 4
		mustPut(t, ix, d)
		wantCounts(t, ix, store.Counts{Patients: 2, Studies: 2, Series: 2, Instances: 4})
		if got := mustGet(t, ix, b.SOPInstanceUID); got.StudyInstanceUID != d.StudyInstanceUID {
			t.Errorf("series did not move to study 4: %+v", got)
		}
		e := Sample(5, 3, 5)
		e.PatientID = "PID4" // study 3 now belongs to PID4
		mustPut(t, ix, e)
		wantCounts(t, ix, store.Counts{Patients: 1, Studies: 2, Series: 3, Instances: 5})
		if got := mustGet(t, ix, c.SOPInstanceUID); got.PatientID != "PID4" {
			t.Errorf("study did not move to PID4: %+v", got)
		}
	})

	run("Delete", func(t *testing.T, ix store.Index) {
		a, b, c := Sample(1, 1, 1), Sample(2, 1, 1), Sample(3, 1, 2)
		for _, in := range []*store.Instance{a, b, c} {
			mustPut(t, ix, in)
		}
		wantCounts(t, ix, store.Counts{Patients: 1, Studies: 1, Series: 2, Instances: 3})
		if err := ix.Delete(ctx, c.SOPInstanceUID); err != nil {
			t.Fatal(err)
		}
		wantCounts(t, ix, store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: 2})
		if err := ix.Delete(ctx, a.SOPInstanceUID); err != nil {
			t.Fatal(err)
		}
		wantCounts(t, ix, store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: 1})
		if err := ix.Delete(ctx, b.SOPInstanceUID); err != nil {
			t.Fatal(err)
		}
		wantCounts(t, ix, store.Counts{})
		want := []string{a.BlobKey, b.BlobKey, c.BlobKey}
		slices.Sort(want)
		if got := pending(t, ix); !slices.Equal(got, want) {
			t.Errorf("PendingBlobDeletes = %v, want %v", got, want)
		}
		if _, err := ix.Get(ctx, a.SOPInstanceUID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(deleted) error = %v", err)
		}
		if hasBlob(t, ix, a.BlobKey) {
			t.Error("HasBlob(deleted) = true")
		}
		// The same instance can come back.
		mustPut(t, ix, Sample(1, 1, 1))
		wantCounts(t, ix, store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: 1})
	})

	run("Concurrent", func(t *testing.T, ix store.Index) {
		const workers, each = 16, 40
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		final := make([][]*store.Instance, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					n := w*each + i
					in := Sample(n, w%4, w) // 4 studies, 16 series
					if _, err := ix.Put(ctx, in); err != nil {
						errs <- err
						return
					}
					if i%10 == 0 { // replace some
						in = Sample(n, w%4, w)
						res, err := ix.Put(ctx, in)
						if err != nil {
							errs <- err
							return
						}
						if !res.Replaced {
							errs <- fmt.Errorf("re-Put of %s not Replaced", in.SOPInstanceUID)
							return
						}
					}
					final[w] = append(final[w], in)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for _, ins := range final {
			for _, in := range ins {
				got := mustGet(t, ix, in.SOPInstanceUID)
				if got.BlobKey != in.BlobKey {
					t.Fatalf("Get(%s).BlobKey = %s, want %s", in.SOPInstanceUID, got.BlobKey, in.BlobKey)
				}
			}
		}
		wantCounts(t, ix, store.Counts{Patients: 4, Studies: 4, Series: workers, Instances: workers * each})
		if got := len(pending(t, ix)); got != workers*each/10 {
			t.Errorf("%d pending blob deletes, want %d", got, workers*each/10)
		}
	})

	run("Snapshot", func(t *testing.T, ix store.Index) {
		sn, ok := ix.(store.Snapshotter)
		if !ok {
			t.Skip("not a store.Snapshotter")
		}
		for i := range 20 {
			mustPut(t, ix, Sample(i, i%3, i%5))
		}
		if err := ix.Delete(ctx, Sample(4, 0, 0).SOPInstanceUID); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "snapshot")
		snap, err := sn.Snapshot(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer snap.Close()
		// Later writes are not in the snapshot, and it is an Index of its
		// own.
		mustPut(t, ix, Sample(100, 1, 1))
		if err := ix.Delete(ctx, Sample(5, 0, 0).SOPInstanceUID); err != nil {
			t.Fatal(err)
		}
		wantCount(t, snap, 19)
		wantCount(t, ix, 19)
		mustGet(t, snap, Sample(5, 0, 0).SOPInstanceUID)
		if _, err := snap.Get(ctx, Sample(100, 1, 1).SOPInstanceUID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a write after the snapshot is in it: %v", err)
		}
		if _, err := snap.Get(ctx, Sample(4, 0, 0).SOPInstanceUID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a deletion before the snapshot is not in it: %v", err)
		}
		mustPut(t, snap, Sample(200, 2, 2))
		if _, err := ix.Get(ctx, Sample(200, 2, 2).SOPInstanceUID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a write to the snapshot reached the index: %v", err)
		}
		if _, err := sn.Snapshot(ctx, path); err == nil {
			t.Error("a snapshot overwrote an existing file")
		}
	})

	run("WalkInstances", func(t *testing.T, ix store.Index) {
		w, ok := ix.(store.InstanceWalker)
		if !ok {
			t.Skip("not a store.InstanceWalker")
		}
		// More instances than a backend would read at once, one deleted
		// and one replaced.
		const n = 1200
		want := map[string]*store.Instance{}
		for i := range n {
			in := Sample(i, i%31%7, i%31)
			in.Checksum = fmt.Sprintf("crc32c:%08x", i)
			mustPut(t, ix, in)
			want[in.SOPInstanceUID] = in
		}
		gone := Sample(5, 5, 5).SOPInstanceUID // instance 5: series 5, study 5
		if err := ix.Delete(ctx, gone); err != nil {
			t.Fatal(err)
		}
		delete(want, gone)
		re := Sample(6, 6, 6) // instance 6: series 6, study 6
		re.Size, re.Checksum = 42, "crc32c:0000002a"
		mustPut(t, ix, re)
		want[re.SOPInstanceUID] = re
		seen := map[string]bool{}
		err := w.WalkInstances(ctx, func(got *store.Instance) error {
			in, ok := want[got.SOPInstanceUID]
			switch {
			case !ok:
				t.Errorf("walked %s, which is not stored", got.SOPInstanceUID)
			case seen[got.SOPInstanceUID]:
				t.Errorf("walked %s twice", got.SOPInstanceUID)
			case got.SOPClassUID != in.SOPClassUID || got.TransferSyntaxUID != in.TransferSyntaxUID || got.StudyInstanceUID != in.StudyInstanceUID ||
				got.PatientID != in.PatientID ||
				got.BlobKey != in.BlobKey || got.Size != in.Size || got.Checksum != in.Checksum:
				t.Errorf("walked %+v, stored %+v", got, in)
			}
			seen[got.SOPInstanceUID] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != len(want) {
			t.Errorf("walked %d instances, want %d", len(seen), len(want))
		}
		stop := errors.New("stop")
		calls := 0
		if err := w.WalkInstances(ctx, func(*store.Instance) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
			t.Errorf("fn's error: %v after %d calls, want it after 1", err, calls)
		}
	})

	run("DeleteRecorded", func(t *testing.T, ix store.Index) {
		dr, ok := ix.(store.DeletionRecorder)
		if !ok {
			t.Skip("not a store.DeletionRecorder")
		}
		var uids, keys []string
		for i := range 10 {
			in := Sample(i, i/5, i/5*10+i%2) // studies 0 and 1, two series each
			mustPut(t, ix, in)
			if i < 5 {
				uids, keys = append(uids, in.SOPInstanceUID), append(keys, in.BlobKey)
			}
		}
		if d, err := dr.RecordedDeletions(ctx); err != nil || len(d) != 0 {
			t.Fatalf("recorded deletions of a new index: %v %v", d, err)
		}
		// A UID not stored is skipped.
		id, err := dr.DeleteRecorded(ctx, append(uids, "1.2.3.404"), []byte("study 0, reason X"))
		if err != nil {
			t.Fatal(err)
		}
		wantCount(t, ix, 5)
		wantCounts(t, ix, store.Counts{Patients: 1, Studies: 1, Series: 2, Instances: 5})
		for _, uid := range uids {
			if _, err := ix.Get(ctx, uid); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s after its deletion: %v", uid, err)
			}
		}
		p := pending(t, ix)
		slices.Sort(p)
		slices.Sort(keys)
		if !slices.Equal(p, keys) {
			t.Errorf("blobs recorded for deletion %v, want %v", p, keys)
		}
		id2, err := dr.DeleteRecorded(ctx, nil, []byte("nothing"))
		if err != nil {
			t.Fatal(err)
		}
		d, err := dr.RecordedDeletions(ctx)
		if err != nil || len(d) != 2 || d[0].ID != id || string(d[0].Note) != "study 0, reason X" || d[1].ID != id2 || string(d[1].Note) != "nothing" {
			t.Fatalf("recorded deletions: %+v %v", d, err)
		}
		if err := dr.ForgetDeletion(ctx, id); err != nil {
			t.Fatal(err)
		}
		if d, err := dr.RecordedDeletions(ctx); err != nil || len(d) != 1 || d[0].ID != id2 {
			t.Fatalf("recorded deletions after one is forgotten: %+v %v", d, err)
		}
	})
	testIndexCaps(run)
}

func writeBlob(t *testing.T, bs store.Blobs, key string, data []byte, commit bool) store.BlobWriter {
	t.Helper()
	w, err := bs.Create(context.Background(), key)
	if err != nil {
		t.Fatalf("Create(%s): %v", key, err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if commit {
		if err := w.Commit(); err != nil {
			t.Fatalf("Commit: %v", err)
		}
	}
	return w
}

func wantBlob(t *testing.T, bs store.Blobs, key string, data []byte) {
	t.Helper()
	r, err := bs.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("Open(%s): %v", key, err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("blob %s: got %d bytes, want %d (content differs)", key, len(got), len(data))
	}
}

func wantNoBlob(t *testing.T, bs store.Blobs, key string) {
	t.Helper()
	r, err := bs.Open(context.Background(), key)
	if err == nil {
		r.Close()
		t.Fatalf("Open(%s) succeeded, want ErrNotFound", key)
	}
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Open(%s) error = %v, want ErrNotFound", key, err)
	}
}

// Data returns n deterministic bytes derived from key, starting like a
// DICOM Part 10 file.
func Data(key string, n int) []byte {
	if n < 132 {
		return bytes.Repeat([]byte(key), n/len(key)+1)[:n]
	}
	b := make([]byte, n)
	copy(b[128:], "DICM")
	for i := 132; i < n; i++ {
		b[i] = key[i%len(key)] ^ byte(i/len(key))
	}
	return b
}

// TestBlobs runs the Blobs conformance suite. open returns a new, empty
// blob store; TestBlobs closes it.
func TestBlobs(t *testing.T, open func(t *testing.T) store.Blobs) {
	ctx := context.Background()
	run := func(name string, f func(t *testing.T, bs store.Blobs)) {
		t.Run(name, func(t *testing.T) {
			bs := open(t)
			if err := bs.Recover(ctx, func(string) (bool, error) { return false, nil }); err != nil {
				t.Fatalf("Recover on empty store: %v", err)
			}
			defer func() {
				if err := bs.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			f(t, bs)
		})
	}

	run("Lifecycle", func(t *testing.T, bs store.Blobs) {
		key := NewKey()
		data := Data(key, 3000)
		wantNoBlob(t, bs, key)
		writeBlob(t, bs, key, data, true)
		wantBlob(t, bs, key, data) // pending
		if err := bs.Publish(ctx, key); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		wantBlob(t, bs, key, data) // published
		if err := bs.Publish(ctx, key); err != nil {
			t.Errorf("second Publish: %v", err)
		}
		if err := bs.Delete(ctx, key); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		wantNoBlob(t, bs, key)
		if err := bs.Delete(ctx, key); err != nil {
			t.Errorf("Delete(missing): %v", err)
		}
		if err := bs.Publish(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Publish(missing) error = %v, want ErrNotFound", err)
		}
		// Pending blobs can be deleted too, and the key reused.
		writeBlob(t, bs, key, data, true)
		if err := bs.Delete(ctx, key); err != nil {
			t.Fatalf("Delete(pending): %v", err)
		}
		wantNoBlob(t, bs, key)
		writeBlob(t, bs, key, data[:10], true)
		wantBlob(t, bs, key, data[:10])
	})

	run("Streaming", func(t *testing.T, bs store.Blobs) {
		key := NewKey()
		data := Data(key, 5<<20+17)
		w, err := bs.Create(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		// One write larger than any backend's own write size, then
		// pieces smaller than it.
		first := 1<<20 + 3
		if n, err := w.Write(data[:first]); err != nil || n != first {
			t.Fatalf("Write(%d bytes) = %d, %v", first, n, err)
		}
		for rest := data[first:]; len(rest) > 0; {
			n := min(len(rest), 16372)
			if _, err := w.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := bs.Publish(ctx, key); err != nil {
			t.Fatal(err)
		}
		wantBlob(t, bs, key, data)
		empty := NewKey()
		writeBlob(t, bs, empty, nil, true)
		wantBlob(t, bs, empty, []byte{})
	})

	run("Exists", func(t *testing.T, bs store.Blobs) {
		pendingKey, publishedKey, writingKey := NewKey(), NewKey(), NewKey()
		writeBlob(t, bs, pendingKey, []byte("p"), true)
		writeBlob(t, bs, publishedKey, []byte("q"), true)
		if err := bs.Publish(ctx, publishedKey); err != nil {
			t.Fatal(err)
		}
		w := writeBlob(t, bs, writingKey, []byte("w"), false)
		defer w.Abort()
		for _, k := range []string{pendingKey, publishedKey, writingKey} {
			if w, err := bs.Create(ctx, k); !errors.Is(err, store.ErrExists) {
				if err == nil {
					w.Abort()
				}
				t.Errorf("Create(existing) error = %v, want ErrExists", err)
			}
		}
		wantBlob(t, bs, pendingKey, []byte("p"))
		wantBlob(t, bs, publishedKey, []byte("q"))
	})

	run("InvalidKey", func(t *testing.T, bs store.Blobs) {
		for _, k := range []string{"a/b", "../etc", "a b", "é", "a\x00", strings.Repeat("a", 129)} {
			if w, err := bs.Create(ctx, k); !errors.Is(err, store.ErrInvalidKey) {
				if err == nil {
					w.Abort()
				}
				t.Errorf("Create(%q) error = %v, want ErrInvalidKey", k, err)
			}
		}
		for _, k := range []string{"a", "..", ".", "A-b_c.d", strings.Repeat("Z", 128), "...."} {
			writeBlob(t, bs, k, []byte(k), true)
			if err := bs.Publish(ctx, k); err != nil {
				t.Errorf("Publish(%q): %v", k, err)
			}
			wantBlob(t, bs, k, []byte(k))
		}
	})

	run("ChosenKeys", func(t *testing.T, bs store.Blobs) {
		// Create("") lets the backend choose: keys are unique, and the
		// blobs behave like any other (commit, open, publish, abort).
		seen := map[string]bool{}
		for i := 0; i < 300; i++ {
			w, err := bs.Create(ctx, "")
			if err != nil {
				t.Fatalf("Create(\"\"): %v", err)
			}
			k := w.Key()
			if k == "" || seen[k] {
				t.Fatalf("chosen key %q empty or reused", k)
			}
			seen[k] = true
			if i%3 == 2 {
				if err := w.Abort(); err != nil {
					t.Fatal(err)
				}
				wantNoBlob(t, bs, k)
				continue
			}
			if _, err := w.Write([]byte(k)); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			wantBlob(t, bs, k, []byte(k))
			if i%3 == 1 {
				if err := bs.Publish(ctx, k); err != nil {
					t.Fatal(err)
				}
				wantBlob(t, bs, k, []byte(k))
			}
		}
	})

	run("Abort", func(t *testing.T, bs store.Blobs) {
		key := NewKey()
		w := writeBlob(t, bs, key, Data(key, 1000), false)
		wantNoBlob(t, bs, key)
		if err := w.Abort(); err != nil {
			t.Fatalf("Abort: %v", err)
		}
		wantNoBlob(t, bs, key)
		if err := w.Commit(); err == nil {
			t.Error("Commit after Abort succeeded")
		}
		wantNoBlob(t, bs, key)
		// The key is free again.
		w = writeBlob(t, bs, key, []byte("x"), true)
		if err := w.Abort(); err != nil {
			t.Errorf("Abort after Commit: %v", err)
		}
		wantBlob(t, bs, key, []byte("x"))
	})

	run("Recover", func(t *testing.T, bs store.Blobs) {
		keepKey, dropKey, publishedKey := NewKey(), NewKey(), NewKey()
		for _, k := range []string{keepKey, dropKey, publishedKey} {
			writeBlob(t, bs, k, []byte(k), true)
		}
		if err := bs.Publish(ctx, publishedKey); err != nil {
			t.Fatal(err)
		}
		var asked []string
		err := bs.Recover(ctx, func(k string) (bool, error) {
			asked = append(asked, k)
			return k == keepKey, nil
		})
		if err != nil {
			t.Fatalf("Recover: %v", err)
		}
		slices.Sort(asked)
		want := []string{keepKey, dropKey}
		slices.Sort(want)
		if !slices.Equal(asked, want) {
			t.Errorf("Recover asked about %v, want the pending %v", asked, want)
		}
		wantBlob(t, bs, keepKey, []byte(keepKey))
		wantBlob(t, bs, publishedKey, []byte(publishedKey))
		wantNoBlob(t, bs, dropKey)
		if err := bs.Publish(ctx, keepKey); err != nil {
			t.Errorf("Publish(recovered): %v", err)
		}
		// Nothing is pending any more.
		err = bs.Recover(ctx, func(k string) (bool, error) {
			t.Errorf("second Recover asked about %s", k)
			return false, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// An error from keep stops Recover and leaves the blob pending.
		k := NewKey()
		writeBlob(t, bs, k, []byte(k), true)
		boom := errors.New("boom")
		if err := bs.Recover(ctx, func(string) (bool, error) { return false, boom }); !errors.Is(err, boom) {
			t.Errorf("Recover error = %v, want boom", err)
		}
		wantBlob(t, bs, k, []byte(k))
	})

	run("Walk", func(t *testing.T, bs store.Blobs) {
		wk, ok := bs.(store.BlobWalker)
		if !ok {
			t.Skip("no store.BlobWalker")
		}
		pend, pub, writing := NewKey(), NewKey(), NewKey()
		writeBlob(t, bs, pend, nil, true)
		writeBlob(t, bs, pub, nil, true)
		if err := bs.Publish(ctx, pub); err != nil {
			t.Fatal(err)
		}
		w := writeBlob(t, bs, writing, nil, false)
		defer w.Abort()
		got := map[string]bool{}
		if err := wk.WalkBlobs(ctx, func(k string, published bool) error {
			got[k] = published
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[pub] != true || got[pend] != false {
			t.Errorf("WalkBlobs saw %v, want %s pending and %s published", got, pend, pub)
		}
	})

	run("Concurrent", func(t *testing.T, bs store.Blobs) {
		const workers, each = 8, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		keys := make([][]string, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					k := NewKey()
					bw, err := bs.Create(ctx, k)
					if err == nil {
						_, err = bw.Write(Data(k, 1000))
					}
					if err == nil {
						err = bw.Commit()
					}
					if err == nil {
						err = bs.Publish(ctx, k)
					}
					if err != nil {
						errs <- err
						return
					}
					keys[w] = append(keys[w], k)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for _, ks := range keys {
			for _, k := range ks {
				wantBlob(t, bs, k, Data(k, 1000))
			}
		}
	})
	testBlobsCaps(run)
}

// Reopen opens an index and blob store over one persistent location; each
// call after the previous pair was closed must see the same data.
type Reopen func(t *testing.T) (store.Index, store.Blobs)

// TestRecovery simulates a crash at each step of storing an instance, by
// abandoning the work and reopening, and checks that Recover with
// keep = Index.HasBlob leaves every indexed blob readable and no other.
// newStore returns a Reopen for a new, empty location.
func TestRecovery(t *testing.T, newStore func(t *testing.T) Reopen) {
	ctx := context.Background()
	reopen := newStore(t)
	ix, bs := reopen(t)
	if err := bs.Recover(ctx, Keep(ctx, ix)); err != nil {
		t.Fatal(err)
	}

	// A: crash while writing.
	a := Sample(1, 1, 1)
	writeBlob(t, bs, a.BlobKey, Data(a.BlobKey, 500), false) // never committed
	// B: crash after the blob committed, before the index.
	b := Sample(2, 1, 1)
	writeBlob(t, bs, b.BlobKey, Data(b.BlobKey, 500), true)
	// C: crash after the index, before Publish.
	c := Sample(3, 1, 1)
	writeBlob(t, bs, c.BlobKey, Data(c.BlobKey, 500), true)
	mustPut(t, ix, c)
	// D: stored completely, then replaced by E; crash before the old blob
	// was deleted.
	d := Sample(4, 1, 1)
	writeBlob(t, bs, d.BlobKey, Data(d.BlobKey, 500), true)
	mustPut(t, ix, d)
	if err := bs.Publish(ctx, d.BlobKey); err != nil {
		t.Fatal(err)
	}
	e := Sample(4, 1, 1)
	writeBlob(t, bs, e.BlobKey, Data(e.BlobKey, 500), true)
	if res := mustPut(t, ix, e); res.OldBlobKey != d.BlobKey {
		t.Fatalf("replacing Put = %+v", res)
	}
	if err := bs.Publish(ctx, e.BlobKey); err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}

	ix, bs = reopen(t)
	defer ix.Close()
	defer bs.Close()
	if err := bs.Recover(ctx, Keep(ctx, ix)); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	wantNoBlob(t, bs, a.BlobKey)
	w := writeBlob(t, bs, a.BlobKey, []byte("again"), false) // the unfinished write is gone
	w.Abort()
	wantNoBlob(t, bs, b.BlobKey)
	wantBlob(t, bs, c.BlobKey, Data(c.BlobKey, 500))
	if err := bs.Publish(ctx, c.BlobKey); err != nil {
		t.Errorf("Publish(recovered): %v", err)
	}
	wantBlob(t, bs, e.BlobKey, Data(e.BlobKey, 500))
	wantCounts(t, ix, store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: 2})

	// Finish the interrupted delete of D's blob.
	if err := DeletePending(ctx, ix, bs); err != nil {
		t.Fatal(err)
	}
	wantNoBlob(t, bs, d.BlobKey)
	if got := pending(t, ix); len(got) != 0 {
		t.Errorf("PendingBlobDeletes = %v after DeletePending", got)
	}
	if err := CheckNoOrphans(ctx, ix, bs); err != nil {
		t.Error(err)
	}
}

// DeletePending deletes the blobs the index recorded for deletion, as the
// archive does in the background: a blob is deleted only if no instance
// references it, then forgotten.
func DeletePending(ctx context.Context, ix store.Index, bs store.Blobs) error {
	for {
		keys, err := ix.PendingBlobDeletes(ctx, 100)
		if err != nil || len(keys) == 0 {
			return err
		}
		for _, k := range keys {
			used, err := ix.HasBlob(ctx, k)
			if err != nil {
				return err
			}
			if !used {
				if err := bs.Delete(ctx, k); err != nil {
					return err
				}
			}
		}
		if err := ix.BlobsDeleted(ctx, keys); err != nil {
			return err
		}
	}
}

// CheckNoOrphans returns an error naming blobs that no instance references
// and that are not recorded for deletion. It needs store.BlobWalker and
// returns nil without it.
func CheckNoOrphans(ctx context.Context, ix store.Index, bs store.Blobs) error {
	wk, ok := bs.(store.BlobWalker)
	if !ok {
		return nil
	}
	pend, err := ix.PendingBlobDeletes(ctx, 0)
	if err != nil {
		return err
	}
	var orphans []string
	err = wk.WalkBlobs(ctx, func(k string, published bool) error {
		used, err := ix.HasBlob(ctx, k)
		if err != nil {
			return err
		}
		if !used && !slices.Contains(pend, k) {
			orphans = append(orphans, fmt.Sprintf("%s (published=%v)", k, published))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(orphans) > 0 {
		return fmt.Errorf("%d unreferenced blobs: %v", len(orphans), orphans)
	}
	return nil
}

// Keep returns the keep function Recover normally gets: Index.HasBlob.
func Keep(ctx context.Context, ix store.Index) func(key string) (bool, error) {
	return func(key string) (bool, error) { return ix.HasBlob(ctx, key) }
}
