// Package archive is the PACS: the transport-neutral service (api.go) that
// every front end calls, on top of the store seams, with domain errors
// (errors.go) the front ends map to their statuses. A stored object streams
// from the front end into a blob while the attributes Ward indexes are
// extracted, and Store returns only once the blob is fsynced and the index
// row committed.
//
// Where the index can commit without waiting for the disk
// (store.DeferredSyncer) and the blob can carry an intent record
// (store.IntentWriter), the blob's fsync also makes durable what rebuilds
// its row (size, checksum, time and address of receipt): the row is
// committed without an fsync of its own, and Open replays, from the
// pending blobs, the rows a crash lost. Blobs are published, and replaced
// ones deleted, only after the index was synced.
package archive

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store"
)

// DuplicatePolicy says what a C-STORE of a SOP Instance UID already stored
// does.
type DuplicatePolicy string

// The policies.
const (
	// DuplicateReplace: the newer object replaces the older; one copy is
	// kept. The default.
	DuplicateReplace DuplicatePolicy = "replace"
	// DuplicateKeep: the stored object is kept and the new one is
	// acknowledged without being stored (status success, as the object is
	// in the archive).
	DuplicateKeep DuplicatePolicy = "keep"
	// DuplicateReject: the new object is refused with ErrDuplicate
	// (DIMSE status 0x0111).
	DuplicateReject DuplicatePolicy = "reject"
)

// Archive implements Service.
type Archive struct {
	Index store.Index
	Blobs store.Blobs
	// Caps are the optional capabilities of Index and Blobs as store.Open
	// resolved them (store.Store.Caps); the archive reads them there and
	// takes the fallback documented on each one that is nil. Nil: they are
	// resolved from Index and Blobs on first use (store.Resolve).
	Caps *store.Caps
	// Node is the ID of this node among those sharing the store: the
	// holds on deletion it records are its own (store.DeleteHolder).
	// Empty: store.DefaultNode.
	Node   string
	Logger *slog.Logger
	// OnDuplicate is the re-sent SOP Instance UID policy.
	OnDuplicate DuplicatePolicy
	// MaxIndexedValue bounds one indexed attribute's value.
	MaxIndexedValue int
	// MinFree is the free space kept in reserve on the blob store's disk
	// (a store.SpaceReporter): a C-STORE that arrives when less is free
	// is refused before anything is written, so that the disk never fills
	// (the index, its write-ahead log and the system need room too).
	// MinFreeShare, when above 0, lowers the reserve to that share of the
	// disk's size (for small disks). 0: no reserve.
	MinFree      int64
	MinFreeShare float64

	// Query/retrieve (find.go, retrieve.go).
	// AETitle is the Retrieve AE Title (0008,0054) of C-FIND responses; ""
	// means the title the peer called Ward by.
	AETitle string
	// MaxFindResults caps the matches of one C-FIND (0: 1000; < 0: none).
	MaxFindResults int
	// deidSecret is the de-identification secret of the retrieves that
	// leave de-identified (SetDeidSecret; nil: they are refused).
	deidSecret atomic.Pointer[[]byte]
	// DestinationDeidentify gives the de-identification profile of a
	// C-MOVE destination ("" for none), as the registry has it when the
	// C-MOVE arrives; an error refuses the C-MOVE (nil: destinations have
	// none). See retrieveProfile for how it combines with the requester's.
	DestinationDeidentify func(aeTitle string) (profile string, err error)
	// PNCaseSensitive turns off the default case-insensitive PN matching.
	PNCaseSensitive bool
	// Destinations resolves a C-MOVE destination AE title to HOST:PORT,
	// or says why it is not one (nil: every destination is unknown).
	Destinations func(aeTitle string) (addr string, err error)
	// Sequences are the sequences kept for sequence matching and returned
	// by C-FIND, when the index is a store.SequenceIndexer: nil means
	// store.DefaultSequences, an empty non-nil slice none. Keyword and item
	// keywords must be in the DICOM dictionary (Open checks).
	Sequences []store.SequenceSpec
	seqs      *seqIndex

	// Publishing a stored blob and deleting the one it replaced happen after
	// the response, off the C-STORE's critical path: neither is needed for
	// durability (Recover finishes both after a crash).
	after     chan afterStore
	afterDone chan struct{}
	// ReplacedGrace is how long a replaced blob stays before it is
	// deleted (0: DefaultReplacedGrace): a retrieve that read the index
	// before the replace, on this node or another, may still be reading
	// it (an object store's reads are ranged requests, each of which
	// needs the object still there). It stays recorded for deletion in
	// the index meanwhile, so a crash loses nothing; Close deletes what
	// is waiting.
	ReplacedGrace time.Duration
	replacedMu    sync.Mutex
	replaced      []replacedBlob

	// SkipMetadataAfterStore: the metadata of a stored object is not
	// computed after its store, only when first asked for (metadata.go).
	SkipMetadataAfterStore bool
	metaJobs               chan metadataJob
	metaStop, metaDone     chan struct{}
	lastStored             atomic.Int64 // when an object was last stored (unix ns), for metadataLoop

	// noIntents: a blob could not take an intent record, so rows are
	// committed durably before responses.
	noIntents atomic.Bool
	// syncFailed: an index Sync failed; nothing is published until restart.
	syncFailed atomic.Bool

	// space caches the last free-space reading (space.go).
	space spaceCache

	// holds counts the backups running: while one runs, no blob the index
	// has recorded for deletion is deleted (backup.go).
	holdMu sync.Mutex
	holds  int

	capsOnce sync.Once
	caps     *store.Caps
}

