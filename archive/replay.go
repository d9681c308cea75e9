package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store"
)

// An intent record is what a blob carries so that Open can rebuild its
// index row should a crash lose it: what the Part 10 file does not hold
// (address and time of receipt) and what proves the bytes whole (size and
// CRC-32C). It is short text, so that it fits in an ext4 inode:
//
//	1 <size> <crc32c, 8 hex digits> <receipt, Unix ns> <address>
type intent struct {
	size     int64
	checksum string // as store.Instance.Checksum
	at       time.Time
	addr     string
}

const intentVersion = "1"

func encodeIntent(in *store.Instance) []byte {
	return fmt.Appendf(nil, "%s %d %s %d %s", intentVersion, in.Size,
		strings.TrimPrefix(in.Checksum, "crc32c:"), in.ReceivedAt.UnixNano(), in.SourceAddr)
}

func decodeIntent(b []byte) (intent, error) {
	f := strings.SplitN(string(b), " ", 5)
	if len(f) != 5 || f[0] != intentVersion {
		return intent{}, errors.New("not a version 1 intent record")
	}
	size, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || size < 0 {
		return intent{}, fmt.Errorf("intent record: bad size %q", f[1])
	}
	if _, err := strconv.ParseUint(f[2], 16, 32); err != nil || len(f[2]) != 8 {
		return intent{}, fmt.Errorf("intent record: bad checksum %q", f[2])
	}
	ns, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return intent{}, fmt.Errorf("intent record: bad time %q", f[3])
	}
	return intent{size: size, checksum: "crc32c:" + f[2], at: time.Unix(0, ns).UTC(), addr: f[4]}, nil
}

// replayBlob decides on a pending blob no index row names: a stored
// object whose row a crash lost (its intent record is there and its bytes
// match it) gets its row again and is kept; anything else (a slot, an
// object never acknowledged, one replaced by a newer copy) is not.
func (ar *Archive) replayBlob(ctx context.Context, key string) (bool, error) {
	ir := ar.capabilities().IntentReader
	if ir == nil {
		return false, nil
	}
	b, err := ir.Intent(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	rec, err := decodeIntent(b)
	if err != nil {
		ar.Logger.Warn("recovery: a pending object has an unreadable intent record; removed", "blob", key, "err", err)
		return false, nil
	}
	in, err := ar.reindex(ctx, key, rec)
	if ue := (*unreadError)(nil); errors.As(err, &ue) {
		// Not read now (an object store away, an I/O error): that says
		// nothing of the bytes; the start fails and is tried again.
		return false, fmt.Errorf("reading a recovered object: %w", ue.err)
	}
	if err != nil {
		ar.Logger.Warn("recovery: a pending object does not match its intent record (it was never acknowledged); removed", "blob", key, "err", err)
		return false, nil
	}
	old, err := ar.Index.Get(ctx, in.SOPInstanceUID)
	switch {
	case err == nil && !old.ReceivedAt.Before(in.ReceivedAt):
		return false, nil // a copy received later is indexed
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return false, err
	}
	if _, err := ar.Index.Put(ctx, in); err != nil {
		return false, err
	}
	ar.Logger.Info("recovery: an index row lost in a crash was restored from its stored object", "blob", key)
	return true, nil
}

// unreadError is a blob that could not be read (as opposed to bytes
// read that are wrong).
type unreadError struct{ err error }

func (e *unreadError) Error() string { return e.err.Error() }

// readErrors remembers the first error of its reader other than EOF.
type readErrors struct {
	r   io.Reader
	err error
}

func (e *readErrors) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// reindex reads a blob back into the index row it was stored with,
// checking its bytes against the intent record. A blob it cannot read is
// an *unreadError.
func (ar *Archive) reindex(ctx context.Context, key string, rec intent) (in *store.Instance, err error) {
	rc, err := ar.Blobs.Open(ctx, key)
	if err != nil {
		return nil, &unreadError{err}
	}
	defer rc.Close()
	re := &readErrors{r: rc}
	defer func() {
		if re.err != nil {
			in, err = nil, &unreadError{re.err}
		}
	}()
	cw := &countingWriter{w: io.Discard}
	meta, br, err := dicom.ReadFileHeader(io.TeeReader(re, cw), 1<<20)
	if err != nil {
		return nil, err
	}
	ts := dicom.LookupTransferSyntax(meta.TransferSyntaxUID)
	if ts == nil || meta.NoMeta {
		return nil, errors.New("no Part 10 header with a known transfer syntax")
	}
	var keep *dicom.KeepSequences
	if ar.seqs != nil {
		keep = ar.seqs.keep
	}
	attrs, scanErr := dicom.ScanWith(br, ts, wanted, ar.MaxIndexedValue, keep)
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, err
	}
	if cw.n != rec.size || cw.checksum() != rec.checksum {
		return nil, fmt.Errorf("%d bytes with %s, intent says %d with %s", cw.n, cw.checksum(), rec.size, rec.checksum)
	}
	if scanErr != nil {
		return nil, scanErr
	}
	in, err = instanceFrom(attrs, receipt{
		sopClass: meta.MediaStorageSOPClassUID, sopInstance: meta.MediaStorageSOPInstanceUID,
		transferSyntax: meta.TransferSyntaxUID, aet: meta.SourceApplicationEntityTitle,
		addr: rec.addr, at: rec.at,
	})
	if err != nil {
		return nil, err
	}
	in.Sequences = ar.seqs.items(attrs)
	in.BlobKey, in.Size, in.Checksum = key, rec.size, rec.checksum
	return in, nil
}
