package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/termsafe"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

// maxContexts is how many presentation contexts one association proposes
// (IDs are the odd numbers 1..255).
const maxContexts = 128

// mediaStorageDirectory is the DICOMDIR SOP class, never sent.
const mediaStorageDirectory = "1.2.840.10008.1.3.10"

type storeFile struct {
	path     string
	size     int64
	sopClass string
	sopInst  string
	ts       string
}

type storeResult struct {
	file    *storeFile
	status  uint16
	comment string
	err     error
}

func (r *storeResult) failed() bool {
	return r.err != nil || dimse.CategoryOf(r.status) == dimse.CategoryFailure
}

func (r *storeResult) reason() string {
	if r.err != nil {
		return r.err.Error()
	}
	s := fmt.Sprintf("status 0x%04X (%s)", r.status, dimse.StatusName(r.status))
	if r.comment != "" {
		s += ": " + r.comment
	}
	return s
}

var storeCmd = &command{
	name: "store", summary: "send files and folders to a DICOM peer with C-STORE",
	args: "[--aec TITLE] [--aet TITLE] [--parallel N] HOST:PORT PATH...", minArgs: 2, maxArgs: anyArgs,
	help: `Sends every DICOM object in the files and folders named (folders with
all below them) to the peer at HOST:PORT with C-STORE, over --parallel
associations, and prints a summary with the reason of each failure. Files
that are not DICOM objects, and DICOMDIRs, are skipped. It exits 1 when an
object failed.`,
	flags: storeFlags,
}

func storeFlags(fs *flag.FlagSet) runFunc {
	pf := addPeerFlags(fs)
	parallel := fs.Int("parallel", 1, "number of associations in parallel")
	quiet := fs.Bool("quiet", false, "no progress bar")
	return func(e *env, pos []string) error {
		if *parallel < 1 {
			return errUsage
		}
		addr, paths := pos[0], pos[1:]
		files, skipped, err := collectFiles(paths)
		if err != nil {
			return err
		}
		var total int64
		for _, f := range files {
			total += f.size
		}
		var bar *progressbar.ProgressBar
		if !*quiet {
			if f, ok := e.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				bar = progressbar.NewOptions64(total,
					progressbar.OptionSetWriter(e.stderr),
					progressbar.OptionSetDescription(fmt.Sprintf("storing %d objects", len(files))),
					progressbar.OptionShowBytes(true),
					progressbar.OptionShowCount(),
					progressbar.OptionSetPredictTime(true),
					progressbar.OptionSetElapsedTime(true),
					progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionFullWidth(),
					progressbar.OptionClearOnFinish())
			}
		}
		start := time.Now()
		results := sendAll(context.Background(), addr, pf, files, *parallel, bar)
		if bar != nil {
			_ = bar.Finish()
		}
		elapsed := time.Since(start)
		return e.storeSummary(results, skipped, total, elapsed)
	}
}

func (e *env) storeSummary(results []*storeResult, skipped []string, total int64, elapsed time.Duration) error {
	var sent, failed, warned int
	reasons := map[string][]string{}
	for _, r := range results {
		switch {
		case r.failed():
			failed++
			reasons[r.reason()] = append(reasons[r.reason()], r.file.path)
		case r.status != dimse.StatusSuccess:
			warned++
			sent++
		default:
			sent++
		}
	}
	secs := elapsed.Seconds()
	if secs == 0 {
		secs = 1e-9
	}
	fmt.Fprintf(e.stdout, "sent %d of %d objects (%.1f MB) in %s: %.3g objects/s, %.1f MB/s; %d failed",
		sent, len(results), float64(total)/1e6, elapsed.Round(time.Millisecond), float64(sent)/secs, float64(total)/1e6/secs, failed)
	if warned > 0 {
		fmt.Fprintf(e.stdout, ", %d with warnings", warned)
	}
	if len(skipped) > 0 {
		fmt.Fprintf(e.stdout, ", %d files skipped (not DICOM objects, DICOMDIRs, or no SOP Class/Instance UID in the data set)", len(skipped))
	}
	fmt.Fprintln(e.stdout)
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		paths := reasons[k]
		fmt.Fprintf(e.stdout, "  failed (%d): %s\n", len(paths), termsafe.Text(k, ""))
		for i, p := range paths {
			if i == 5 {
				fmt.Fprintf(e.stdout, "    … and %d more\n", len(paths)-5)
				break
			}
			fmt.Fprintf(e.stdout, "    %s\n", termsafe.Quote(p))
		}
	}
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d of %d objects failed", failed, len(results))}
	}
	return nil
}