// Capabilities are the optional capabilities of the archive's store
// (Caps), for what works on the store beside the archive (ward status, a
// backup's snapshot).
func (ar *Archive) Capabilities() store.Caps { return *ar.capabilities() }

// capabilities are the store's optional capabilities (Caps).
func (ar *Archive) capabilities() *store.Caps {
	ar.capsOnce.Do(func() {
		ar.caps = ar.Caps
		if ar.caps == nil {
			c := store.Resolve(ar.Index, ar.Blobs)
			ar.caps = &c
		}
	})
	return ar.caps
}

// DefaultReplacedGrace is Archive.ReplacedGrace when it is 0.
const DefaultReplacedGrace = 30 * time.Second

// maxReplacedWaiting bounds the replaced blobs waiting for their grace
// to end: beyond it the oldest are deleted early.
const maxReplacedWaiting = 1 << 16

// replacedBlob is a replaced blob waiting to be deleted at due.
type replacedBlob struct {
	key string
	due time.Time
}

// deleteReplacedLater records key, a replaced blob, for deletion once its
// grace has passed.
func (ar *Archive) deleteReplacedLater(key string) {
	grace := ar.ReplacedGrace
	if grace <= 0 {
		grace = DefaultReplacedGrace
	}
	ar.replacedMu.Lock()
	ar.replaced = append(ar.replaced, replacedBlob{key: key, due: time.Now().Add(grace)})
	ar.replacedMu.Unlock()
}

// deleteReplaced deletes the replaced blobs whose grace has passed (all
// of them with all, and the oldest beyond maxReplacedWaiting).
func (ar *Archive) deleteReplaced(all bool) {
	now := time.Now()
	ar.replacedMu.Lock()
	n := 0
	for n < len(ar.replaced) && (all || !ar.replaced[n].due.After(now) || len(ar.replaced)-n > maxReplacedWaiting) {
		n++
	}
	keys := make([]string, n)
	for i, r := range ar.replaced[:n] {
		keys[i] = r.key
	}
	ar.replaced = append(ar.replaced[:0], ar.replaced[n:]...)
	ar.replacedMu.Unlock()
	if len(keys) == 0 {
		return
	}
	// Held by a backup, or failed: they stay recorded for deletion in
	// the index (deleted when the backup ends, or at the next start).
	if err := ar.deleteBlobs(context.Background(), keys); err != nil && !errors.Is(err, errDeletesHeld) {
		ar.Logger.Warn("deleting replaced objects failed; retried at next start", "err", err)
	}
}

// afterStore is the work that follows a stored object's response: key is
// its blob, oldKey the one it replaced; uid and ts, when set, name the
// instance and its syntax, for its metadata.
type afterStore struct{ key, oldKey, uid, ts string }

