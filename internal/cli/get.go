package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"

	"golang.org/x/term"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

// commonStorage are the storage SOP classes proposed first for C-GET.
var commonStorage = []string{
	"1.2.840.10008.5.1.4.1.1.2",      // CT
	"1.2.840.10008.5.1.4.1.1.4",      // MR
	"1.2.840.10008.5.1.4.1.1.1",      // CR
	"1.2.840.10008.5.1.4.1.1.1.1",    // DX presentation
	"1.2.840.10008.5.1.4.1.1.1.1.1",  // DX processing
	"1.2.840.10008.5.1.4.1.1.1.2",    // MG presentation
	"1.2.840.10008.5.1.4.1.1.1.2.1",  // MG processing
	"1.2.840.10008.5.1.4.1.1.6.1",    // US
	"1.2.840.10008.5.1.4.1.1.3.1",    // US multi-frame
	"1.2.840.10008.5.1.4.1.1.7",      // SC
	"1.2.840.10008.5.1.4.1.1.12.1",   // XA
	"1.2.840.10008.5.1.4.1.1.12.2",   // RF
	"1.2.840.10008.5.1.4.1.1.20",     // NM
	"1.2.840.10008.5.1.4.1.1.128",    // PET
	"1.2.840.10008.5.1.4.1.1.2.1",    // Enhanced CT
	"1.2.840.10008.5.1.4.1.1.4.1",    // Enhanced MR
	"1.2.840.10008.5.1.4.1.1.481.1",  // RT Image
	"1.2.840.10008.5.1.4.1.1.481.2",  // RT Dose
	"1.2.840.10008.5.1.4.1.1.481.3",  // RT Structure Set
	"1.2.840.10008.5.1.4.1.1.481.5",  // RT Plan
	"1.2.840.10008.5.1.4.1.1.88.11",  // Basic Text SR
	"1.2.840.10008.5.1.4.1.1.88.22",  // Enhanced SR
	"1.2.840.10008.5.1.4.1.1.88.33",  // Comprehensive SR
	"1.2.840.10008.5.1.4.1.1.88.59",  // Key Object Selection
	"1.2.840.10008.5.1.4.1.1.11.1",   // Grayscale Softcopy Presentation State
	"1.2.840.10008.5.1.4.1.1.104.1",  // Encapsulated PDF
	"1.2.840.10008.5.1.4.1.1.77.1.4", // VL Photographic
}

// getContexts proposes storage contexts (Explicit and Implicit VR Little
// Endian) with the SCP role for the common classes first, then the other
// standard ones, up to the association's limit.
func getContexts(classes []string) ([]pdu.PresentationContext, []pdu.RoleSelection) {
	if len(classes) == 0 {
		seen := map[string]bool{}
		for _, c := range commonStorage {
			if dicom.IsStorageSOPClass(c) && !seen[c] {
				seen[c] = true
				classes = append(classes, c)
			}
		}
		for _, c := range dicom.StorageSOPClasses() {
			if !c.Retired && !seen[c.UID] {
				seen[c.UID] = true
				classes = append(classes, c.UID)
			}
		}
	}
	var pcs []pdu.PresentationContext
	var roles []pdu.RoleSelection
	id := byte(3)
	for _, c := range classes {
		if len(pcs) == dimse.MaxContexts-1 {
			break
		}
		pcs = append(pcs, pdu.PresentationContext{ID: id, AbstractSyntax: c, TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}})
		roles = append(roles, pdu.RoleSelection{SOPClassUID: c, SCU: false, SCP: true})
		id += 2
	}
	return pcs, roles
}

// dirStorer writes received objects as Part 10 files named by SOP
// Instance UID.
type dirStorer struct {
	dir, source  string
	count, bytes atomic.Int64
	progress     func()
}

func (d *dirStorer) Store(ctx context.Context, r *dimse.StoreRequest) error {
	if p := dicom.UIDProblem(r.SOPInstanceUID); p != "" {
		return &dimse.StatusError{Status: dimse.StatusInvalidSOPInstance, Comment: "SOP Instance UID " + p}
	}
	f, err := os.CreateTemp(d.dir, ".get-*")
	if err != nil {
		return &dimse.StatusError{Status: dimse.StatusOutOfResources, Comment: "cannot create a file", Err: err}
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	meta := &dicom.FileMeta{MediaStorageSOPClassUID: r.SOPClassUID, MediaStorageSOPInstanceUID: r.SOPInstanceUID, TransferSyntaxUID: r.TransferSyntaxUID, SourceApplicationEntityTitle: d.source}
	err = dicom.WriteFileHeader(f, meta)
	var n int64
	if err == nil {
		n, err = io.Copy(f, r.Data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(d.dir, dicom.UIDFileName(r.SOPInstanceUID)+".dcm"))
	}
	if err != nil {
		return &dimse.StatusError{Status: dimse.StatusOutOfResources, Comment: "cannot write the object", Err: err}
	}
	d.count.Add(1)
	d.bytes.Add(n)
	if d.progress != nil {
		d.progress()
	}
	return nil
}

var getCmd = &command{
	name: "get", summary: "retrieve objects from a DICOM peer into a folder with C-GET",
	args: "--out DIR [-P|-S] [--level L] [-k KEY=VALUE]... [--aec TITLE] [--aet TITLE] HOST:PORT", minArgs: 1, maxArgs: 1,
	help: `Retrieves the objects the keys match from the peer at HOST:PORT with
C-GET, on the same association, into the folder --out, and prints the
counts of its sub-operations. It exits 1 when the retrieval or one of its
sub-operations failed.`,
	flags: getFlags,
}

func getFlags(fs *flag.FlagSet) runFunc {
	q := addQRFlags(fs)
	out := fs.String("out", "", "folder for the received objects (created if missing; required)")
	quiet := fs.Bool("quiet", false, "no progress")
	return func(e *env, pos []string) error {
		if *out == "" {
			return errUsage
		}
		class, id, _, err := q.request("get")
		if err != nil {
			return err
		}
		if err := os.MkdirAll(*out, 0o700); err != nil {
			return err
		}
		st := &dirStorer{dir: *out, source: *q.pf.aec}
		tty := false
		if f, ok := e.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			tty = true
		}
		if !*quiet && tty {
			st.progress = func() {
				fmt.Fprintf(e.stderr, "\rreceived %d objects (%.1f MB)", st.count.Load(), float64(st.bytes.Load())/1e6)
			}
		}
		ctx, stop := interruptContext()
		defer stop()
		pcs, roles := getContexts(nil)
		cl, err := q.connect(ctx, pos[0], class, pcs, roles)
		if err != nil {
			return err
		}
		a := cl.A
		res, err := cl.Get(ctx, 1, id, st, nil)
		if err != nil {
			a.Abort()
			return err
		}
		_ = a.Release()
		fmt.Fprintf(e.stdout, "wrote %d objects (%.1f MB) to %s\n", st.count.Load(), float64(st.bytes.Load())/1e6, *out)
		return e.retrieveSummary("C-GET", res)
	}
}
