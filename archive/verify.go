package archive

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store"
)

// VerifyProblem is one stored instance that is not as its index row says.
type VerifyProblem struct {
	SOPInstanceUID   string `json:"sop_instance_uid"`
	StudyInstanceUID string `json:"study_instance_uid"`
	BlobKey          string `json:"blob_key"`
	// Problem says what is wrong, without patient data.
	Problem string `json:"problem"`
}

// VerifyOptions says what Verify reads, and how fast.
type VerifyOptions struct {
	// Studies to verify; none: every study, and stored objects no index
	// row names.
	Studies []string
	// MaxRate caps the average reading rate, in bytes per second (0: as
	// fast as the disk goes), so that a verification of a serving archive
	// leaves the disk to the modalities and viewers.
	MaxRate int64
	// Progress, when set, is called with the counts so far at most once
	// every ProgressEvery (default a minute), for a long verification.
	Progress      func(VerifyReport)
	ProgressEvery time.Duration
}

// VerifyReport counts what Verify read.
type VerifyReport struct {
	Instances int64 `json:"instances"`
	Bytes     int64 `json:"bytes"`
	Problems  int64 `json:"problems"`
	// NoChecksum counts instances indexed without a checksum (stored by an
	// older Ward): their size and header were checked, not their bytes.
	NoChecksum int64 `json:"no_checksum"`
	// Unreferenced counts stored objects no index row names (also counted
	// in Problems). Only a verification of every study looks for them.
	Unreferenced int64 `json:"unreferenced"`
}

// Verify reads every stored object (or those of the given studies) and
// checks it against its index row: the object is there, its size and
// CRC-32C are those recorded when it was stored, it is a Part 10 file with
// a zeroed preamble whose meta header names the row's SOP Instance UID,
// SOP Class UID and transfer syntax. Verifying every study also looks for
// stored objects that no index row names (where the blob store can list
// its objects), which no query, retrieval or deletion reaches. It calls
// problem for each instance or object that fails a check and returns the
// counts; an error only when the walk itself fails.
func (ar *Archive) Verify(ctx context.Context, o VerifyOptions, problem func(VerifyProblem)) (VerifyReport, error) {
	var rep VerifyReport
	studies := o.Studies
	p := newPacer(o.MaxRate, o.ProgressEvery)
	check := func(in *store.Instance) error {
		if p.progress() && o.Progress != nil {
			o.Progress(rep)
		}
		if err := p.wait(ctx, rep.Bytes); err != nil {
			return err
		}
		in, n, msg := ar.verifyRow(ctx, in)
		rep.Bytes += n
		if in == nil {
			return nil // deleted meanwhile
		}
		rep.Instances++
		if in.Checksum == "" {
			rep.NoChecksum++
		}
		if msg != "" {
			rep.Problems++
			problem(VerifyProblem{SOPInstanceUID: in.SOPInstanceUID, StudyInstanceUID: in.StudyInstanceUID, BlobKey: in.BlobKey, Problem: msg})
		}
		return nil
	}
	if len(studies) == 0 {
		w := ar.capabilities().InstanceWalker
		if w == nil {
			return rep, errors.New("the index backend cannot list every instance: name the studies to verify")
		}
		if err := w.WalkInstances(ctx, check); err != nil {
			return rep, err
		}
		return rep, ar.unreferenced(ctx, &rep, problem)
	}
	for _, uid := range studies {
		insts, err := ar.studyInstances(ctx, uid)
		if err != nil {
			return rep, err
		}
		for i := range insts {
			// studyInstances lists no checksum: read the row itself.
			in, err := ar.Index.Get(ctx, insts[i].SOPInstanceUID)
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return rep, err
			}
			if err := check(in); err != nil {
				return rep, err
			}
		}
	}
	return rep, nil
}

// pacer holds a long read of the archive to an average rate, and says
// when to report progress.
type pacer struct {
	rate                int64 // bytes per second; 0: no cap
	every               time.Duration
	start, lastProgress time.Time
}

func newPacer(rate int64, every time.Duration) *pacer {
	if every <= 0 {
		every = time.Minute
	}
	now := time.Now()
	return &pacer{rate: rate, every: every, start: now, lastProgress: now}
}