// Open recovers the stores after a crash: unfinished blobs are removed,
// committed ones published or deleted as the index says, and replaced
// blobs still pending deletion are deleted.
func (ar *Archive) Open(ctx context.Context) error {
	if ar.Logger == nil {
		ar.Logger = slog.New(slog.DiscardHandler)
	}
	if ar.OnDuplicate == "" {
		ar.OnDuplicate = DuplicateReplace
	}
	if ar.MaxIndexedValue == 0 {
		ar.MaxIndexedValue = 64 * 1024
	}
	seqs, err := ar.sequenceIndex()
	if err != nil {
		return err
	}
	ar.seqs = seqs
	// Holds on deletion this node left (killed during a backup) are
	// dropped; other nodes' stay until released or lapsed.
	if dh := ar.capabilities().DeleteHolder; dh != nil {
		if err := dh.ReleaseNodeHolds(ctx, ar.node()); err != nil {
			return err
		}
	}
	// Replaced and deleted blobs first, so that a pending one is not taken
	// for a stored object whose row a crash lost. Held by another node's
	// backup, they stay recorded for deletion, and kept (published) by
	// Recover, not taken for lost rows.
	var held map[string]bool
	if err := ar.deletePending(ctx); errors.Is(err, errDeletesHeld) {
		keys, err := ar.Index.PendingBlobDeletes(ctx, 0)
		if err != nil {
			return fmt.Errorf("listing replaced blobs: %w", err)
		}
		held = map[string]bool{}
		for _, k := range keys {
			held[k] = true
		}
	} else if err != nil {
		return err
	}
	keep := func(key string) (bool, error) {
		if held[key] {
			return true, nil
		}
		return ar.keepPending(ctx, key)
	}
	if err := ar.Blobs.Recover(ctx, keep); err != nil {
		return fmt.Errorf("recovering blobs: %w", err)
	}
	if err := ar.deletePending(ctx); err != nil && !errors.Is(err, errDeletesHeld) {
		return err
	}
	ar.after = make(chan afterStore, 4096)
	ar.afterDone = make(chan struct{})
	if ar.capabilities().MetadataKeeper != nil && !ar.SkipMetadataAfterStore {
		ar.metaJobs = make(chan metadataJob, metadataQueue)
		ar.metaStop, ar.metaDone = make(chan struct{}), make(chan struct{})
		go ar.metadataLoop()
	}
	go ar.afterLoop()
	return nil
}

// deletePending deletes the blobs the index says were replaced or deleted.
func (ar *Archive) deletePending(ctx context.Context) error {
	for {
		keys, err := ar.Index.PendingBlobDeletes(ctx, 1000)
		if err != nil {
			return fmt.Errorf("listing replaced blobs: %w", err)
		}
		if len(keys) == 0 {
			return nil
		}
		if err := ar.deleteBlobs(ctx, keys); err != nil {
			return err
		}
	}
}

// keepPending decides, at start-up, on a blob that a crash left pending: kept
// when an index row names it and its bytes match the row's size and
// checksum. A row whose blob does not match was committed while the
// object's fsync was still running and never answered: it is removed (a
// blob that cannot be read now is no proof of that: the start fails). A
// blob no row names may be a stored object whose deferred row the crash
// lost: replayBlob restores that.
func (ar *Archive) keepPending(ctx context.Context, key string) (bool, error) {
	bf := ar.capabilities().BlobFinder
	if bf == nil {
		if has, err := ar.Index.HasBlob(ctx, key); has || err != nil {
			return has, err
		}
		return ar.replayBlob(ctx, key)
	}
	in, err := bf.InstanceByBlob(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return ar.replayBlob(ctx, key)
	}
	if err != nil {
		return false, err
	}
	if in.Checksum == "" {
		return true, nil
	}
	var sum string
	var n int64
	if wb := ar.capabilities().WholeBlobs; wb != nil {
		// Written in one piece: there, it is whole (its size the check
		// of a row that names another blob's bytes).
		n, err = wb.BlobSize(ctx, key)
		sum = in.Checksum
	} else {
		sum, n, err = ar.blobChecksum(ctx, key)
	}
	if err == nil && sum == in.Checksum && n == in.Size {
		return true, nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		// Not read now (an object store away, an I/O error): that says
		// nothing of the bytes. Dropping the row could lose an
		// acknowledged object; the start fails and is tried again.
		return false, fmt.Errorf("checking a recovered object's bytes: %w", err)
	}
	ar.Logger.Warn("recovery: an object's bytes did not survive a crash; its index row is removed (the store was never acknowledged)", "blob", key)
	if err := ar.Index.Delete(ctx, in.SOPInstanceUID); err != nil {
		return false, err
	}
	return false, nil
}

func (ar *Archive) blobChecksum(ctx context.Context, key string) (string, int64, error) {
	rc, err := ar.Blobs.Open(ctx, key)
	if err != nil {
		return "", 0, err
	}
	defer rc.Close()
	cw := &countingWriter{w: io.Discard}
	_, err = io.Copy(cw, rc)
	return cw.checksum(), cw.n, err
}

// Queued is the work waiting after responses, for metrics: stored objects
// whose publication (and the deletion of the object each replaced) waits
// for the after loop, and stored objects whose metadata waits to be
// computed (metadata.go). Call it between Open and Close.
func (ar *Archive) Queued() (after, metadata int) { return len(ar.after), len(ar.metaJobs) }

// Close finishes the work queued after responses. The stores stay open.
func (ar *Archive) Close() {
	if ar.after != nil {
		close(ar.after)
		<-ar.afterDone
		ar.after = nil
	}
	if ar.metaJobs != nil {
		close(ar.metaStop)
		close(ar.metaJobs)
		<-ar.metaDone
		ar.metaJobs = nil
	}
}

