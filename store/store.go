// Package store defines the storage seams of Ward: an Index that holds the
// metadata of every stored instance, and Blobs that hold the object bytes.
//
// Backends plug in the way drivers plug into database/sql: they call
// RegisterIndex / RegisterBlobs (wrappers, such as encryption,
// RegisterBlobsWrapper) from an init function, and Open opens the ones a
// Spec names, resolving their optional capabilities once (Caps). Ward's
// backends are imported in one composition file (internal/server/
// backends.go). Every backend must pass the conformance suite in
// store/storetest, run there as a matrix over every pairing. Protocol code
// never imports a backend.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Sentinel errors; backends wrap them so that callers test with errors.Is.
var (
	// ErrNotFound is returned when an instance or blob does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrExists is returned by Blobs.Create when the key is already in use.
	ErrExists = errors.New("store: already exists")
	// ErrInvalidKey is returned by Blobs for a key the backend cannot hold.
	ErrInvalidKey = errors.New("store: invalid blob key")
	// ErrClosed is returned by an Index or Blobs used after Close.
	ErrClosed = errors.New("store: closed")
	// ErrCorrupt is returned by Blobs (a wrapper that authenticates what
	// it stores: encryption) for stored bytes that fail their integrity
	// check: altered or damaged, never to be served.
	ErrCorrupt = errors.New("store: stored object fails its integrity check")
	// ErrUnavailable is wrapped by a backend around a failure that says
	// nothing of the request and may pass if it is tried again later: a
	// shared database or object store that cannot be reached, is
	// restarting or shutting down, or gave up on a transaction that
	// conflicted with others'. What the failed call was to write may or
	// may not have been done (a commit whose answer was lost). Callers
	// map it to a transient failure (a DIMSE "out of resources" status,
	// HTTP 503) rather than to a failure of the object.
	ErrUnavailable = errors.New("store: unavailable")
)

// Instance is one stored SOP instance and the attributes Ward indexes at
// patient, study, series and instance level. Strings are UTF-8 (decoded from
// the object's Specific Character Set); dates are DICOM DA/TM/DT strings as
// received (trimmed).
type Instance struct {
	// Instance level
	SOPInstanceUID    string
	SOPClassUID       string
	TransferSyntaxUID string // the transfer syntax actually received and stored
	InstanceNumber    string
	ContentDate       string
	ContentTime       string
	NumberOfFrames    string
	Rows              int
	Columns           int

	// Series level
	SeriesInstanceUID               string
	Modality                        string
	SeriesNumber                    string
	SeriesDescription               string
	SeriesDate                      string
	SeriesTime                      string
	BodyPartExamined                string
	PerformedProcedureStepStartDate string

	// Study level
	StudyInstanceUID       string
	StudyDate              string
	StudyTime              string
	AccessionNumber        string
	StudyID                string
	StudyDescription       string
	ReferringPhysicianName string

	// Patient level
	PatientID         string
	IssuerOfPatientID string
	PatientName       string
	PatientBirthDate  string
	PatientSex        string

	// Sequences holds the kept items of the indexed sequences (see
	// SequenceSpec), for an Index that is a SequenceIndexer.
	Sequences []SequenceItem

	// Character set handling
	SpecificCharacterSet string // raw value(s) as received, backslash separated
	CharsetUnsupported   bool   // a character set Ward cannot decode: strings kept as received, flagged

	// Receipt
	SourceAET  string
	SourceAddr string
	ReceivedAt time.Time

	// Storage
	BlobKey string
	Size    int64
	// Checksum of the blob's bytes, "crc32c:" and 8 hex digits; empty when
	// unknown. Recovery uses it to tell a complete blob from one whose
	// fsync had not finished when the index row was committed.
	Checksum string

	// Metadata is the instance's DICOM JSON kept by a MetadataKeeper, as
	// Querier.Instances returns it when Query.WithMetadata asks; nil when
	// none is kept. Put ignores it.
	Metadata []byte
}

