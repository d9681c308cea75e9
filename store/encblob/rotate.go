package encblob

import (
	"context"
	"errors"
	"fmt"

	"github.com/ward-pacs/ward/store"
)

// Key rotation. Object keys are write-once (a file renamed into place, an
// S3 key written with If-None-Match), so an object's header is never
// rewritten: Rotate writes, for each object whose header names a KEK
// other than the current one, a key record (a small blob of the
// wrapper's own, "_enc.<hash of the key>.<KEK ID>") holding the object's
// data key wrapped by the current KEK. The object's bytes are not
// touched. Once every object has one, the old KEK can leave the key
// file: Open then unwraps through the record. Rotate skips objects done
// already, so an interrupted run is resumed by running it again; records
// under other KEKs that the current one's record supersedes are removed.

// RotateReport counts what Rotate did.
type RotateReport struct {
	// Objects seen.
	Objects int64 `json:"objects"`
	// Rewrapped: key records written under the current KEK.
	Rewrapped int64 `json:"rewrapped"`
	// Done: objects under the current KEK already (header or record).
	Done int64 `json:"done"`
	// Failed: objects whose data key could not be unwrapped (each
	// reported to the problem function).
	Failed int64 `json:"failed"`
}

// Rotate re-wraps every object's data key under the current KEK (see
// above). problem, when set, is told about each object that fails;
// progress, when set, is called after each object.
func (b *Blobs) Rotate(ctx context.Context, problem func(key string, err error), progress func(RotateReport)) (RotateReport, error) {
	var rep RotateReport
	cur := b.ring.Current()
	err := b.WalkBlobs(ctx, func(key string, _ bool) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		rep.Objects++
		done, err := b.rotateOne(ctx, key, cur)
		switch {
		case err != nil && errors.Is(err, store.ErrNotFound):
			rep.Objects-- // deleted meanwhile
		case err != nil && (errors.Is(err, ErrCorrupt) || errors.Is(err, ErrKey) || errors.Is(err, ErrNotEncrypted)):
			rep.Failed++
			if problem != nil {
				problem(key, err)
			}
		case err != nil:
			return err
		case done:
			rep.Done++
		default:
			rep.Rewrapped++
		}
		if progress != nil {
			progress(rep)
		}
		return nil
	})
	return rep, err
}

// rotateOne re-wraps one object's data key; done is true when it was
// under the current KEK already.
func (b *Blobs) rotateOne(ctx context.Context, key, cur string) (done bool, err error) {
	rc, err := b.inner.Open(ctx, key)
	if err != nil {
		return false, err
	}
	h, err := readHeader(rc)
	rc.Close()
	if err != nil {
		return false, fmt.Errorf("encblob: %s: %w", key, err)
	}
	if h.kekID == cur {
		return true, nil
	}
	rk := recordKey(key, cur)
	if _, err := b.readRecord(ctx, rk); err == nil {
		done = true
	} else if !errors.Is(err, store.ErrNotFound) {
		return false, err
	} else {
		dek, err := b.dataKey(ctx, key, h)
		if err != nil {
			return false, err
		}
		wrap, err := wrapKey(b.ring.key(cur), dek, wrapAAD(h.raw[:fixedLen], cur, key))
		if err != nil {
			return false, err
		}
		if err := b.putRecord(ctx, rk, keyRecord(cur, wrap)); err != nil && !errors.Is(err, store.ErrExists) {
			return false, fmt.Errorf("encblob: writing the key record of %s: %w", key, err)
		}
	}
	// Records under older KEKs are superseded.
	for _, id := range b.ring.IDs() {
		if id != cur {
			if err := b.inner.Delete(ctx, recordKey(key, id)); err != nil {
				return done, err
			}
		}
	}
	return done, nil
}