// The after loop gathers up to afterBatch jobs, waiting at most afterWait
// for more, so that one index sync covers them all.
const (
	afterBatch = 256
	afterWait  = 20 * time.Millisecond
)

func (ar *Archive) afterLoop() {
	defer close(ar.afterDone)
	jobs := make([]afterStore, 0, afterBatch)
	sweep := time.NewTicker(time.Second)
	defer sweep.Stop()
	for {
		var job afterStore
		select {
		case j, ok := <-ar.after:
			if !ok {
				ar.deleteReplaced(true)
				return
			}
			job = j
		case <-sweep.C:
			ar.deleteReplaced(false)
			continue
		}
		jobs = append(jobs[:0], job)
		timer := time.NewTimer(afterWait)
	gather:
		for len(jobs) < afterBatch {
			select {
			case j, ok := <-ar.after:
				if !ok {
					break gather
				}
				jobs = append(jobs, j)
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		ar.finish(jobs...)
	}
}

// finish makes the index rows of stored blobs durable, then publishes the
// blobs; the ones they replaced are deleted once ReplacedGrace has passed.
func (ar *Archive) finish(jobs ...afterStore) {
	ctx := context.Background()
	if ds := ar.capabilities().DeferredSyncer; ds != nil {
		if ar.syncFailed.Load() {
			return
		}
		if err := ds.Sync(ctx); err != nil {
			// The blobs stay pending: Open replays their rows if the
			// index lost them, then publishes. For the rest of the run,
			// as a later Sync cannot vouch for what this one failed to
			// write (the kernel may drop the failed pages, and a WAL is
			// valid only up to its first bad frame).
			ar.syncFailed.Store(true)
			ar.Logger.Error("syncing the index failed; stored objects stay pending until the next start, which restores their index rows", "err", err)
			return
		}
	}
	if bp := ar.capabilities().BatchPublisher; bp != nil && len(jobs) > 1 {
		keys := make([]string, len(jobs))
		for i, job := range jobs {
			keys[i] = job.key
		}
		if err := bp.PublishAll(ctx, keys); err != nil {
			ar.Logger.Warn("publishing stored objects failed; they stay readable and are published at next start", "err", err)
		}
	} else {
		for _, job := range jobs {
			if err := ar.Blobs.Publish(ctx, job.key); err != nil {
				// Durable and indexed: Open finds pending blobs, Recover publishes.
				ar.Logger.Warn("publishing a stored object failed; it stays readable and is published at next start", "err", err)
			}
		}
	}
	for _, job := range jobs {
		if job.oldKey != "" {
			ar.deleteReplacedLater(job.oldKey)
		}
		ar.queueMetadata(metadataJob{uid: job.uid, key: job.key, ts: job.ts})
	}
}

func (ar *Archive) node() string {
	if ar.Node == "" {
		return store.DefaultNode
	}
	return ar.Node
}

// errDeletesHeld: a backup runs; the blobs stay recorded for deletion and
// are deleted when it ends.
var errDeletesHeld = errors.New("blob deletion held by a backup")

func (ar *Archive) deleteBlobs(ctx context.Context, keys []string) error {
	ar.holdMu.Lock()
	defer ar.holdMu.Unlock()
	if ar.holds > 0 {
		return errDeletesHeld
	}
	if dh := ar.capabilities().DeleteHolder; dh != nil {
		held, err := dh.DeletesHeld(ctx)
		if err != nil {
			return err
		}
		if held {
			return errDeletesHeld // by another node
		}
	}
	for _, k := range keys {
		if err := ar.Blobs.Delete(ctx, k); err != nil {
			return fmt.Errorf("deleting replaced blob: %w", err)
		}
	}
	return ar.Index.BlobsDeleted(ctx, keys)
}

// indexed lists the top-level attributes the index holds.
var indexed = map[dicom.Tag]bool{
	dicom.SpecificCharacterSet: true, dicom.SOPClassUID: true, dicom.SOPInstanceUID: true,
	dicom.StudyInstanceUID: true, dicom.SeriesInstanceUID: true,
	dicom.PatientID: true, dicom.IssuerOfPatientID: true, dicom.PatientName: true, dicom.PatientBirthDate: true, dicom.PatientSex: true,
	dicom.StudyDate: true, dicom.StudyTime: true, dicom.AccessionNumber: true, dicom.StudyID: true, dicom.StudyDescription: true, dicom.ReferringPhysicianName: true,
	dicom.Modality: true, dicom.SeriesNumber: true, dicom.SeriesDescription: true, dicom.SeriesDate: true, dicom.SeriesTime: true, dicom.BodyPartExamined: true, dicom.PerformedProcedureStepStartDate: true,
	dicom.InstanceNumber: true, dicom.ContentDate: true, dicom.ContentTime: true, dicom.NumberOfFrames: true, dicom.Rows: true, dicom.Columns: true,
}

func wanted(t dicom.Tag) bool { return indexed[t] }

// writerPool holds the buffers between the association and a blob: 32 KiB,
// the largest write whose page cache folio Linux takes from its per-CPU
// lists of recently freed pages (fsblob.maxWrite says why that matters).
var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32*1024) }}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// countingWriter counts and checksums (CRC-32C) bytes written through it.
type countingWriter struct {
	w   io.Writer
	n   int64
	crc uint32
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.crc = crc32.Update(c.crc, castagnoli, p[:n])
	return n, err
}