// CheckInstance reports what makes in unfit for an Index's Put or
// Insert: a missing instance, or an empty SOP Instance, Series Instance
// or Study Instance UID or blob key. Backends call it before writing;
// they may check more.
func CheckInstance(in *Instance) error {
	switch {
	case in == nil:
		return errors.New("nil instance")
	case in.SOPInstanceUID == "":
		return errors.New("empty SOP Instance UID")
	case in.SeriesInstanceUID == "":
		return errors.New("empty Series Instance UID")
	case in.StudyInstanceUID == "":
		return errors.New("empty Study Instance UID")
	case in.BlobKey == "":
		return errors.New("empty blob key")
	}
	return nil
}

// PutResult tells what a Put did.
type PutResult struct {
	// Replaced is true when an instance with the same SOP Instance UID existed
	// and was replaced. OldBlobKey is then the key of the replaced blob; the
	// index has recorded it for deletion (see Index.PendingBlobDeletes).
	Replaced   bool
	OldBlobKey string
}

// Index holds instance metadata. Implementations are safe for concurrent use.
type Index interface {
	// Put inserts or replaces (by SOP Instance UID) one instance, creating or
	// updating its patient, study and series rows, in one durable
	// transaction: when Put returns nil the row survives a crash.
	Put(ctx context.Context, in *Instance) (PutResult, error)
	// Get returns the instance with that SOP Instance UID or ErrNotFound.
	Get(ctx context.Context, sopInstanceUID string) (*Instance, error)
	// Delete removes one instance (and parents left empty), recording its
	// blob key for deletion.
	Delete(ctx context.Context, sopInstanceUID string) error
	// HasBlob reports whether some instance references the blob key.
	HasBlob(ctx context.Context, key string) (bool, error)
	// PendingBlobDeletes lists blob keys that were replaced or deleted and
	// whose blobs may still exist; BlobsDeleted forgets them once the blobs
	// are gone. Together they make replacement crash-safe without orphans.
	PendingBlobDeletes(ctx context.Context, limit int) ([]string, error)
	BlobsDeleted(ctx context.Context, keys []string) error
	// CountInstances returns the number of stored instances.
	CountInstances(ctx context.Context) (int64, error)
	Close() error
}

// ErrInstanceExists is returned by Inserter.Insert when the SOP Instance UID
// is already stored.
var ErrInstanceExists = errors.New("store: instance exists")

// Inserter is an optional capability of an Index: Insert is Put for a new
// instance only. It returns ErrInstanceExists, changing nothing, when the
// SOP Instance UID is stored already. Fallback: Put.
type Inserter interface {
	Insert(ctx context.Context, in *Instance) error
}

// BlobFinder is an optional capability of an Index: the instance that
// references a blob key, or ErrNotFound. Fallback: HasBlob (no checksum
// verification at recovery).
type BlobFinder interface {
	InstanceByBlob(ctx context.Context, key string) (*Instance, error)
}

// DurableNamer is an optional capability of a BlobWriter: NameDurable
// reports that the blob's name (directory entry) is durable already, before
// any byte is committed, so that once Commit has made the bytes durable the
// blob survives any crash without another metadata sync. Only then may a
// caller commit an index row referencing the blob while Commit is still
// running (recovery checks such blobs against their checksum). Fallback:
// false, commit the blob before the index.
type DurableNamer interface {
	NameDurable() bool
}

// DeferredSyncer is an optional capability of an Index: writes committed
// without waiting for the disk, for a caller that can redo them after a
// crash (the archive keeps, with each durable blob, the facts that rebuild
// its row: see IntentWriter). Such a write is visible at once and durable
// once Sync returns or any later write of the Index's ordinary kind has
// committed. A crash loses only the latest deferred writes: never one
// without every deferred write committed after it.
type DeferredSyncer interface {
	InsertDeferred(ctx context.Context, in *Instance) error
	PutDeferred(ctx context.Context, in *Instance) (PutResult, error)
	// Sync makes every write committed so far durable.
	Sync(ctx context.Context) error
}

