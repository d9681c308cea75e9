package storetest

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/ward-pacs/ward/store"
)

// Backend describes a registered backend for TestMatrix: how to name the
// data of a new, empty store in a folder, and the optional capabilities
// it is meant to have (by interface name, as store.Caps.Names gives
// them; for Blobs, those of its writers too: DurableNamer, IntentWriter).
//
// A blobs entry may name a backend wrapped (store.Spec.Wrappers): Blobs
// is then the registered backend (the map key names the pairing, say
// "fs+encrypt"), Wrappers the wrappers around it. Every registered
// wrapper must be in some entry.
type Backend struct {
	DSN  func(dir string) string
	Caps []string
	// Blobs is the registered blobs backend when the entry's name is not
	// it; Wrappers wrap it.
	Blobs    string
	Wrappers []store.Wrapper
	// Missing, when set, says why the backend cannot run here (its
	// server is not installed): its pairings are skipped. A caller under
	// CI=true fails instead of setting it.
	Missing string
}

// TestMatrix runs the whole suite over every pairing of the index and
// blobs backends given, each pairing opened by store.Open: the
// capabilities each is meant to have are checked present (a method
// signature that drifts makes a type assertion stop matching, and the
// caller fall back to the slow path in silence), then TestIndex,
// TestQuery and TestQuerySequences run over the index, TestBlobs over
// the blobs, TestRecovery and TestNodes over the pair. Every backend
// registered must be in the matrix.
func TestMatrix(t *testing.T, indexes, blobs map[string]Backend) {
	for _, name := range store.IndexBackends() {
		if _, ok := indexes[name]; !ok {
			t.Errorf("index backend %q is registered but not in the conformance matrix", name)
		}
	}
	for _, name := range store.BlobsBackends() {
		if _, ok := blobs[name]; !ok {
			t.Errorf("blobs backend %q is registered but not in the conformance matrix", name)
		}
	}
	wrapped := map[string]bool{}
	for _, b := range blobs {
		for _, w := range b.Wrappers {
			wrapped[w.Name] = true
		}
	}
	for _, name := range store.BlobsWrappers() {
		if !wrapped[name] {
			t.Errorf("blobs wrapper %q is registered but not in the conformance matrix", name)
		}
	}
	for _, ixName := range slices.Sorted(maps.Keys(indexes)) {
		for _, bsName := range slices.Sorted(maps.Keys(blobs)) {
			ixb, bsb := indexes[ixName], blobs[bsName]
			bsBackend := bsName
			if bsb.Blobs != "" {
				bsBackend = bsb.Blobs
			}
			spec := func(dir, node string) store.Spec {
				return store.Spec{Index: ixName, IndexDSN: ixb.DSN(dir), Blobs: bsBackend, BlobsDSN: bsb.DSN(dir),
					Wrappers: bsb.Wrappers, Node: node}
			}
			t.Run(ixName+"+"+bsName, func(t *testing.T) {
				if why := ixb.Missing + bsb.Missing; why != "" {
					t.Skip(why)
				}
				testPair(t, spec, ixb.Caps, bsb.Caps)
			})
		}
	}
}