func (c *countingWriter) checksum() string { return fmt.Sprintf("crc32c:%08x", c.crc) }

// Checksum is the store.Instance.Checksum of a blob's bytes.
func Checksum(b []byte) string {
	return fmt.Sprintf("crc32c:%08x", crc32.Checksum(b, castagnoli))
}

// Store stores one object: Part 10 header, then the data set exactly as
// received, teed to the blob while Scan extracts the indexed attributes. It
// returns once the object is durable. The Stored it returns is never nil:
// on failure it holds what was learned of the object before it (for the
// audit trail).
func (ar *Archive) Store(ctx context.Context, r *StoreRequest) (*Stored, error) {
	out := &Stored{}
	return out, ar.store(ctx, r, out)
}

func (ar *Archive) store(ctx context.Context, r *StoreRequest, out *Stored) (err error) {
	ts := dicom.LookupTransferSyntax(r.TransferSyntaxUID)
	if ts == nil {
		return Failf(ErrCannotUnderstand, "unknown transfer syntax %q", r.TransferSyntaxUID)
	}
	if ar.OnDuplicate != DuplicateReplace {
		// A quick answer for an object stored before. Two stores of one
		// SOP Instance UID at once (on two associations, or two nodes
		// sharing the index) may both pass this check: the index's
		// Insert below decides between them.
		if in, err := ar.Index.Get(ctx, r.SOPInstanceUID); err == nil {
			if err := ar.duplicate(in, out); err != nil {
				return err
			}
			_, err := io.Copy(io.Discard, r.Data)
			return err
		} else if !errors.Is(err, store.ErrNotFound) {
			return resourceError("reading the index", err)
		}
	}
	if err := ar.checkSpace(ctx); err != nil {
		return err
	}
	bw, err := ar.Blobs.Create(ctx, "")
	if err != nil {
		return resourceError("creating the object", err)
	}
	key := bw.Key()
	committed := false
	defer func() {
		if !committed {
			_ = bw.Abort()
		}
	}()
	cw := &countingWriter{w: bw}
	buf := writerPool.Get().(*bufio.Writer)
	buf.Reset(cw)
	defer func() { buf.Reset(nil); writerPool.Put(buf) }()
	meta := &dicom.FileMeta{
		MediaStorageSOPClassUID:      r.SOPClassUID,
		MediaStorageSOPInstanceUID:   r.SOPInstanceUID,
		TransferSyntaxUID:            r.TransferSyntaxUID,
		ImplementationClassUID:       dicom.ImplementationClassUID,
		ImplementationVersionName:    dicom.ImplementationVersionName,
		SourceApplicationEntityTitle: r.Origin.AETitle,
	}
	if err := dicom.WriteFileHeader(buf, meta); err != nil {
		if errors.Is(err, dicom.ErrMalformed) {
			return Failf(ErrCannotUnderstand, "cannot store the object: %w", err)
		}
		return resourceError("writing the object header", err)
	}
	tee := &teeReader{r: r.Data, w: buf}
	var keep *dicom.KeepSequences
	if ar.seqs != nil {
		keep = ar.seqs.keep
	}
	attrs, err := dicom.ScanWith(tee, ts, wanted, ar.MaxIndexedValue, keep)
	if tee.werr != nil {
		return resourceError("writing the object", tee.werr)
	}
	if pe := (*dicom.PixelEncodingError)(nil); errors.As(err, &pe) {
		// Stored, it would be labelled with a syntax it is not in, and
		// every later retrieval would fail (issue 14, item 18).
		return &Error{Kind: ErrInvalidAttribute, Comment: pe.Detail(), Tag: dicom.PixelData, Err: err}
	}
	if err != nil {
		return Failf(ErrCannotUnderstand, "cannot parse the data set: %w", err)
	}
	if err := buf.Flush(); err != nil {
		return resourceError("writing the object", err)
	}
	in, err := instanceFrom(attrs, receipt{
		sopClass: r.SOPClassUID, sopInstance: r.SOPInstanceUID, transferSyntax: r.TransferSyntaxUID,
		study: r.ExpectStudy, aet: r.Origin.AETitle, addr: r.Origin.Addr, at: time.Now().UTC(),
	})
	if err != nil {
		return err
	}
	ar.warnUIDs(r, in)
	in.Sequences = ar.seqs.items(attrs)
	in.BlobKey, in.Size, in.Checksum = key, cw.n, cw.checksum()
	ar.space.wrote(cw.n)
	out.StudyInstanceUID, out.PatientID, out.SeriesInstanceUID = in.StudyInstanceUID, in.PatientID, in.SeriesInstanceUID
	put := ar.Index.Put
	ins := ar.capabilities().Inserter
	ds, err := ar.deferrable(bw, in)
	if err != nil {
		return resourceError("writing the intent record", err)
	}
	if ds != nil {
		put, ins = ds.PutDeferred, deferredInserter{ds}
	}
	if ins != nil && nameDurable(bw) {
		// A new instance whose blob name is durable already: the object's
		// fsync and the index commit run at once, and the response waits
		// for both. Should the index row outlive a crash that the object's
		// bytes did not, recovery finds the checksum wrong and removes the
		// row: it was never answered. (A blob whose name is not durable yet
		// could vanish whole in a crash, leaving a row recovery never
		// sees: it is committed before its row.)
		synced := make(chan error, 1)
		go func() { synced <- bw.Commit() }()
		insErr := ins.Insert(ctx, in)
		syncErr := <-synced
		committed = true
		switch {
		case syncErr != nil:
			if insErr == nil {
				if err := ar.Index.Delete(ctx, in.SOPInstanceUID); err != nil {
					ar.Logger.Warn("removing the index row of an object that failed to sync failed; recovery removes it", "err", err)
				}
			}
			return resourceError("saving the object", syncErr)
		case insErr == nil:
			ar.queueAfter(afterStore{key: key, uid: in.SOPInstanceUID, ts: in.TransferSyntaxUID})
			return nil
		case !errors.Is(insErr, store.ErrInstanceExists):
			_ = ar.Blobs.Delete(ctx, key)
			return resourceError("committing the index", insErr)
		}
		// Stored already, by a store that passed the check above at the
		// same time: the policy decides (replace: below).
		if ar.OnDuplicate != DuplicateReplace {
			_ = ar.Blobs.Delete(ctx, key)
			return ar.storedMeanwhile(ctx, in.SOPInstanceUID, out)
		}
	} else {
		if err := bw.Commit(); err != nil {
			return resourceError("saving the object", err)
		}
		committed = true
		if ins != nil && ar.OnDuplicate != DuplicateReplace {
			// Keep and reject insert, so that of two stores of one SOP
			// Instance UID at once only one is indexed. (Without an
			// Inserter, Put replaces: a backend for several writers has
			// one.)
			switch err := ins.Insert(ctx, in); {
			case err == nil:
				ar.queueAfter(afterStore{key: key, uid: in.SOPInstanceUID, ts: in.TransferSyntaxUID})
				return nil
			case errors.Is(err, store.ErrInstanceExists):
				_ = ar.Blobs.Delete(ctx, key)
				return ar.storedMeanwhile(ctx, in.SOPInstanceUID, out)
			default:
				_ = ar.Blobs.Delete(ctx, key)
				return resourceError("committing the index", err)
			}
		}
	}
	res, err := put(ctx, in)
	if err != nil {
		// The blob stays pending; Recover removes it since no row names it.
		_ = ar.Blobs.Delete(ctx, key)
		return resourceError("committing the index", err)
	}
	job := afterStore{key: key, uid: in.SOPInstanceUID, ts: in.TransferSyntaxUID}
	if res.Replaced {
		job.oldKey = res.OldBlobKey
		out.Replaced = true
	}
	ar.queueAfter(job)
	return nil
}