// IntentWriter is an optional capability of a BlobWriter: a short record
// kept with the blob and made durable by Commit with its bytes. An error
// means the backend cannot keep one (the caller falls back to not needing
// it).
type IntentWriter interface {
	SetIntent(b []byte) error
}

// IntentReader is an optional capability of Blobs: the record a blob was
// committed with, or ErrNotFound.
type IntentReader interface {
	Intent(ctx context.Context, key string) ([]byte, error)
}

// BatchPublisher is an optional capability of Blobs: Publish of many keys
// at once, sharing the syncs. It returns the first error and publishes the
// other keys still.
type BatchPublisher interface {
	PublishAll(ctx context.Context, keys []string) error
}

// Blobs holds object bytes under string keys.
//
// Writing a blob is two-phase so that the index and the blobs agree after any
// crash: Create + Commit make the bytes durable in a pending state; the caller
// then commits the index row and calls Publish. Recover, at start-up, asks the
// index about every blob still pending and publishes or removes it, so no
// acknowledged object is lost and no unreferenced file stays behind.
type Blobs interface {
	// Create starts a new blob under a key that must not exist yet. An
	// empty key asks the backend to choose a new unique one (BlobWriter.Key
	// tells it), which lets a backend prepare storage ahead of time.
	Create(ctx context.Context, key string) (BlobWriter, error)
	// Publish finishes a committed blob once the index references it.
	// Publishing a published blob is a no-op.
	Publish(ctx context.Context, key string) error
	// Open returns the blob's bytes (pending or published) or ErrNotFound.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	// Delete removes a blob; deleting a missing blob is not an error.
	Delete(ctx context.Context, key string) error
	// Recover runs at start-up, before any Create: it removes unfinished
	// blobs, and publishes or deletes each pending blob as keep says
	// (normally Index.HasBlob).
	//
	// The multi-node contract: several nodes may share one Blobs (and one
	// Index), each opening it with its own node ID (NodeScoper). Recover
	// then touches only what this node left: the blobs it was writing,
	// and pending blobs no index row names only when they are older than
	// the backend's age guard (another node may be between Commit and its
	// index row). A backend without NodeScoper is for one node only.
	Recover(ctx context.Context, keep func(key string) (bool, error)) error
	Close() error
}

// BlobWriter receives a blob's bytes.
type BlobWriter interface {
	io.Writer
	// Key is the blob's key.
	Key() string
	// Commit makes the bytes durable (fsync of the file and its directory)
	// in the pending state. After Commit, Open finds the blob.
	Commit() error
	// Abort discards the bytes. Calling Abort after Commit is a no-op.
	Abort() error
}

// NormalizePN returns the form of a person name (PN) that backends index for
// case-insensitive matching: Unicode upper case, accents and component
// separators (^ =) kept. Query code normalises its pattern the same way.
func NormalizePN(name string) string { return strings.ToUpper(name) }

// Optional capabilities. A backend may implement these in addition to Index
// or Blobs; callers discover them by type assertion and fall back as
// documented on each.

// BlobWalker is implemented by Blobs that can enumerate their keys, e.g. for
// a consistency check that finds blobs no instance references.
// Fallback: without it such orphans cannot be found (Recover still handles
// every blob that was left pending by a crash).
type BlobWalker interface {
	// WalkBlobs calls fn for every committed blob (pending or published), in
	// no particular order, until fn returns an error, which it returns.
	WalkBlobs(ctx context.Context, fn func(key string, published bool) error) error
}

// DeletionRecorder is an optional capability of an Index: a deletion of
// many instances that is whole or not at all, and that is remembered
// until the caller has done what must follow it (record it in the audit
// trail). DeleteRecorded removes the instances named (those not stored
// are skipped; parents left empty go, blob keys are recorded for
// deletion as by Delete) and keeps note, in one durable transaction:
// after a crash either none of them is deleted and no note kept, or all
// of them are and the note is. RecordedDeletions lists the notes kept,
// oldest first; ForgetDeletion drops one. Fallback: Delete, one instance
// at a time (a crash can leave part of them deleted, with no note).
type DeletionRecorder interface {
	DeleteRecorded(ctx context.Context, sopInstanceUIDs []string, note []byte) (id int64, err error)
	RecordedDeletions(ctx context.Context) ([]RecordedDeletion, error)
	ForgetDeletion(ctx context.Context, id int64) error
}

