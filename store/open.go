package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Spec says which backends make up a store and where their data lives.
type Spec struct {
	// Index and Blobs name registered backends (RegisterIndex,
	// RegisterBlobs); IndexDSN and BlobsDSN are theirs to read.
	Index, IndexDSN string
	Blobs, BlobsDSN string
	// Wrappers are applied to the blobs in order, each around the result
	// of the one before (RegisterBlobsWrapper): encryption, say.
	Wrappers []Wrapper
	// Node is the ID of the node opening the store (see the multi-node
	// contract on Blobs.Recover and DeleteHolder). Empty: "local".
	Node string
}

// Wrapper names a registered blobs wrapper and its configuration.
type Wrapper struct {
	Name, DSN string
}

// Store is an Index and Blobs opened together by Open, with their optional
// capabilities resolved once.
type Store struct {
	Index Index
	Blobs Blobs
	Caps  Caps
	// Node is the ID the store was opened for.
	Node string
}

// Caps holds the optional capabilities of a store's Index and Blobs, each
// nil when the backend lacks it (the caller then takes the fallback
// documented on the interface). The capabilities of a BlobWriter
// (DurableNamer, IntentWriter) belong to each writer and are asserted on
// it.
type Caps struct {
	// Of the Index.
	Inserter         Inserter
	BlobFinder       BlobFinder
	DeferredSyncer   DeferredSyncer
	DeletionRecorder DeletionRecorder
	DeleteHolder     DeleteHolder
	InstanceWalker   InstanceWalker
	Snapshotter      Snapshotter
	SnapshotFiles    SnapshotFiles
	Counter          Counter
	Querier          Querier
	KeyMatcher       KeyMatcher
	SequenceIndexer  SequenceIndexer
	MetadataKeeper   MetadataKeeper
	Scrubber         Scrubber
	Exclusive        Exclusive
	BlobKeyLister    BlobKeyLister
	// Of the Blobs.
	BlobWalker        BlobWalker
	IntentReader      IntentReader
	BatchPublisher    BatchPublisher
	SpaceReporter     SpaceReporter
	UnfinishedRemover UnfinishedRemover
	WholeBlobs        WholeBlobs
}

// Resolve finds the optional capabilities of ix and bs (either may be nil).
func Resolve(ix Index, bs Blobs) Caps {
	var c Caps
	if ix != nil {
		c.Inserter, _ = ix.(Inserter)
		c.BlobFinder, _ = ix.(BlobFinder)
		c.DeferredSyncer, _ = ix.(DeferredSyncer)
		c.DeletionRecorder, _ = ix.(DeletionRecorder)
		c.DeleteHolder, _ = ix.(DeleteHolder)
		c.InstanceWalker, _ = ix.(InstanceWalker)
		c.Snapshotter, _ = ix.(Snapshotter)
		c.SnapshotFiles, _ = ix.(SnapshotFiles)
		c.Counter, _ = ix.(Counter)
		c.Querier, _ = ix.(Querier)
		c.KeyMatcher, _ = ix.(KeyMatcher)
		c.MetadataKeeper, _ = ix.(MetadataKeeper)
		c.Scrubber, _ = ix.(Scrubber)
		c.Exclusive, _ = ix.(Exclusive)
		c.BlobKeyLister, _ = ix.(BlobKeyLister)
		if si, ok := ix.(SequenceIndexer); ok && si.IndexesSequences() {
			c.SequenceIndexer = si
		}
	}
	if bs != nil {
		c.BlobWalker, _ = bs.(BlobWalker)
		c.IntentReader, _ = bs.(IntentReader)
		c.BatchPublisher, _ = bs.(BatchPublisher)
		c.SpaceReporter, _ = bs.(SpaceReporter)
		c.UnfinishedRemover, _ = bs.(UnfinishedRemover)
		c.WholeBlobs, _ = bs.(WholeBlobs)
	}
	return c
}

