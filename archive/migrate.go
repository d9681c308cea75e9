package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store"
)

// A migration copies every instance of one archive into another opened
// on other stores (an embedded SQLite index with files into PostgreSQL
// and S3, say): each object's bytes are streamed into the destination's
// blobs, committed, read back and checked against the checksum the source
// recorded, then its index row is committed and the blob published, as a
// C-STORE does (Import). The row keeps the source's values (attributes,
// time and address of receipt); the indexed sequences are taken again
// from the object as it streams, with the destination's sequence
// settings; metadata the source kept (store.MetadataKeeper) is copied,
// and what it had not computed yet is computed at the destination when
// first asked for. A rerun skips each instance the destination holds
// with the same size and checksum, so an interrupted migration resumes
// where it stopped; what a crash left half-written in the destination is
// removed by its recovery (Open), as after any crash.

// MigrateOptions says how Migrate reports and what it does.
type MigrateOptions struct {
	// VerifyOnly: copy nothing, check that the destination holds every
	// instance of the source, with the same bytes.
	VerifyOnly bool
	// Workers copy or check instances at once (0: 1).
	Workers int
	// Problem is called for each instance that was not migrated or does
	// not match; Copied for each instance copied; Done after each
	// instance (for a progress bar). They may be called from several
	// goroutines, never at once.
	Problem func(VerifyProblem)
	Copied  func(*store.Instance)
	Done    func(MigrateReport)
}

// MigrateReport counts what Migrate did.
type MigrateReport struct {
	// Instances of the source walked.
	Instances int64 `json:"instances"`
	// Copied objects and their bytes (each read back and checked).
	Copied int64 `json:"copied"`
	Bytes  int64 `json:"bytes"`
	// Present: instances the destination held already with the same
	// size and checksum (a rerun's), not copied again.
	Present int64 `json:"present"`
	// Verified: with VerifyOnly, instances whose destination copy was
	// read and matched.
	Verified int64 `json:"verified"`
	// Problems: instances not migrated or not matching, and instances
	// only the destination holds.
	Problems int64 `json:"problems"`
	// Source and Destination are the counts per level at the end (-1
	// where an index cannot count a level).
	Source      store.Counts `json:"source"`
	Destination store.Counts `json:"destination"`
}

// CountsMatch reports whether the source and the destination hold as
// many patients, studies, series and instances (a level either cannot
// count is not compared; instances always are).
func (r *MigrateReport) CountsMatch() bool {
	eq := func(a, b int64) bool { return a == b || a < 0 || b < 0 }
	s, d := r.Source, r.Destination
	return s.Instances == d.Instances && eq(s.Patients, d.Patients) && eq(s.Studies, d.Studies) && eq(s.Series, d.Series)
}