// RecordedDeletion is a note kept by DeletionRecorder.DeleteRecorded.
type RecordedDeletion struct {
	ID   int64
	Note []byte
}

// WholeBlobs is an optional capability of Blobs whose blobs are written
// in one piece: a blob that exists holds every byte its writer committed,
// never a part (an object store's PUT; a key is written once). BlobSize
// is its size, or ErrNotFound; recovery then checks a pending blob's size
// against its row instead of reading it through. Fallback: the blob is
// read and its checksum compared.
type WholeBlobs interface {
	BlobSize(ctx context.Context, key string) (int64, error)
}

// UnfinishedRemover is an optional capability of Blobs: RemoveUnfinished
// removes the blobs being written (created, neither committed nor
// aborted) that an earlier process left when it was killed, and nothing
// else: pending and published blobs stay. Call it only on a store no other
// process writes to, before creating any blob. Fallback: Recover, which
// also decides on every pending blob; without either, a key left being
// written stays in use (Create returns ErrExists).
type UnfinishedRemover interface {
	RemoveUnfinished(ctx context.Context) error
}

// InstanceWalker is an optional capability of an Index: every instance,
// for a consistency check (ward verify). WalkInstances calls fn for each
// instance in a stable order with at least SOPInstanceUID, SOPClassUID,
// TransferSyntaxUID, StudyInstanceUID, PatientID, BlobKey, Size and
// Checksum set,
// until fn returns an error, which it returns. It does not hold one read
// transaction for the whole walk: instances stored or deleted meanwhile
// may or may not be seen. Fallback: the check covers the studies it is
// given, through Querier.
type InstanceWalker interface {
	WalkInstances(ctx context.Context, fn func(*Instance) error) error
}

// StoredCopier is an optional capability of a Blobs wrapper that changes
// the bytes it stores (encryption), for a copy of the store that must
// hold them as stored (a backup). OpenStored returns the blob's bytes as
// the inner store holds them; as they are read, the bytes they stand
// for are checked and written to plain, so that the caller can check them
// against the size and checksum it recorded, and a read fails when they
// do not check out. Records calls fn with each record of the wrapper's
// own in the inner store (keys no caller gave), which a copy needs as
// well, and which are not the caller's blobs; OpenStored of a record's
// key returns its bytes as stored (plain may be nil). PlainSize is the
// size of the bytes a stored copy of size n stands for, read from its
// beginning r (the copy's own header: a copy made earlier is checked
// against its row without decrypting it). Fallback: Open, which
// copies the bytes as the caller sees them (for encryption: decrypted).
type StoredCopier interface {
	OpenStored(ctx context.Context, key string, plain io.Writer) (io.ReadCloser, error)
	Records(ctx context.Context, fn func(key string) error) error
	PlainSize(r io.Reader, n int64) (int64, error)
}

// SpaceReporter is an optional capability of Blobs: the bytes free for
// new blobs and the size of the storage that holds them. Fallback: no
// free-space reserve is kept (a full disk still fails a store cleanly).
type SpaceReporter interface {
	Space(ctx context.Context) (free, total int64, err error)
}

// Snapshotter is an optional capability of an Index: a consistent copy of
// the index as committed at one moment, written to path (which must not
// exist) and returned open, for a backup. Taking it does not stop writes.
// Fallback: none (no backup).
type Snapshotter interface {
	Snapshot(ctx context.Context, path string) (Index, error)
}

