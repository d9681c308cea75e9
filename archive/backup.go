package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"time"

	"github.com/ward-pacs/ward/store"
)

// A backup is a snapshot of the index (store.Snapshotter) and a copy of
// every object it names. Objects are immutable under their keys, so a
// backup into the folder of an earlier one copies only the objects stored
// since. For the copy to be complete, no object the snapshot names may go
// while it runs: HoldDeletes keeps the objects of deleted and replaced
// instances (recorded for deletion in the index) until the backup ends.

// HoldDeletes stops blob deletion until release is called; then the blobs
// recorded for deletion meanwhile are deleted. Holds nest. Where the index
// is a store.DeleteHolder, the hold is recorded there, for ar.Node, so that
// every node sharing the index keeps its blobs too; it lapses after
// HoldTTL unless renewed, which is done every HoldTTL/3 until release (a
// node that dies holding one holds deletion no longer than that, and its
// restart drops it at once). Otherwise it is kept in memory (one node).
func (ar *Archive) HoldDeletes(ctx context.Context) (release func(context.Context) error, err error) {
	ar.holdMu.Lock()
	ar.holds++
	ar.holdMu.Unlock()
	var (
		id   int64
		stop = make(chan struct{})
		wg   sync.WaitGroup
	)
	dh := ar.capabilities().DeleteHolder
	if dh != nil {
		if id, err = dh.HoldDeletes(ctx, ar.node(), HoldTTL); err != nil {
			ar.holdMu.Lock()
			ar.holds--
			ar.holdMu.Unlock()
			return nil, fmt.Errorf("holding deletions: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(HoldTTL / 3)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if err := dh.RenewHold(context.WithoutCancel(ctx), id, HoldTTL); err != nil {
						ar.Logger.Warn("renewing a hold on deletions failed", "err", err)
					}
				}
			}
		}()
	}
	var once sync.Once
	return func(ctx context.Context) error {
		var err error
		once.Do(func() {
			if dh != nil {
				close(stop)
				wg.Wait()
				err = dh.ReleaseHold(ctx, id)
			}
			ar.holdMu.Lock()
			ar.holds--
			ar.holdMu.Unlock()
		})
		if err != nil {
			return fmt.Errorf("releasing a hold on deletions: %w", err)
		}
		if err := ar.deletePending(ctx); err != nil && !errors.Is(err, errDeletesHeld) {
			return err
		}
		return nil
	}, nil
}

// HoldTTL is how long a hold on deletions recorded in the index lasts
// without renewal.
const HoldTTL = 10 * time.Minute

// BackupReport counts what CopyObjects and SettleObjects did.
type BackupReport struct {
	// Instances the snapshot names.
	Instances int64 `json:"instances"`
	// Copied objects and their bytes; the others were in the backup
	// already, with the same size.
	Copied int64 `json:"copied"`
	Bytes  int64 `json:"bytes"`
	// Removed: objects of an earlier backup that the new index no longer
	// names, and copies an interrupted run left that it does not name.
	Removed int64 `json:"removed"`
	// Problems: objects that could not be copied, or whose bytes did not
	// match the checksum recorded when they were stored (copied still).
	Problems int64 `json:"problems"`

	// records are the keys of the blobs wrapper's own records
	// (store.StoredCopier) copied, which SettleObjects keeps.
	records map[string]bool
}

// CopyOptions says how CopyObjects reports and how fast it reads.
type CopyOptions struct {
	// Problem is called for each object that could not be copied as
	// recorded; Copied (when set) for each object copied.
	Problem func(VerifyProblem)
	Copied  func(*store.Instance)
	// Found (when set) is called for each object dst had already, whole,
	// and that was not copied again.
	Found func(*store.Instance)
	// MaxRate caps the average copying rate in bytes per second (0: none);
	// Progress (when set) is called at most every ProgressEvery (default
	// a minute) with the counts so far.
	MaxRate       int64
	Progress      func(BackupReport)
	ProgressEvery time.Duration
}