// wait returns once done bytes are within the rate, or when ctx ends.
func (p *pacer) wait(ctx context.Context, done int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if p.rate <= 0 {
		return nil
	}
	ahead := time.Duration(float64(done)/float64(p.rate)*float64(time.Second)) - time.Since(p.start)
	if ahead <= 0 {
		return nil
	}
	t := time.NewTimer(ahead)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// progress reports whether a progress report is due (and resets the
// clock when it is).
func (p *pacer) progress() bool {
	if time.Since(p.lastProgress) < p.every {
		return false
	}
	p.lastProgress = time.Now()
	return true
}

// maxUnreferenced bounds the unreferenced objects one verification
// reports (and holds in memory).
const maxUnreferenced = 100000

// unreferenced reports the published objects no index row names. An
// object seen unreferenced is checked again at the end, so that one being
// deleted (its row gone, the object about to follow) is not reported.
func (ar *Archive) unreferenced(ctx context.Context, rep *VerifyReport, problem func(VerifyProblem)) error {
	bw := ar.capabilities().BlobWalker
	if bw == nil {
		return nil
	}
	var keys []string
	err := bw.WalkBlobs(ctx, func(key string, published bool) error {
		if !published || len(keys) >= maxUnreferenced {
			return nil
		}
		has, err := ar.Index.HasBlob(ctx, key)
		if err == nil && !has {
			keys = append(keys, key)
		}
		return err
	})
	if err != nil || len(keys) == 0 {
		return err
	}
	pending, err := ar.Index.PendingBlobDeletes(ctx, maxUnreferenced)
	if err != nil {
		return err
	}
	deleting := map[string]bool{}
	for _, k := range pending {
		deleting[k] = true
	}
	for _, key := range keys {
		if deleting[key] {
			continue
		}
		if has, err := ar.Index.HasBlob(ctx, key); err != nil || has {
			if err != nil {
				return err
			}
			continue
		}
		rc, err := ar.Blobs.Open(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err == nil {
			rc.Close()
		}
		rep.Unreferenced++
		rep.Problems++
		problem(VerifyProblem{BlobKey: key, Problem: "a stored object no index row names: no query, retrieval or deletion reaches it"})
	}
	return nil
}

// verifyRow verifies the object of an index row read a moment ago. When
// it fails, the row is read again: an instance replaced meanwhile (a new
// object, the old one deleted) is verified as it is now, and one deleted
// meanwhile is skipped (nil). It returns the row verified, the bytes read
// and what is wrong ("" when nothing).
func (ar *Archive) verifyRow(ctx context.Context, in *store.Instance) (*store.Instance, int64, string) {
	n, msg := ar.verifyOne(ctx, in)
	if msg == "" {
		return in, n, ""
	}
	cur, err := ar.Index.Get(ctx, in.SOPInstanceUID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, n, ""
	case err != nil || cur.BlobKey == in.BlobKey:
		return in, n, msg
	}
	m, msg := ar.verifyOne(ctx, cur)
	return cur, n + m, msg
}

// verifyOne reads one object and says what is wrong with it ("" when
// nothing), and how many bytes it read.
func (ar *Archive) verifyOne(ctx context.Context, in *store.Instance) (int64, string) {
	rc, err := ar.Blobs.Open(ctx, in.BlobKey)
	if errors.Is(err, store.ErrNotFound) {
		return 0, "the stored object is missing"
	}
	if err != nil {
		return 0, fmt.Sprintf("the stored object cannot be opened: %v", err)
	}
	defer rc.Close()
	c := &countingWriter{w: io.Discard}
	br := bufio.NewReaderSize(io.TeeReader(rc, c), 64<<10)
	var msgs []string
	for _, u := range []struct{ name, v string }{{"SOP Class UID", in.SOPClassUID}, {"SOP Instance UID", in.SOPInstanceUID}, {"Study Instance UID", in.StudyInstanceUID}, {"Series Instance UID", in.SeriesInstanceUID}} {
		if u.v != "" && !dicom.StorableUID(u.v) { // "": not in the row read
			msgs = append(msgs, "the index holds a "+u.name+" that Ward now refuses (PS3.5 9.1)")
		}
	}
	if pre, err := br.Peek(128); err == nil && !zero(pre) {
		msgs = append(msgs, "the 128-byte preamble is not zero")
	}
	meta, rest, err := dicom.ReadFileHeader(br, dicom.DefaultMetaLimit)
	switch {
	case err != nil:
		msgs = append(msgs, fmt.Sprintf("the meta header does not parse: %v", err))
	case meta.NoMeta:
		msgs = append(msgs, "no Part 10 meta header")
	default:
		if meta.MediaStorageSOPInstanceUID != in.SOPInstanceUID {
			msgs = append(msgs, "the meta header names another SOP Instance UID")
		}
		if meta.MediaStorageSOPClassUID != in.SOPClassUID {
			msgs = append(msgs, "the meta header names another SOP Class UID")
		}
		if in.TransferSyntaxUID != "" && meta.TransferSyntaxUID != in.TransferSyntaxUID {
			msgs = append(msgs, "the meta header names another transfer syntax")
		}
	}
	if rest == nil {
		rest = br
	}
	// The data set is read as Store reads it, so that an object stored
	// before a check existed (pixel data that contradicts its transfer
	// syntax, issue 14) is reported; what Scan leaves unread is drained
	// for the checksum.
	if meta != nil && !meta.NoMeta {
		if ts := dicom.LookupTransferSyntax(meta.TransferSyntaxUID); ts != nil {
			if _, err := dicom.Scan(rest, ts, nil, 0); errors.Is(err, dicom.ErrPixelEncoding) {
				msgs = append(msgs, fmt.Sprintf("the data set does not match its transfer syntax: %v", err))
			}
		}
	}
	if _, err := io.Copy(io.Discard, rest); err != nil {
		msgs = append(msgs, fmt.Sprintf("reading the object failed after %d bytes: %v", c.n, err))
	} else {
		if c.n != in.Size {
			msgs = append(msgs, fmt.Sprintf("%d bytes, the index recorded %d", c.n, in.Size))
		}
		if sum := c.checksum(); in.Checksum != "" && sum != in.Checksum {
			msgs = append(msgs, fmt.Sprintf("checksum %s, the index recorded %s", sum, in.Checksum))
		}
	}
	return c.n, strings.Join(msgs, "; ")
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
