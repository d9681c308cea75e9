package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/store"
)

// The optional capabilities that the rest of the suite does not reach:
// each is checked against its contract where the backend has it, and
// skipped where it does not (TestMatrix checks that Ward's backends have
// the ones they are meant to).

// testIndexCaps adds the capability tests of an Index to TestIndex.
func testIndexCaps(run func(string, func(*testing.T, store.Index))) {
	ctx := context.Background()

	run("DeferredSyncer", func(t *testing.T, ix store.Index) {
		ds, ok := ix.(store.DeferredSyncer)
		if !ok {
			t.Skip("no DeferredSyncer capability")
		}
		a := Sample(1, 1, 1)
		if err := ds.InsertDeferred(ctx, a); err != nil {
			t.Fatal(err)
		}
		if got := mustGet(t, ix, a.SOPInstanceUID); !equalInstance(got, a) {
			t.Errorf("Get after InsertDeferred =\n%+v\nwant\n%+v", got, a)
		}
		if err := ds.InsertDeferred(ctx, Sample(1, 1, 1)); !errors.Is(err, store.ErrInstanceExists) {
			t.Errorf("InsertDeferred of a stored instance: %v, want ErrInstanceExists", err)
		}
		b := Sample(1, 1, 1)
		res, err := ds.PutDeferred(ctx, b)
		if err != nil || !res.Replaced || res.OldBlobKey != a.BlobKey {
			t.Fatalf("PutDeferred replacing = %+v, %v", res, err)
		}
		if err := ds.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if got := mustGet(t, ix, b.SOPInstanceUID); got.BlobKey != b.BlobKey {
			t.Errorf("Get after PutDeferred: blob %s, want %s", got.BlobKey, b.BlobKey)
		}
		if !slices.Contains(pending(t, ix), a.BlobKey) {
			t.Error("the replaced blob is not recorded for deletion")
		}
		wantCount(t, ix, 1)
	})

	run("MetadataKeeper", func(t *testing.T, ix store.Index) {
		mk, ok := ix.(store.MetadataKeeper)
		if !ok {
			t.Skip("no MetadataKeeper capability")
		}
		qr, ok := ix.(store.Querier)
		if !ok {
			t.Fatal("a MetadataKeeper that is no Querier")
		}
		// kept returns the metadata Instances gives for each instance of
		// series 1, by SOP Instance UID ("-" for none).
		kept := func(t *testing.T, with bool) map[string]string {
			t.Helper()
			got := map[string]string{}
			q := store.Query{Level: store.LevelSeries, WithMetadata: with, Keys: []store.Key{
				{Attribute: "SeriesInstanceUID", Kind: store.MatchSingle, Value: Sample(0, 1, 1).SeriesInstanceUID}}}
			err := qr.Instances(ctx, &q, func(in *store.Instance) error {
				got[in.SOPInstanceUID] = "-"
				if in.Metadata != nil {
					got[in.SOPInstanceUID] = string(in.Metadata)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		set := func(t *testing.T, in *store.Instance, key, v string) {
			t.Helper()
			if err := mk.SetMetadata(ctx, in.SOPInstanceUID, key, []byte(v)); err != nil {
				t.Fatalf("SetMetadata: %v", err)
			}
		}
		a, b := Sample(1, 1, 1), Sample(2, 1, 1)
		mustPut(t, ix, a)
		mustPut(t, ix, b)
		set(t, a, a.BlobKey, `{"a":1}`)
		set(t, b, "another-key", `{"stale":1}`) // names no stored object: nothing kept
		set(t, Sample(3, 1, 1), NewKey(), `{}`) // no such instance: no error
		if got := kept(t, true); got[a.SOPInstanceUID] != `{"a":1}` || got[b.SOPInstanceUID] != "-" {
			t.Errorf("Instances with metadata = %v", got)
		}
		if got := kept(t, false); got[a.SOPInstanceUID] != "-" {
			t.Errorf("Instances without WithMetadata = %v, want none", got)
		}
		set(t, a, a.BlobKey, `{"a":2}`) // set again: the newest
		if got := kept(t, true); got[a.SOPInstanceUID] != `{"a":2}` {
			t.Errorf("after a second SetMetadata: %v", got)
		}
		// A Put of the same SOP Instance UID drops it, even with the same
		// blob key (a replay).
		set(t, b, b.BlobKey, `{"b":1}`)
		a2 := Sample(1, 1, 1)
		mustPut(t, ix, a2)
		same := *b
		mustPut(t, ix, &same)
		if got := kept(t, true); got[a.SOPInstanceUID] != "-" || got[b.SOPInstanceUID] != "-" {
			t.Errorf("after replacing: %v, want none kept", got)
		}
		set(t, a, a.BlobKey, `{"old":1}`) // the replaced object's: too late
		if got := kept(t, true); got[a.SOPInstanceUID] != "-" {
			t.Errorf("metadata of a replaced object kept: %v", got)
		}
		// A Delete drops it: the same UID stored again has none.
		set(t, b, b.BlobKey, `{"b":2}`)
		if err := ix.Delete(ctx, b.SOPInstanceUID); err != nil {
			t.Fatal(err)
		}
		b2 := Sample(2, 1, 1)
		b2.BlobKey = b.BlobKey
		mustPut(t, ix, b2)
		if got := kept(t, true); got[b.SOPInstanceUID] != "-" {
			t.Errorf("after delete and store again: %v, want none kept", got)
		}

		// A series larger than a backend's batches: the same rows in the
		// same order with and without metadata, each with its own.
		var order []string
		for n := 100; n < 100+300; n++ {
			in := Sample(n, 2, 2)
			mustPut(t, ix, in)
			if n%3 != 0 {
				set(t, in, in.BlobKey, in.SOPInstanceUID)
			}
		}
		list := func(with bool) []string {
			var out []string
			q := store.Query{Level: store.LevelSeries, WithMetadata: with, Keys: []store.Key{
				{Attribute: "SeriesInstanceUID", Kind: store.MatchSingle, Value: Sample(0, 2, 2).SeriesInstanceUID}}}
			if err := qr.Instances(ctx, &q, func(in *store.Instance) error {
				out = append(out, in.SOPInstanceUID)
				n := 0
				fmt.Sscanf(in.SOPInstanceUID[strings.LastIndexByte(in.SOPInstanceUID, '.')+1:], "%d", &n)
				if want := n%3 != 0; with && (in.Metadata != nil) != want || want && with && string(in.Metadata) != in.SOPInstanceUID {
					t.Errorf("%s: metadata %q", in.SOPInstanceUID, in.Metadata)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			return out
		}
		order = list(false)
		if got := list(true); len(order) != 300 || !slices.Equal(got, order) {
			t.Errorf("with metadata: %d instances, order differs: %v", len(got), !slices.Equal(got, order))
		}
	})

	run("BlobKeyLister", func(t *testing.T, ix store.Index) {
		bl, ok := ix.(store.BlobKeyLister)
		if !ok {
			t.Skip("no BlobKeyLister capability")
		}
		in := []*store.Instance{Sample(1, 1, 1), Sample(2, 1, 1), Sample(3, 1, 1), Sample(4, 1, 1)}
		in[0].BlobKey, in[1].BlobKey = "0000abcd-aa.n1", "0000abcd-bb.n2"
		in[2].BlobKey, in[3].BlobKey = "0000abce-aa.n1", "0000abc-x.n1"
		for _, i := range in {
			mustPut(t, ix, i)
		}
		got, err := bl.BlobKeysWithPrefix(ctx, "0000abcd-")
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{"0000abcd-aa.n1", "0000abcd-bb.n2"}) {
			t.Errorf("BlobKeysWithPrefix = %v", got)
		}
		if got, err := bl.BlobKeysWithPrefix(ctx, "ffff"); err != nil || len(got) != 0 {
			t.Errorf("BlobKeysWithPrefix of no key = %v, %v", got, err)
		}
	})

	run("KeyMatcher", func(t *testing.T, ix store.Index) {
		km, ok := ix.(store.KeyMatcher)
		if !ok {
			t.Skip("no KeyMatcher capability")
		}
		qr, ok := ix.(store.Querier)
		if !ok {
			t.Fatal("a KeyMatcher that is no Querier")
		}
		mustPut(t, ix, Sample(1, 1, 1))
		// What CanMatch accepts, Query matches on; what it refuses, Query
		// refuses with ErrUnsupportedKey (the archive relies on both).
		for _, attr := range []string{"PatientID", "PatientName", "StudyDate", "AccessionNumber", "StudyInstanceUID", "ModalitiesInStudy"} {
			if !km.CanMatch(attr) {
				continue
			}
			q := store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: attr, Kind: store.MatchWildcard, Value: "*X*"}}}
			if attr == "StudyDate" {
				q.Keys[0] = store.Key{Attribute: attr, Kind: store.MatchRange, Lo: "20000101", Hi: "20991231"}
			}
			if err := qr.Query(ctx, &q, func(store.Match) error { return nil }); err != nil {
				t.Errorf("CanMatch(%s) = true, yet Query: %v", attr, err)
			}
		}
		for _, attr := range []string{"PatientMotherBirthName", "NoSuchAttribute"} {
			if km.CanMatch(attr) {
				t.Errorf("CanMatch(%s) = true", attr)
				continue
			}
			q := store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: attr, Kind: store.MatchSingle, Value: "X"}}}
			if err := qr.Query(ctx, &q, func(store.Match) error { return nil }); !errors.Is(err, store.ErrUnsupportedKey) {
				t.Errorf("CanMatch(%s) = false, yet Query: %v, want ErrUnsupportedKey", attr, err)
			}
		}
	})

	run("DeleteHolder", func(t *testing.T, ix store.Index) {
		dh, ok := ix.(store.DeleteHolder)
		if !ok {
			t.Skip("no DeleteHolder capability")
		}
		held := func(want bool) {
			t.Helper()
			if got, err := dh.DeletesHeld(ctx); err != nil || got != want {
				t.Fatalf("DeletesHeld = %v, %v, want %v", got, err, want)
			}
		}
		held(false)
		a, err := dh.HoldDeletes(ctx, "a", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		b, err := dh.HoldDeletes(ctx, "b", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		held(true)
		if err := dh.ReleaseNodeHolds(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		held(true) // b's stays
		if err := dh.ReleaseHold(ctx, a); err != nil {
			t.Errorf("releasing a hold dropped already: %v", err)
		}
		if err := dh.ReleaseHold(ctx, b); err != nil {
			t.Fatal(err)
		}
		held(false)
		// A hold lapses unless renewed.
		c, err := dh.HoldDeletes(ctx, "c", 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if err := dh.RenewHold(ctx, c, time.Hour); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		held(true)
		if err := dh.RenewHold(ctx, c, time.Millisecond); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		held(false)
		if err := dh.ReleaseHold(ctx, c); err != nil {
			t.Fatal(err)
		}
		if err := dh.RenewHold(ctx, c, time.Hour); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("renewing a released hold: %v, want ErrNotFound", err)
		}
		// A snapshot carries no hold: they are the archive's nodes'.
		if sn, ok := ix.(store.Snapshotter); ok {
			if _, err := dh.HoldDeletes(ctx, "d", time.Hour); err != nil {
				t.Fatal(err)
			}
			snap, err := sn.Snapshot(ctx, filepath.Join(t.TempDir(), "snap"))
			if err != nil {
				t.Fatal(err)
			}
			defer snap.Close()
			if sdh, ok := snap.(store.DeleteHolder); ok {
				if got, err := sdh.DeletesHeld(ctx); err != nil || got {
					t.Errorf("a snapshot's DeletesHeld = %v, %v", got, err)
				}
			}
		}
	})
}

// testBlobsCaps adds the capability tests of Blobs to TestBlobs.
func testBlobsCaps(run func(string, func(*testing.T, store.Blobs))) {
	ctx := context.Background()

	run("IntentWriterReader", func(t *testing.T, bs store.Blobs) {
		ir, readable := bs.(store.IntentReader)
		key := NewKey()
		w, err := bs.Create(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		iw, ok := w.(store.IntentWriter)
		if !ok {
			w.Abort()
			if readable {
				t.Fatal("Blobs are an IntentReader, their writers no IntentWriter")
			}
			t.Skip("no IntentWriter capability")
		}
		if !readable {
			t.Fatal("writers are IntentWriters, the Blobs no IntentReader")
		}
		intent := []byte("the facts that rebuild the row")
		data := Data(key, 2000)
		if err := iw.SetIntent(intent); err != nil {
			t.Skipf("SetIntent refused (allowed, the caller falls back): %v", err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		check := func(state string) {
			t.Helper()
			got, err := ir.Intent(ctx, key)
			if err != nil || !bytes.Equal(got, intent) {
				t.Errorf("Intent (%s) = %q, %v", state, got, err)
			}
			wantBlob(t, bs, key, data) // the record is not part of the bytes
		}
		check("pending")
		if err := bs.Publish(ctx, key); err != nil {
			t.Fatal(err)
		}
		check("published")
		plain := NewKey()
		writeBlob(t, bs, plain, Data(plain, 10), true)
		if _, err := ir.Intent(ctx, plain); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Intent of a blob written without one: %v, want ErrNotFound", err)
		}
		if _, err := ir.Intent(ctx, NewKey()); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Intent of a missing blob: %v, want ErrNotFound", err)
		}
	})

	run("DurableNamer", func(t *testing.T, bs store.Blobs) {
		w, err := bs.Create(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		d, ok := w.(store.DurableNamer)
		if !ok {
			w.Abort()
			t.Skip("no DurableNamer capability")
		}
		_ = d.NameDurable() // either answer is allowed; the blob behaves the same
		key := w.Key()
		data := Data(key, 1500)
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		wantBlob(t, bs, key, data)
		if err := bs.Publish(ctx, key); err != nil {
			t.Fatal(err)
		}
		wantBlob(t, bs, key, data)
	})

	run("BatchPublisher", func(t *testing.T, bs store.Blobs) {
		bp, ok := bs.(store.BatchPublisher)
		if !ok {
			t.Skip("no BatchPublisher capability")
		}
		var keys []string
		for range 5 {
			k := NewKey()
			writeBlob(t, bs, k, Data(k, 700), true)
			keys = append(keys, k)
		}
		if err := bs.Publish(ctx, keys[0]); err != nil {
			t.Fatal(err)
		}
		if err := bp.PublishAll(ctx, keys); err != nil {
			t.Fatalf("PublishAll with one published already: %v", err)
		}
		missing := NewKey()
		more := NewKey()
		writeBlob(t, bs, more, Data(more, 700), true)
		if err := bp.PublishAll(ctx, []string{missing, more}); err == nil {
			t.Error("PublishAll of a missing key succeeded")
		}
		keys = append(keys, more) // published still
		if wk, ok := bs.(store.BlobWalker); ok {
			err := wk.WalkBlobs(ctx, func(k string, published bool) error {
				if slices.Contains(keys, k) && !published {
					t.Errorf("%s not published by PublishAll", k)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, k := range keys {
			wantBlob(t, bs, k, Data(k, 700))
		}
	})

	run("SpaceReporter", func(t *testing.T, bs store.Blobs) {
		sr, ok := bs.(store.SpaceReporter)
		if !ok {
			t.Skip("no SpaceReporter capability")
		}
		free, total, err := sr.Space(ctx)
		if err != nil || total <= 0 || free < 0 || free > total {
			t.Errorf("Space = %d free of %d, %v", free, total, err)
		}
	})

	run("WholeBlobs", func(t *testing.T, bs store.Blobs) {
		wb, ok := bs.(store.WholeBlobs)
		if !ok {
			t.Skip("no WholeBlobs capability")
		}
		key := NewKey()
		writeBlob(t, bs, key, Data(key, 777), true)
		if n, err := wb.BlobSize(ctx, key); err != nil || n != 777 {
			t.Errorf("BlobSize of a committed blob = %d, %v; want 777", n, err)
		}
		if _, err := wb.BlobSize(ctx, NewKey()); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("BlobSize of a missing blob: %v, want ErrNotFound", err)
		}
	})

	run("UnfinishedRemover", func(t *testing.T, bs store.Blobs) {
		ur, ok := bs.(store.UnfinishedRemover)
		if !ok {
			t.Skip("no UnfinishedRemover capability")
		}
		left := NewKey()
		lw := writeBlob(t, bs, left, Data(left, 300), false) // as a killed process leaves it
		defer lw.Abort()
		kept := NewKey()
		writeBlob(t, bs, kept, Data(kept, 300), true)
		if err := ur.RemoveUnfinished(ctx); err != nil {
			t.Fatal(err)
		}
		wantBlob(t, bs, kept, Data(kept, 300)) // pending stays
		w, err := bs.Create(ctx, left)
		if err != nil {
			t.Fatalf("Create of a key whose unfinished write was removed: %v", err)
		}
		w.Abort()
	})
}