// duplicate answers a store of an object the index holds already (in)
// under the keep or reject policy: reject refuses it; keep acknowledges
// it and tells of the stored object.
func (ar *Archive) duplicate(in *store.Instance, out *Stored) error {
	if ar.OnDuplicate == DuplicateReject {
		return Fail(ErrDuplicate, "SOP instance already stored")
	}
	// Kept: the stored object is the one the requestor is told of.
	out.StudyInstanceUID, out.PatientID, out.SeriesInstanceUID = in.StudyInstanceUID, in.PatientID, in.SeriesInstanceUID
	return nil
}

// storedMeanwhile is duplicate for an object another store indexed after
// this one's check and before its Insert.
func (ar *Archive) storedMeanwhile(ctx context.Context, uid string, out *Stored) error {
	if ar.OnDuplicate == DuplicateReject {
		return ar.duplicate(nil, out)
	}
	in, err := ar.Index.Get(ctx, uid)
	if errors.Is(err, store.ErrNotFound) {
		// Kept, yet deleted again since: nothing to tell of, nothing
		// stored; a retry stores it.
		return &Error{Kind: ErrStorage, Comment: "the object was stored and deleted meanwhile: send it again", Err: err}
	}
	if err != nil {
		return resourceError("reading the index", err)
	}
	return ar.duplicate(in, out)
}