// SnapshotFiles is an optional capability of a Snapshotter: the files a
// snapshot lives in, which only the backend knows (a database's journal,
// say). RemoveSnapshot removes whatever a snapshot at path left (an
// interrupted one's, too); a missing one is not an error. InstallSnapshot
// checks that the closed snapshot at from is whole in its files, then puts
// it in place of the closed index at to (which may not exist), durably:
// after a crash, to holds either the old index or the new one. Fallback:
// a snapshot is the one file at its path (os.Remove, os.Rename and a sync
// of the folder).
type SnapshotFiles interface {
	RemoveSnapshot(path string) error
	InstallSnapshot(from, to string) error
}

// DeleteHolder is an optional capability of an Index: holds on blob
// deletion (a backup copying the objects a snapshot names holds them),
// recorded in the index, so that every node sharing it sees them and a
// restart of the process does not forget them. HoldDeletes records a hold
// for node that lapses after ttl unless renewed by RenewHold (so a node
// that dies holding one does not hold deletion for ever); ReleaseHold
// drops one; DeletesHeld reports whether any hold has not lapsed.
// ReleaseNodeHolds drops every hold of node: what the node left, at its
// start. While deletes are held, blobs recorded for deletion stay (the
// index keeps them in PendingBlobDeletes). Fallback: holds in the memory
// of the process, which only that process sees (one node).
type DeleteHolder interface {
	HoldDeletes(ctx context.Context, node string, ttl time.Duration) (id int64, err error)
	RenewHold(ctx context.Context, id int64, ttl time.Duration) error
	ReleaseHold(ctx context.Context, id int64) error
	DeletesHeld(ctx context.Context) (bool, error)
	ReleaseNodeHolds(ctx context.Context, node string) error
}

// NodeScoper is an optional capability of Blobs that several nodes may
// share: SetNode, called once by Open before Recover or any Create, names
// the node whose unfinished work this handle writes and recovers (see
// Blobs.Recover); an error means the ID cannot name a node there.
// Fallback: the Blobs serve one node; Recover and RemoveUnfinished remove
// every unfinished blob.
type NodeScoper interface {
	SetNode(id string) error
}

// MetadataKeeper is an optional capability of an Index: with each
// instance's row, the bytes of its metadata (the archive keeps its DICOM
// JSON, PS3.18 F.2, with placeholders for bulk data), so that the
// metadata of a whole series is read with its rows, in one query
// (Query.WithMetadata), without opening an object. SetMetadata keeps b
// for the instance stored under sopInstanceUID only while its row still
// names blobKey: when the object was replaced or deleted meanwhile it
// keeps nothing and returns nil. A Put of the same SOP Instance UID and a
// Delete drop what was kept. SetMetadata need not be durable (a crash may
// lose it; it is computed again). Fallback: nothing kept; the archive
// reads each object every time its metadata is asked for.
type MetadataKeeper interface {
	SetMetadata(ctx context.Context, sopInstanceUID, blobKey string, b []byte) error
}

// Registry of backends, in the manner of database/sql drivers.

// OpenIndexFunc opens an Index from a backend-specific data source name.
type OpenIndexFunc func(ctx context.Context, dsn string) (Index, error)

// OpenBlobsFunc opens Blobs from a backend-specific data source name.
type OpenBlobsFunc func(ctx context.Context, dsn string) (Blobs, error)

var (
	registryMu sync.RWMutex
	indexes    = map[string]OpenIndexFunc{}
	blobStores = map[string]OpenBlobsFunc{}
)

// RegisterIndex makes an Index backend available under name. It is meant to
// be called from a backend's init function and panics if open is nil or the
// name is already registered.
func RegisterIndex(name string, open func(ctx context.Context, dsn string) (Index, error)) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if open == nil {
		panic("store: RegisterIndex open is nil")
	}
	if _, dup := indexes[name]; dup {
		panic("store: RegisterIndex called twice for " + name)
	}
	indexes[name] = open
}

// RegisterBlobs makes a Blobs backend available under name. It is meant to
// be called from a backend's init function and panics if open is nil or the
// name is already registered.
func RegisterBlobs(name string, open func(ctx context.Context, dsn string) (Blobs, error)) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if open == nil {
		panic("store: RegisterBlobs open is nil")
	}
	if _, dup := blobStores[name]; dup {
		panic("store: RegisterBlobs called twice for " + name)
	}
	blobStores[name] = open
}