// Migrate copies every instance of ar into dst (both opened), or with
// o.VerifyOnly checks that dst holds them. It returns an error when either
// store fails (copying stops there; a rerun resumes); an instance that
// cannot be migrated or does not match is a problem (o.Problem), and the
// run goes on. ar must not change meanwhile: ward migrate runs only on a
// stopped archive.
func (ar *Archive) Migrate(ctx context.Context, dst *Archive, o MigrateOptions) (MigrateReport, error) {
	var rep MigrateReport
	w := ar.capabilities().InstanceWalker
	if w == nil {
		return rep, errors.New("the source index cannot list its instances")
	}
	workers := max(o.Workers, 1)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex // guards rep and serialises the callbacks
	problem := func(in *store.Instance, msg string) {
		mu.Lock()
		defer mu.Unlock()
		rep.Problems++
		if o.Problem != nil {
			o.Problem(VerifyProblem{SOPInstanceUID: in.SOPInstanceUID, StudyInstanceUID: in.StudyInstanceUID, BlobKey: in.BlobKey, Problem: msg})
		}
	}
	jobs := make(chan *store.Instance, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for in := range jobs {
				res, err := ar.migrateOne(ctx, dst, in, o.VerifyOnly)
				if err != nil {
					cancel(err)
					continue
				}
				if res.problem != "" {
					problem(in, res.problem)
				}
				mu.Lock()
				rep.Instances++
				switch {
				case res.copied:
					rep.Copied++
					rep.Bytes += res.bytes
					if o.Copied != nil {
						o.Copied(in)
					}
				case res.present:
					rep.Present++
				case res.verified:
					rep.Verified++
				}
				if o.Done != nil {
					o.Done(rep)
				}
				mu.Unlock()
			}
		}()
	}
	werr := w.WalkInstances(ctx, func(in *store.Instance) error {
		select {
		case jobs <- in:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	close(jobs)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return rep, err
	}
	if werr != nil {
		return rep, fmt.Errorf("listing the source's instances: %w", werr)
	}
	var err error
	if rep.Source, err = countLevels(ctx, ar); err != nil {
		return rep, fmt.Errorf("counting the source: %w", err)
	}
	if rep.Destination, err = countLevels(ctx, dst); err != nil {
		return rep, fmt.Errorf("counting the destination: %w", err)
	}
	if rep.Problems > 0 || !rep.CountsMatch() {
		// Instances the source does not have (a destination that was not
		// empty, or instances deleted from the source between runs): on
		// a run that failed already, as they may hide behind instances
		// not migrated in the counts.
		dw := dst.capabilities().InstanceWalker
		if dw == nil {
			return rep, nil
		}
		err := dw.WalkInstances(ctx, func(in *store.Instance) error {
			_, err := ar.Index.Get(ctx, in.SOPInstanceUID)
			if errors.Is(err, store.ErrNotFound) {
				problem(in, "in the destination only: the source has no such instance")
				return nil
			}
			return err
		})
		if err != nil {
			return rep, fmt.Errorf("listing the destination's instances: %w", err)
		}
	}
	return rep, nil
}

// countLevels counts ar's index at each level (-1 where it cannot).
func countLevels(ctx context.Context, ar *Archive) (store.Counts, error) {
	if c := ar.capabilities().Counter; c != nil {
		return c.Counts(ctx)
	}
	n, err := ar.Index.CountInstances(ctx)
	return store.Counts{Patients: -1, Studies: -1, Series: -1, Instances: n}, err
}

// migrated is what became of one instance.
type migrated struct {
	copied, present, verified bool
	bytes                     int64
	problem                   string
}

// migrateOne copies (or checks) the instance w names. An error is one of
// either store that ends the run.
func (ar *Archive) migrateOne(ctx context.Context, dst *Archive, w *store.Instance, verifyOnly bool) (migrated, error) {
	in, err := ar.Index.Get(ctx, w.SOPInstanceUID)
	if err != nil {
		return migrated{}, fmt.Errorf("reading the source's index: %w", err)
	}
	if in.Checksum == "" {
		// A row from before checksums were recorded: the object's own.
		sum, n, err := ar.blobChecksum(ctx, in.BlobKey)
		if err != nil || n != in.Size {
			return migrated{problem: "the source's object cannot be read whole, and its index recorded no checksum: not migrated"}, nil
		}
		in.Checksum = sum
	}
	have, err := dst.Index.Get(ctx, in.SOPInstanceUID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		have = nil
	case err != nil:
		return migrated{}, fmt.Errorf("reading the destination's index: %w", err)
	}
	same := have != nil && have.Size == in.Size && have.Checksum == in.Checksum
	if verifyOnly {
		switch {
		case have == nil:
			return migrated{problem: "not in the destination"}, nil
		case !same:
			return migrated{problem: fmt.Sprintf("the destination holds %d bytes with %s, the source %d with %s", have.Size, have.Checksum, in.Size, in.Checksum)}, nil
		}
		sum, n, err := dst.blobChecksum(ctx, have.BlobKey)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return migrated{problem: "the destination's object is missing"}, nil
		case err != nil:
			return migrated{problem: fmt.Sprintf("reading the destination's object failed: %v", err)}, nil
		case n != in.Size || sum != in.Checksum:
			return migrated{problem: fmt.Sprintf("the destination's object reads back as %d bytes with %s, recorded %d with %s", n, sum, in.Size, in.Checksum)}, nil
		}
		return migrated{verified: true}, nil
	}
	if same {
		return migrated{present: true}, nil
	}
	var meta []byte
	if dst.capabilities().MetadataKeeper != nil {
		meta = ar.keptMetadata(ctx, in)
	}
	rc, err := ar.Blobs.Open(ctx, in.BlobKey)
	if errors.Is(err, store.ErrNotFound) {
		return migrated{problem: "the source's object is missing: not migrated"}, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return migrated{}, context.Cause(ctx)
		}
		return migrated{problem: fmt.Sprintf("the source's object cannot be opened: %v; not migrated", err)}, nil
	}
	defer rc.Close()
	n, problem, err := dst.Import(ctx, in, rc, meta)
	if err != nil || problem != "" {
		return migrated{problem: problem}, err
	}
	return migrated{copied: true, bytes: n}, nil
}

// keptMetadata is the metadata ar's index kept for in (nil when none).
func (ar *Archive) keptMetadata(ctx context.Context, in *store.Instance) []byte {
	caps := ar.capabilities()
	if caps.MetadataKeeper == nil || caps.Querier == nil {
		return nil
	}
	var b []byte
	q := &store.Query{Level: store.LevelImage, WithMetadata: true, Keys: []store.Key{
		{Attribute: "StudyInstanceUID", Kind: store.MatchSingle, Value: in.StudyInstanceUID},
		{Attribute: "SeriesInstanceUID", Kind: store.MatchSingle, Value: in.SeriesInstanceUID},
		{Attribute: "SOPInstanceUID", Kind: store.MatchSingle, Value: in.SOPInstanceUID}}}
	err := caps.Querier.Instances(ctx, q, func(m *store.Instance) error {
		if m.SOPInstanceUID == in.SOPInstanceUID && m.BlobKey == in.BlobKey {
			b = m.Metadata
		}
		return nil
	})
	if err != nil {
		return nil // computed at the destination when asked for
	}
	return b
}