// collectFiles walks the paths and reads each file's meta information.
// Files that are not DICOM objects (or are DICOMDIRs) are skipped.
func collectFiles(paths []string) ([]*storeFile, []string, error) {
	var files []*storeFile
	var skipped []string
	add := func(p string, size int64) {
		meta, rc, err := dicom.OpenFile(p)
		if err != nil {
			skipped = append(skipped, p)
			return
		}
		rc.Close()
		if meta.MediaStorageSOPClassUID == "" || meta.MediaStorageSOPInstanceUID == "" || meta.MediaStorageSOPClassUID == mediaStorageDirectory || meta.TransferSyntaxUID == "" {
			skipped = append(skipped, p)
			return
		}
		// Name the object as its data set does, as storescu does: some
		// files' meta information disagrees with the data set.
		f := &storeFile{path: p, size: size, sopClass: meta.MediaStorageSOPClassUID, sopInst: meta.MediaStorageSOPInstanceUID, ts: meta.TransferSyntaxUID}
		if ts := dicom.LookupTransferSyntax(meta.TransferSyntaxUID); ts != nil && !ts.Deflated {
			if meta.SOPClassUID == "" || meta.SOPInstanceUID == "" {
				// Not a composite instance: no receiver can index it.
				skipped = append(skipped, p)
				return
			}
			f.sopClass, f.sopInst = meta.SOPClassUID, meta.SOPInstanceUID
		}
		files = append(files, f)
	}
	for _, root := range paths {
		st, err := os.Stat(root)
		if err != nil {
			return nil, nil, err
		}
		if !st.IsDir() {
			add(root, st.Size())
			continue
		}
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				info, err := d.Info()
				if err != nil {
					return err
				}
				add(p, info.Size())
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	if len(files) == 0 {
		return nil, skipped, errors.New("no DICOM files found")
	}
	return files, skipped, nil
}

// sendAll splits the files into n contiguous groups of about equal bytes
// and sends each over its own associations.
func sendAll(ctx context.Context, addr string, pf peerFlags, files []*storeFile, n int, bar *progressbar.ProgressBar) []*storeResult {
	if n > len(files) {
		n = len(files)
	}
	var total int64
	for _, f := range files {
		total += f.size
	}
	groups := make([][]*storeFile, 0, n)
	var acc int64
	startIdx := 0
	for i, f := range files {
		acc += f.size
		if len(groups) < n-1 && acc >= total*int64(len(groups)+1)/int64(n) {
			groups = append(groups, files[startIdx:i+1])
			startIdx = i + 1
		}
	}
	groups = append(groups, files[startIdx:])
	out := make([][]*storeResult, len(groups))
	var wg sync.WaitGroup
	var barMu sync.Mutex
	progress := func(bytes int64) {
		if bar != nil {
			barMu.Lock()
			_ = bar.Add64(bytes)
			barMu.Unlock()
		}
	}
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = sendGroup(ctx, addr, pf, g, progress)
		}()
	}
	wg.Wait()
	var all []*storeResult
	for _, r := range out {
		all = append(all, r...)
	}
	return all
}

// contextKey groups files that share a presentation context.
type contextKey struct{ sopClass, ts string }

func isNative(ts string) bool {
	t := dicom.LookupTransferSyntax(ts)
	return t != nil && dicom.IsUncompressed(t)
}

// sendGroup sends files in batches that fit in one association's contexts.
func sendGroup(ctx context.Context, addr string, pf peerFlags, files []*storeFile, progress func(int64)) []*storeResult {
	var results []*storeResult
	for len(files) > 0 {
		// Each distinct (class, syntax) needs a context, and each class with a
		// native syntax one more for conversion.
		keys := map[contextKey]bool{}
		classes := map[string]bool{}
		n := 0
		for n < len(files) {
			f := files[n]
			need := 0
			if !keys[contextKey{f.sopClass, f.ts}] {
				need++
			}
			if isNative(f.ts) && !classes[f.sopClass] {
				need++
			}
			if len(keys)+len(classes)+need > maxContexts {
				break
			}
			keys[contextKey{f.sopClass, f.ts}] = true
			if isNative(f.ts) {
				classes[f.sopClass] = true
			}
			n++
		}
		results = append(results, sendBatch(ctx, addr, pf, files[:n], keys, classes, progress)...)
		files = files[n:]
	}
	return results
}