// Names lists the capabilities present, by interface name, sorted: for
// the start-up log and for tests that check a backend still provides
// what it is meant to (a signature that drifts makes an assertion fail
// silently, and the caller fall back).
func (c Caps) Names() []string {
	have := map[string]bool{
		"Inserter": c.Inserter != nil, "BlobFinder": c.BlobFinder != nil,
		"DeferredSyncer": c.DeferredSyncer != nil, "DeletionRecorder": c.DeletionRecorder != nil,
		"DeleteHolder": c.DeleteHolder != nil, "InstanceWalker": c.InstanceWalker != nil,
		"Snapshotter": c.Snapshotter != nil, "SnapshotFiles": c.SnapshotFiles != nil,
		"Counter": c.Counter != nil, "Querier": c.Querier != nil, "KeyMatcher": c.KeyMatcher != nil,
		"SequenceIndexer": c.SequenceIndexer != nil, "MetadataKeeper": c.MetadataKeeper != nil,
		"Scrubber": c.Scrubber != nil, "Exclusive": c.Exclusive != nil, "BlobKeyLister": c.BlobKeyLister != nil,
		"BlobWalker": c.BlobWalker != nil, "IntentReader": c.IntentReader != nil,
		"BatchPublisher": c.BatchPublisher != nil, "SpaceReporter": c.SpaceReporter != nil,
		"UnfinishedRemover": c.UnfinishedRemover != nil, "WholeBlobs": c.WholeBlobs != nil,
	}
	var out []string
	for _, n := range slices.Sorted(maps.Keys(have)) {
		if have[n] {
			out = append(out, n)
		}
	}
	return out
}

// WrapBlobsFunc wraps opened Blobs (for encryption, say) as configured by
// dsn. The wrapper has only the capabilities it implements itself: it
// must not pass on one of inner's that would bypass it.
type WrapBlobsFunc func(ctx context.Context, inner Blobs, dsn string) (Blobs, error)

var wrappers = map[string]WrapBlobsFunc{}

// RegisterBlobsWrapper makes a blobs wrapper available under name, like
// RegisterBlobs.
func RegisterBlobsWrapper(name string, wrap WrapBlobsFunc) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if wrap == nil {
		panic("store: RegisterBlobsWrapper wrap is nil")
	}
	if _, dup := wrappers[name]; dup {
		panic("store: RegisterBlobsWrapper called twice for " + name)
	}
	wrappers[name] = wrap
}

// BlobsWrappers returns the sorted names of the registered blobs
// wrappers.
func BlobsWrappers() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return slices.Sorted(maps.Keys(wrappers))
}

// DefaultNode is the node ID of a Spec that names none.
const DefaultNode = "local"

// Open opens the index and the blobs spec names, wraps the blobs, and
// resolves their capabilities. On error nothing stays open.
func Open(ctx context.Context, spec Spec) (*Store, error) {
	if spec.Index == "" || spec.Blobs == "" {
		return nil, errors.New("store: a spec names an index and a blobs backend")
	}
	node := spec.Node
	if node == "" {
		node = DefaultNode
	}
	ix, err := OpenIndex(ctx, spec.Index, spec.IndexDSN)
	if err != nil {
		return nil, fmt.Errorf("opening index: %w", err)
	}
	bs, err := OpenBlobs(ctx, spec.Blobs, spec.BlobsDSN)
	if err != nil {
		ix.Close()
		return nil, fmt.Errorf("opening blob store: %w", err)
	}
	if ns, ok := bs.(NodeScoper); ok {
		if err := ns.SetNode(node); err != nil {
			bs.Close()
			ix.Close()
			return nil, fmt.Errorf("opening blob store: %w", err)
		}
	}
	if u, ok := bs.(IndexKeysUser); ok {
		if l, ok := ix.(BlobKeyLister); ok {
			u.UseIndexKeys(l.BlobKeysWithPrefix)
		}
	}
	for _, w := range spec.Wrappers {
		registryMu.RLock()
		wrap := wrappers[w.Name]
		registryMu.RUnlock()
		if wrap == nil {
			err = fmt.Errorf("store: unknown blobs wrapper %q (forgotten import?)", w.Name)
		} else {
			var wrapped Blobs
			if wrapped, err = wrap(ctx, bs, w.DSN); err == nil {
				bs = wrapped
			}
		}
		if err != nil {
			bs.Close()
			ix.Close()
			return nil, fmt.Errorf("opening blob store: %w", err)
		}
	}
	return &Store{Index: ix, Blobs: bs, Caps: Resolve(ix, bs), Node: node}, nil
}

// Close closes the blobs, then the index.
func (s *Store) Close() error {
	return errors.Join(s.Blobs.Close(), s.Index.Close())
}