// Import stores in ar an object copied from another archive, read from r,
// whose index row there is in: a blob is created and written, its size
// and checksum compared with in's, committed, read back and compared
// again; then the row (in's values, with ar's blob key and the sequences
// ar indexes taken from the object as it streams) is inserted, replacing
// any row of the same SOP Instance UID, and meta (the metadata the other
// archive kept; nil: none) kept with it. The blob is published, and a
// replaced one deleted, after, as for a C-STORE. It returns the bytes
// copied, or what is wrong with the object ("": nothing; then nothing
// is stored), or an error of ar's stores.
func (ar *Archive) Import(ctx context.Context, in *store.Instance, r io.Reader, meta []byte) (int64, string, error) {
	bw, err := ar.Blobs.Create(ctx, "")
	if err != nil {
		return 0, "", fmt.Errorf("creating an object in the destination: %w", err)
	}
	key := bw.Key()
	committed := false
	defer func() {
		if !committed {
			_ = bw.Abort()
		}
	}()
	sw := &stickyWriter{w: bw}
	cw := &countingWriter{w: sw}
	items, err := ar.copyScanning(cw, r)
	if sw.err != nil {
		return 0, "", fmt.Errorf("writing an object into the destination: %w", sw.err)
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, "", context.Cause(ctx)
		}
		return 0, fmt.Sprintf("reading the source's object failed after %d bytes: %v; not migrated", cw.n, err), nil
	}
	if cw.n != in.Size || (in.Checksum != "" && cw.checksum() != in.Checksum) {
		return 0, fmt.Sprintf("the source's object is %d bytes with %s, its index recorded %d with %s (ward study verify tells more); not migrated",
			cw.n, cw.checksum(), in.Size, in.Checksum), nil
	}
	if err := bw.Commit(); err != nil {
		return 0, "", fmt.Errorf("committing an object in the destination: %w", err)
	}
	committed = true
	// Read back before any row names it: a blob no row names is removed
	// by the destination's recovery, should this process stop here.
	sum, n, err := ar.blobChecksum(ctx, key)
	if err != nil || n != cw.n || sum != cw.checksum() {
		_ = ar.Blobs.Delete(ctx, key)
		if err != nil {
			return 0, "", fmt.Errorf("reading back an object from the destination: %w", err)
		}
		return 0, fmt.Sprintf("the object read back from the destination is %d bytes with %s, %d with %s were written; not migrated", n, sum, cw.n, cw.checksum()), nil
	}
	row := *in
	row.BlobKey, row.Checksum, row.Metadata = key, sum, nil
	row.Sequences = items
	var res store.PutResult
	ins := ar.capabilities().Inserter
	if ins != nil {
		err = ins.Insert(ctx, &row)
	}
	if ins == nil || errors.Is(err, store.ErrInstanceExists) {
		res, err = ar.Index.Put(ctx, &row)
	}
	if err != nil {
		_ = ar.Blobs.Delete(ctx, key)
		return 0, "", fmt.Errorf("committing the destination's index: %w", err)
	}
	job := afterStore{key: key, oldKey: res.OldBlobKey}
	if mk := ar.capabilities().MetadataKeeper; mk != nil && len(meta) > 0 {
		if err := mk.SetMetadata(ctx, row.SOPInstanceUID, key, meta); err != nil {
			ar.Logger.Warn("keeping a migrated object's metadata failed; it is computed when first asked for", "err", err)
		}
	} else {
		job.uid, job.ts = row.SOPInstanceUID, row.TransferSyntaxUID
	}
	ar.queueAfter(job)
	return cw.n, "", nil
}

// stickyWriter keeps the first write error and fails every later write
// with it, so that a failed write into the destination is told from a
// failed read of the source, whoever read the error on the way.
type stickyWriter struct {
	w   io.Writer
	err error
}

func (s *stickyWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(p)
	if err != nil {
		s.err = err
	}
	return n, err
}

// copyScanning copies r into w whole and returns the items of the
// sequences ar indexes, read from the object on the way (none when the
// index keeps none, or the object cannot be read as Part 10: the copy is
// as found either way).
func (ar *Archive) copyScanning(w io.Writer, r io.Reader) ([]store.SequenceItem, error) {
	if ar.seqs == nil {
		_, err := io.Copy(w, r)
		return nil, err
	}
	tee := io.TeeReader(r, w)
	var items []store.SequenceItem
	meta, br, err := dicom.ReadFileHeader(tee, dicom.DefaultMetaLimit)
	if err == nil && !meta.NoMeta {
		if ts := dicom.LookupTransferSyntax(meta.TransferSyntaxUID); ts != nil {
			if attrs, err := dicom.ScanWith(br, ts, wanted, ar.MaxIndexedValue, ar.seqs.keep); err == nil {
				items = ar.seqs.items(attrs)
			}
		}
	}
	var rest io.Reader = tee
	if br != nil {
		rest = br // what it holds went through tee already
	}
	if _, err := io.Copy(io.Discard, rest); err != nil {
		return nil, err
	}
	return items, nil
}