// OpenIndex opens the Index backend registered under name.
func OpenIndex(ctx context.Context, name, dsn string) (Index, error) {
	registryMu.RLock()
	open := indexes[name]
	registryMu.RUnlock()
	if open == nil {
		return nil, fmt.Errorf("store: unknown index backend %q (forgotten import?)", name)
	}
	return open(ctx, dsn)
}

// OpenBlobs opens the Blobs backend registered under name.
func OpenBlobs(ctx context.Context, name, dsn string) (Blobs, error) {
	registryMu.RLock()
	open := blobStores[name]
	registryMu.RUnlock()
	if open == nil {
		return nil, fmt.Errorf("store: unknown blobs backend %q (forgotten import?)", name)
	}
	return open(ctx, dsn)
}

// IndexBackends returns the sorted names of the registered Index backends.
func IndexBackends() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return slices.Sorted(maps.Keys(indexes))
}

// BlobsBackends returns the sorted names of the registered Blobs backends.
func BlobsBackends() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return slices.Sorted(maps.Keys(blobStores))
}

// Counts are the numbers of rows at each level of an Index.
type Counts struct {
	Patients  int64 `json:"patients"`
	Studies   int64 `json:"studies"`
	Series    int64 `json:"series"`
	Instances int64 `json:"instances"`
}

// Counter is implemented by an Index that can count its patients, studies
// and series as well as its instances (statistics, consistency checks).
// Fallback: Index.CountInstances, with the other levels unknown.
type Counter interface {
	Counts(ctx context.Context) (Counts, error)
}

// Scrubber is an optional capability of an Index: Scrub rids the index's
// own files of the bytes of rows deleted so far that may linger there (a
// write-ahead log's old frames, say), for an erasure that must leave
// nothing of a patient behind. It may wait briefly for readers. With
// rewrite, the index is also rewritten whole (what deletions before the
// backend zeroed them left in free space goes too), which holds up writes
// while it runs. Fallback: none; the backend's documentation says what
// lingers and until when (PostgreSQL: dead tuples until VACUUM, and its
// WAL).
type Scrubber interface {
	Scrub(ctx context.Context, rewrite bool) error
}

// BlobKeyLister is an optional capability of an Index: the blob keys
// that instances name and that begin with prefix, for Blobs whose
// recovery needs them (IndexKeysUser). Fallback: none.
type BlobKeyLister interface {
	BlobKeysWithPrefix(ctx context.Context, prefix string) ([]string, error)
}

// PrefixEnd is the least string greater than every string that begins
// with prefix, for a range query [prefix, PrefixEnd(prefix)) on keys of
// printable ASCII (blob keys); "" for an empty prefix (no bound).
func PrefixEnd(prefix string) string {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] < 0x7f {
			return prefix[:i] + string(prefix[i]+1)
		}
	}
	return ""
}

// IndexKeysUser is an optional capability of Blobs whose keys carry a
// prefix that Recover can ask the index about (store/s3blob: the
// blobs of an epoch): Open passes the Index's BlobKeysWithPrefix when it
// has one, before any blob is written. With it Recover also decides
// (asks keep) about index rows naming blobs that a crash left unwritten,
// so that the writers may be DurableNamers.
type IndexKeysUser interface {
	UseIndexKeys(list func(ctx context.Context, prefix string) ([]string, error))
}

// Exclusive is an optional capability of an Index several nodes share:
// TryExclusive takes the lock named key for the caller if no one (on any
// node) holds it, and returns its release; ok is false when another holds
// it. A holder that dies or loses its connection loses the lock. For a
// job only one node of a cluster should run at a time (a retention pass).
// Fallback: an Index of one node; the caller's own mutex suffices.
type Exclusive interface {
	TryExclusive(ctx context.Context, key int64) (release func(), ok bool, err error)
}