// deferredInserter is a DeferredSyncer's InsertDeferred as an Inserter.
type deferredInserter struct{ ds store.DeferredSyncer }

func (d deferredInserter) Insert(ctx context.Context, in *store.Instance) error {
	return d.ds.InsertDeferred(ctx, in)
}

// deferrable returns the index as a DeferredSyncer when the blob took the
// intent record that lets Open replay the row, else nil. A blob store that
// cannot keep intent records at all is remembered (rows are then synced
// before responses); any other failure (a full disk) fails the store.
func (ar *Archive) deferrable(bw store.BlobWriter, in *store.Instance) (store.DeferredSyncer, error) {
	ds := ar.capabilities().DeferredSyncer
	if ds == nil || ar.noIntents.Load() {
		return nil, nil
	}
	iw, ok := bw.(store.IntentWriter)
	if !ok {
		return nil, nil
	}
	err := iw.SetIntent(encodeIntent(in))
	switch {
	case err == nil:
		return ds, nil
	case errors.Is(err, errors.ErrUnsupported):
		if !ar.noIntents.Swap(true) {
			ar.Logger.Warn("the blob store keeps no intent records (extended attributes): each C-STORE now waits for its index row to be synced", "err", err)
		}
		return nil, nil
	default:
		return nil, err
	}
}

// nameDurable reports whether a blob's name survives a crash already.
func nameDurable(w store.BlobWriter) bool {
	d, ok := w.(store.DurableNamer)
	return ok && d.NameDurable()
}

// queueAfter hands the work that follows a response to the after loop.
func (ar *Archive) queueAfter(job afterStore) {
	select {
	case ar.after <- job:
	default:
		ar.finish(job) // queue full: do it now rather than grow
	}
}

// teeReader is io.TeeReader that keeps the write error apart, so that a
// full disk is told from a malformed data set.
type teeReader struct {
	r    io.Reader
	w    io.Writer
	werr error
}

func (t *teeReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 && t.werr == nil {
		if _, werr := t.w.Write(p[:n]); werr != nil {
			t.werr = werr
			return n, werr
		}
	}
	return n, err
}

// resourceError is a storage failure (ErrNoSpace for a full disk or quota,
// ErrUnavailable for store.ErrUnavailable, else ErrStorage) with a
// comment that fits an Error Comment (64 characters): the cause first, and
// for store.ErrUnavailable that it may pass, then what failed in
// brackets (a step, named the same for every backend: no "disk" for S3).
// No patient data is in it.
func resourceError(what string, err error) error {
	cause := ""
	switch {
	case errors.Is(err, syscall.ENOSPC):
		cause = "no space left on device"
	case errors.Is(err, syscall.EDQUOT):
		cause = "disk quota exceeded"
	case errors.Is(err, fs.ErrPermission):
		cause = "permission denied"
	case errors.Is(err, syscall.EIO):
		cause = "I/O error"
	case errors.Is(err, store.ErrUnavailable):
		cause = "store unavailable, try again later"
	}
	comment := what + " failed"
	if cause != "" {
		comment = cause + " (" + what + ")"
	}
	kind := ErrStorage
	switch {
	case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT):
		kind = ErrNoSpace
	case errors.Is(err, store.ErrUnavailable):
		kind = ErrUnavailable
	}
	return &Error{Kind: kind, Comment: comment, Err: err}
}

// receipt is what the index records of a C-STORE besides the data set.
type receipt struct {
	sopClass, sopInstance, transferSyntax string
	study                                 string // expected Study Instance UID, "" for any
	aet, addr                             string
	at                                    time.Time
}

// uidKeys are the data set's UIDs the index keys on.
var uidKeys = []dicom.Tag{dicom.SOPClassUID, dicom.SOPInstanceUID, dicom.StudyInstanceUID, dicom.SeriesInstanceUID}