// CopyObjects copies into dst every object snap names that dst lacks,
// checking each copy against the size and checksum of its row. snap must
// be a store.InstanceWalker (a snapshot of ar's index, taken while
// HoldDeletes holds).
func (ar *Archive) CopyObjects(ctx context.Context, snap store.Index, dst store.Blobs, rep *BackupReport, o CopyOptions) error {
	w := store.Resolve(snap, nil).InstanceWalker
	if w == nil {
		return errors.New("the index snapshot cannot list its instances")
	}
	stored, _ := ar.Blobs.(store.StoredCopier)
	if stored != nil {
		// Objects are copied as stored (encrypted), with the wrapper's
		// records that a restore needs (the key checks, the key records).
		if err := copyRecords(ctx, stored, dst, rep); err != nil {
			return err
		}
	}
	p := newPacer(o.MaxRate, o.ProgressEvery)
	return w.WalkInstances(ctx, func(in *store.Instance) error {
		// A stop of ward serve ends it here: the previous backup stays.
		if p.progress() && o.Progress != nil {
			o.Progress(*rep)
		}
		if err := p.wait(ctx, rep.Bytes); err != nil {
			return err
		}
		rep.Instances++
		if have, err := dst.Open(ctx, in.BlobKey); err == nil {
			n, err := sizeOf(have)
			if err == nil && stored != nil {
				// A copy as stored (encrypted): the size it stands for.
				have.Close()
				if have, err = dst.Open(ctx, in.BlobKey); err == nil {
					n, err = stored.PlainSize(have, n)
				}
			}
			if have != nil {
				have.Close()
			}
			if err == nil && n == in.Size {
				if o.Found != nil {
					o.Found(in)
				}
				return nil
			}
			// A partial or damaged copy of an earlier run: copy it again.
			if err := dst.Delete(ctx, in.BlobKey); err != nil {
				return err
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		n, msg, err := ar.copyObject(ctx, in, dst)
		if err != nil {
			return err
		}
		if msg != "" {
			rep.Problems++
			if o.Problem != nil {
				o.Problem(VerifyProblem{SOPInstanceUID: in.SOPInstanceUID, StudyInstanceUID: in.StudyInstanceUID, BlobKey: in.BlobKey, Problem: msg})
			}
		}
		if n < 0 {
			return nil // not copied
		}
		rep.Copied++
		rep.Bytes += n
		if o.Copied != nil {
			o.Copied(in)
		}
		return nil
	})
}

// sizeOf is the size of an opened blob: from its file's metadata where it
// is a file, else by reading it.
func sizeOf(rc io.ReadCloser) (int64, error) {
	if st, ok := rc.(interface{ Stat() (fs.FileInfo, error) }); ok {
		fi, err := st.Stat()
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	return io.Copy(io.Discard, rc)
}

// copyObject copies one object into dst and returns the bytes copied (-1
// when it copied nothing), what is wrong with the object ("" when
// nothing), or an error of dst, which ends the backup.
func (ar *Archive) copyObject(ctx context.Context, in *store.Instance, dst store.Blobs) (int64, string, error) {
	// What the object stands for is checked against the row: the bytes
	// copied, or (copied as stored by a wrapper) the bytes they decrypt to.
	plain := &countingWriter{w: io.Discard}
	var (
		rc  io.ReadCloser
		err error
	)
	sc, stored := ar.Blobs.(store.StoredCopier)
	if stored {
		rc, err = sc.OpenStored(ctx, in.BlobKey, plain)
	} else {
		rc, err = ar.Blobs.Open(ctx, in.BlobKey)
	}
	if errors.Is(err, store.ErrNotFound) {
		return -1, "the stored object is missing: not in the backup", nil
	}
	if err != nil {
		return -1, fmt.Sprintf("the stored object cannot be opened: %v; not in the backup", err), nil
	}
	defer rc.Close()
	bw, err := dst.Create(ctx, in.BlobKey)
	if err != nil {
		return -1, "", fmt.Errorf("backup: %w", err)
	}
	c := &countingWriter{w: markWrites{bw}}
	if _, err := io.Copy(c, rc); err != nil {
		bw.Abort()
		var we *writeError
		if errors.As(err, &we) {
			return -1, "", fmt.Errorf("backup: %w", we.err)
		}
		return -1, fmt.Sprintf("reading the stored object failed after %d bytes: %v; not in the backup", c.n, err), nil
	}
	// Committed, not published: until the new index replaces the old,
	// the copy is pending, which a data directory's recovery removes if no
	// index row names it (SettleObjects publishes it).
	if err := bw.Commit(); err != nil {
		return -1, "", fmt.Errorf("backup: %w", err)
	}
	got := c
	if stored {
		got = plain
	}
	switch {
	case got.n != in.Size:
		return c.n, fmt.Sprintf("%d bytes, the index recorded %d (copied as found)", got.n, in.Size), nil
	case in.Checksum != "" && got.checksum() != in.Checksum:
		return c.n, fmt.Sprintf("checksum %s, the index recorded %s (copied as found)", got.checksum(), in.Checksum), nil
	}
	return c.n, "", nil
}

// copyRecords copies into dst (published) each record of the blobs
// wrapper that dst lacks, and notes them all in rep for SettleObjects.
func copyRecords(ctx context.Context, sc store.StoredCopier, dst store.Blobs, rep *BackupReport) error {
	rep.records = map[string]bool{}
	return sc.Records(ctx, func(key string) error {
		rep.records[key] = true
		if have, err := dst.Open(ctx, key); err == nil {
			have.Close()
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		rc, err := sc.OpenStored(ctx, key, nil)
		if errors.Is(err, store.ErrNotFound) {
			delete(rep.records, key)
			return nil
		}
		if err != nil {
			return err
		}
		defer rc.Close()
		bw, err := dst.Create(ctx, key)
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		if _, err := io.Copy(bw, rc); err != nil {
			bw.Abort()
			return fmt.Errorf("backup: %w", err)
		}
		if err := bw.Commit(); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		return dst.Publish(ctx, key)
	})
}

// writeError marks a failed write into the backup (as opposed to a failed
// read of the archive's object) when it comes back through io.Copy.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }

type markWrites struct{ w io.Writer }

func (m markWrites) Write(p []byte) (int, error) {
	n, err := m.w.Write(p)
	if err != nil {
		err = &writeError{err}
	}
	return n, err
}

// SettleObjects brings dst in line with idx, the backup's new index:
// objects idx names that are still pending (copied by this run or an
// interrupted one) are published, and the objects it does not name
// (those of instances deleted or replaced since the previous backup, and
// copies an interrupted run left) are removed.
func SettleObjects(ctx context.Context, idx store.Index, dst store.Blobs, rep *BackupReport) error {
	dstCaps := store.Resolve(nil, dst)
	bw := dstCaps.BlobWalker
	if bw == nil {
		return errors.New("the backup's blob store cannot list its objects")
	}
	var gone, publish []string
	err := bw.WalkBlobs(ctx, func(key string, published bool) error {
		if rep.records[key] {
			return nil
		}
		has, err := idx.HasBlob(ctx, key)
		switch {
		case err != nil:
			return err
		case !has:
			gone = append(gone, key)
		case !published:
			publish = append(publish, key)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if bp := dstCaps.BatchPublisher; bp != nil && len(publish) > 0 {
		if err := bp.PublishAll(ctx, publish); err != nil {
			return err
		}
	} else {
		for _, key := range publish {
			if err := dst.Publish(ctx, key); err != nil {
				return err
			}
		}
	}
	for _, key := range gone {
		if err := dst.Delete(ctx, key); err != nil {
			return err
		}
		rep.Removed++
	}
	return nil
}