func sendBatch(ctx context.Context, addr string, pf peerFlags, files []*storeFile, keys map[contextKey]bool, classes map[string]bool, progress func(int64)) []*storeResult {
	var pcs []pdu.PresentationContext
	id := byte(1)
	sorted := make([]contextKey, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Slice(sorted, func(i, j int) bool {
		return sorted[i].sopClass+sorted[i].ts < sorted[j].sopClass+sorted[j].ts
	})
	for _, k := range sorted {
		pcs = append(pcs, pdu.PresentationContext{ID: id, AbstractSyntax: k.sopClass, TransferSyntaxes: []string{k.ts}})
		id += 2
	}
	classList := make([]string, 0, len(classes))
	for c := range classes {
		classList = append(classList, c)
	}
	sort.Strings(classList)
	for _, c := range classList {
		pcs = append(pcs, pdu.PresentationContext{ID: id, AbstractSyntax: c, TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}})
		id += 2
	}
	return sendOn(ctx, func() (*assoc.Association, error) { return pf.dial(ctx, addr, pf.request(pcs)) }, files, progress)
}

// sendOn sends files over associations dial opens, in order. When the
// peer aborts (or the connection drops), it opens a new association and
// goes on with the file that was in flight, then the rest: each file gets
// its own outcome, and at most one retry. A file whose second attempt is
// cut off as well fails with the reason. A failure status is an answer and
// is not retried; neither is a failure to open an association, which ends
// the files left with its reason.
func sendOn(ctx context.Context, dial func() (*assoc.Association, error), files []*storeFile, progress func(int64)) []*storeResult {
	results := make([]*storeResult, len(files))
	retried := make([]bool, len(files))
	next := 0
	for next < len(files) {
		a, err := dial()
		if err != nil {
			for i := next; i < len(files); i++ {
				results[i] = &storeResult{file: files[i], err: fmt.Errorf("association: %w", err)}
				progress(files[i].size)
			}
			return results
		}
		cl := dimse.NewClient(a)
		lost := false
		for next < len(files) && !lost {
			f := files[next]
			res := sendFile(ctx, cl, f)
			lost = associationEnded(a, res.err)
			if lost && res.err != nil {
				// In flight when the association ended: sent again on a
				// new one, once.
				if !retried[next] && ctx.Err() == nil {
					retried[next] = true
					continue
				}
				res.err = fmt.Errorf("the association ended twice while it was sent: %w", res.err)
			}
			results[next] = res
			progress(f.size)
			next++
		}
		if !lost {
			// Every object was answered; a failed release loses nothing.
			_ = a.Release()
		}
	}
	return results
}

// associationEnded reports whether a has ended, or err (a send's) says it
// cannot go on; then a is aborted, if it was not over already. A file's
// own error (it cannot be read or converted, no context for it) leaves
// the association as it is.
func associationEnded(a *assoc.Association, err error) bool {
	select {
	case <-a.Done():
		return true
	default:
	}
	if err == nil {
		return false
	}
	var ne net.Error
	for _, e := range []error{assoc.ErrAborted, assoc.ErrClosed, assoc.ErrTimeout, assoc.ErrProtocol, assoc.ErrReleased, dimse.ErrProtocol, io.EOF, io.ErrUnexpectedEOF, syscall.ECONNRESET, syscall.EPIPE} {
		if errors.Is(err, e) {
			a.Abort()
			return true
		}
	}
	if errors.As(err, &ne) {
		a.Abort()
		return true
	}
	return false
}

// sendFile sends one file on the best accepted context, converting among
// the native syntaxes when the peer accepted only another one
// (dimse.Client.StoreInstance, shared with C-MOVE and C-GET).
func sendFile(ctx context.Context, cl *dimse.Client, f *storeFile) *storeResult {
	res := &storeResult{file: f}
	inst := &dimse.Instance{SOPClassUID: f.sopClass, SOPInstanceUID: f.sopInst, TransferSyntaxUID: f.ts, Size: f.size,
		Open: func(context.Context) (io.ReadCloser, error) {
			meta, rc, err := dicom.OpenFile(f.path)
			if err != nil {
				return nil, err
			}
			if meta.TransferSyntaxUID != f.ts {
				rc.Close()
				return nil, fmt.Errorf("%s changed since it was listed", f.path)
			}
			return rc, nil
		}}
	rsp, err := cl.StoreInstance(ctx, inst, nil)
	if err != nil {
		if errors.Is(err, dimse.ErrNoContext) {
			err = fmt.Errorf("the peer accepted no presentation context for SOP class %s (%s) in transfer syntax %s", f.sopClass, dicom.UIDName(f.sopClass), f.ts)
		}
		res.err = err
		return res
	}
	res.status, res.comment = rsp.Status, strings.TrimSpace(rsp.ErrorComment)
	return res
}