// warnUIDs logs, without the values, the UIDs of a stored object that
// break PS3.5 9.1 in the one way Ward tolerates (a leading zero).
func (ar *Archive) warnUIDs(r *StoreRequest, in *store.Instance) {
	for _, u := range []struct {
		tag dicom.Tag
		v   string
	}{{dicom.SOPClassUID, in.SOPClassUID}, {dicom.SOPInstanceUID, in.SOPInstanceUID}, {dicom.StudyInstanceUID, in.StudyInstanceUID}, {dicom.SeriesInstanceUID, in.SeriesInstanceUID}} {
		if !dicom.ValidUID(u.v) {
			ar.Logger.Warn("stored an object whose UID has a component with a leading zero (not PS3.5 9.1 conformant, accepted as received)", "assoc", r.Origin.Conn, "attribute", dicom.Keyword(u.tag))
		}
	}
}

// instanceFrom builds the index row and checks the data set agrees with
// the command.
func instanceFrom(a *dicom.Attrs, r receipt) (*store.Instance, error) {
	s := a.String
	for _, c := range []struct {
		tag  dicom.Tag
		want string
	}{{dicom.SOPInstanceUID, r.sopInstance}, {dicom.SOPClassUID, r.sopClass}} {
		got := s(c.tag)
		if got == "" {
			return nil, attrError(ErrAttributeMismatch, c.tag, "the data set has no "+dicom.Keyword(c.tag))
		}
		if got != c.want {
			return nil, attrError(ErrAttributeMismatch, c.tag, dicom.Keyword(c.tag)+" in the data set differs from the C-STORE request")
		}
	}
	for _, t := range []dicom.Tag{dicom.StudyInstanceUID, dicom.SeriesInstanceUID} {
		if s(t) == "" {
			return nil, attrError(ErrAttributeMismatch, t, "the data set has no "+dicom.Keyword(t))
		}
	}
	if r.study != "" && s(dicom.StudyInstanceUID) != r.study {
		return nil, attrError(ErrAttributeMismatch, dicom.StudyInstanceUID, "StudyInstanceUID differs from the study the request named")
	}
	// The UIDs Ward keys on, as in the data set. The SOP Instance UID is
	// the command's, which the dispatcher checked; it is checked again so
	// that no caller can put a bad one in the index.
	for _, t := range uidKeys {
		if p := dicom.UIDProblem(s(t)); p != "" {
			return nil, attrError(ErrInvalidAttribute, t, dicom.Keyword(t)+" "+p+" (PS3.5 9.1)")
		}
	}
	in := &store.Instance{
		SOPInstanceUID:                  r.sopInstance,
		SOPClassUID:                     r.sopClass,
		TransferSyntaxUID:               r.transferSyntax,
		InstanceNumber:                  s(dicom.InstanceNumber),
		ContentDate:                     s(dicom.ContentDate),
		ContentTime:                     s(dicom.ContentTime),
		NumberOfFrames:                  s(dicom.NumberOfFrames),
		SeriesInstanceUID:               s(dicom.SeriesInstanceUID),
		Modality:                        s(dicom.Modality),
		SeriesNumber:                    s(dicom.SeriesNumber),
		SeriesDescription:               s(dicom.SeriesDescription),
		SeriesDate:                      s(dicom.SeriesDate),
		SeriesTime:                      s(dicom.SeriesTime),
		BodyPartExamined:                s(dicom.BodyPartExamined),
		PerformedProcedureStepStartDate: s(dicom.PerformedProcedureStepStartDate),
		StudyInstanceUID:                s(dicom.StudyInstanceUID),
		StudyDate:                       s(dicom.StudyDate),
		StudyTime:                       s(dicom.StudyTime),
		AccessionNumber:                 s(dicom.AccessionNumber),
		StudyID:                         s(dicom.StudyID),
		StudyDescription:                s(dicom.StudyDescription),
		ReferringPhysicianName:          s(dicom.ReferringPhysicianName),
		PatientID:                       s(dicom.PatientID),
		IssuerOfPatientID:               s(dicom.IssuerOfPatientID),
		PatientName:                     s(dicom.PatientName),
		PatientBirthDate:                s(dicom.PatientBirthDate),
		PatientSex:                      s(dicom.PatientSex),
		SpecificCharacterSet:            strings.Join(a.Charset(), `\`),
		CharsetUnsupported:              a.CharsetUnsupported(),
		SourceAET:                       r.aet,
		SourceAddr:                      r.addr,
		ReceivedAt:                      r.at,
	}
	if v, ok := a.Int(dicom.Rows); ok {
		in.Rows = v
	}
	if v, ok := a.Int(dicom.Columns); ok {
		in.Columns = v
	}
	return in, nil
}