func testPair(t *testing.T, spec func(dir, node string) store.Spec, ixCaps, bsCaps []string) {
	ctx := context.Background()
	open := func(t *testing.T, dir, node string) *store.Store {
		t.Helper()
		st, err := store.Open(ctx, spec(dir, node))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	fresh := func(t *testing.T) *store.Store { return open(t, t.TempDir(), "") }

	t.Run("Capabilities", func(t *testing.T) {
		st := fresh(t)
		defer st.Close()
		have := st.Caps.Names()
		w, err := st.Blobs.Create(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := w.(store.DurableNamer); ok {
			have = append(have, "DurableNamer")
		}
		if _, ok := w.(store.IntentWriter); ok {
			have = append(have, "IntentWriter")
		}
		w.Abort()
		if _, ok := st.Blobs.(store.NodeScoper); ok {
			have = append(have, "NodeScoper")
		}
		for _, c := range append(slices.Clone(ixCaps), bsCaps...) {
			if !slices.Contains(have, c) {
				t.Errorf("the store lacks the %s capability it is meant to have (has %v): has a method signature drifted?", c, have)
			}
		}
		if st.Node != store.DefaultNode {
			t.Errorf("Node = %q for a spec that names none", st.Node)
		}
	})
	t.Run("Index", func(t *testing.T) {
		TestIndex(t, func(t *testing.T) store.Index {
			st := fresh(t)
			t.Cleanup(func() { st.Blobs.Close() })
			return st.Index
		})
	})
	t.Run("Query", func(t *testing.T) {
		TestQuery(t, func(t *testing.T) store.Index {
			st := fresh(t)
			t.Cleanup(func() { st.Blobs.Close() })
			return st.Index
		})
	})
	t.Run("QuerySequences", func(t *testing.T) {
		TestQuerySequences(t, func(t *testing.T) store.Index {
			st := fresh(t)
			t.Cleanup(func() { st.Blobs.Close() })
			return st.Index
		})
	})
	t.Run("Blobs", func(t *testing.T) {
		TestBlobs(t, func(t *testing.T) store.Blobs {
			st := fresh(t)
			t.Cleanup(func() { st.Index.Close() })
			return st.Blobs
		})
	})
	t.Run("Recovery", func(t *testing.T) {
		TestRecovery(t, func(t *testing.T) Reopen {
			dir := t.TempDir()
			return func(t *testing.T) (store.Index, store.Blobs) {
				st := open(t, dir, "")
				return st.Index, st.Blobs
			}
		})
	})
	t.Run("Nodes", func(t *testing.T) {
		TestNodes(t, func(t *testing.T) func(t *testing.T, node string) *store.Store {
			dir := t.TempDir()
			return func(t *testing.T, node string) *store.Store { return open(t, dir, node) }
		})
	})
}

// TestNodes checks the multi-node contract of Blobs.Recover (for Blobs
// that are NodeScopers; skipped otherwise): two nodes share one store.
// What one node has in flight (a blob being written, a blob committed and
// not yet indexed) survives the other's start-up; what a node left when
// it was killed is removed by its own next start. newStore returns an
// opener of a new, empty shared location, by node.
func TestNodes(t *testing.T, newStore func(t *testing.T) func(t *testing.T, node string) *store.Store) {
	ctx := context.Background()
	open := newStore(t)
	start := func(node string) *store.Store {
		t.Helper()
		st := open(t, node)
		if err := st.Blobs.Recover(ctx, Keep(ctx, st.Index)); err != nil {
			t.Fatalf("Recover of %s: %v", node, err)
		}
		return st
	}
	a := start("node-a")
	if _, ok := a.Blobs.(store.NodeScoper); !ok {
		a.Close()
		t.Skip("no NodeScoper capability: Blobs for one node")
	}
	// In flight on a: one blob being written, one committed, not indexed.
	writing := NewKey()
	wa := writeBlob(t, a.Blobs, writing, Data(writing, 400), false)
	ca, err := a.Blobs.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	committed := ca.Key()
	if _, err := ca.Write(Data(committed, 400)); err != nil {
		t.Fatal(err)
	}
	if err := ca.Commit(); err != nil {
		t.Fatal(err)
	}

	b := start("node-b") // b starts while a works
	if _, err := wa.Write(Data(writing, 100)); err != nil {
		t.Fatalf("a's write after b's start: %v", err)
	}
	if err := wa.Commit(); err != nil {
		t.Fatalf("a's blob being written when b started: Commit: %v", err)
	}
	wantBlob(t, a.Blobs, committed, Data(committed, 400))
	x, y := Sample(1, 1, 1), Sample(2, 1, 1)
	x.BlobKey, y.BlobKey = writing, committed
	mustPut(t, a.Index, x)
	mustPut(t, a.Index, y)
	for _, k := range []string{writing, committed} {
		if err := a.Blobs.Publish(ctx, k); err != nil {
			t.Fatalf("Publish of a's blob after b's start: %v", err)
		}
	}

	// b has work in flight when a is killed and restarts.
	bWriting := NewKey()
	wb := writeBlob(t, b.Blobs, bWriting, Data(bWriting, 300), false)
	cb, err := b.Blobs.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	bCommitted := cb.Key()
	if _, err := cb.Write(Data(bCommitted, 300)); err != nil {
		t.Fatal(err)
	}
	if err := cb.Commit(); err != nil {
		t.Fatal(err)
	}
	// a leaves work of its own unfinished, then is killed.
	left := NewKey()
	la := writeBlob(t, a.Blobs, left, Data(left, 200), false)
	lc, err := a.Blobs.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	leftCommitted := lc.Key()
	if _, err := lc.Write(Data(leftCommitted, 200)); err != nil {
		t.Fatal(err)
	}
	if err := lc.Commit(); err != nil {
		t.Fatal(err)
	}
	// Killed: nothing is closed or aborted. (The handles are dropped; an
	// Abort after the restart would remove the restarted node's file.)
	_ = la
	killed := a
	defer killed.Close()

	a = start("node-a")
	defer a.Close()
	defer b.Close()
	if err := wb.Commit(); err != nil {
		t.Fatalf("b's blob being written when a restarted: Commit: %v", err)
	}
	wantBlob(t, b.Blobs, bWriting, Data(bWriting, 300))
	wantBlob(t, b.Blobs, bCommitted, Data(bCommitted, 300))
	wantNoBlob(t, a.Blobs, leftCommitted)
	w, err := a.Blobs.Create(ctx, left)
	if err != nil {
		t.Fatalf("a's unfinished write is still in the way after its restart: %v", err)
	}
	w.Abort()
	wantBlob(t, a.Blobs, writing, append(Data(writing, 400), Data(writing, 100)...))
	wantBlob(t, a.Blobs, committed, Data(committed, 400))
}
