package dimse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/pdu"
)

// ErrNoContext: no accepted presentation context can carry an object: its
// SOP class was not accepted (with the SCP role, for C-GET), or only in a
// transfer syntax it cannot be converted to.
var ErrNoContext = errors.New("dimse: no presentation context for the object")

// MaxContexts is how many presentation contexts one association proposes
// (IDs are the odd numbers 1..255).
const MaxContexts = 128

// nativeSyntaxes are the syntaxes proposed and preferred for conversion,
// in order.
var nativeSyntaxes = []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}

func isNative(ts string) bool { return dicom.IsUncompressed(dicom.LookupTransferSyntax(ts)) }

// SelectContext picks the accepted context to send an object of sopClass
// stored in ts: one in ts itself; else, for a native ts, one in another
// native syntax (Explicit VR Little Endian first, then the lowest ID).
// usable, when not nil, filters the contexts (C-GET: those where the
// requestor took the SCP role). It returns ErrNoContext otherwise.
func SelectContext(contexts map[byte]*assoc.Context, sopClass, ts string, usable func(*assoc.Context) bool) (*assoc.Context, error) {
	var exact, conv *assoc.Context
	rank := func(c *assoc.Context) int {
		for i, n := range nativeSyntaxes {
			if c.TransferSyntax == n {
				return i
			}
		}
		return len(nativeSyntaxes)
	}
	for _, c := range contexts {
		if c.AbstractSyntax != sopClass || (usable != nil && !usable(c)) {
			continue
		}
		switch {
		case c.TransferSyntax == ts:
			if exact == nil || c.ID < exact.ID {
				exact = c
			}
		case isNative(ts) && isNative(c.TransferSyntax):
			if conv == nil || rank(c) < rank(conv) || (rank(c) == rank(conv) && c.ID < conv.ID) {
				conv = c
			}
		}
	}
	if exact != nil {
		return exact, nil
	}
	if conv != nil {
		return conv, nil
	}
	return nil, fmt.Errorf("%w: SOP class %s (%s) in transfer syntax %s", ErrNoContext, sopClass, dicom.UIDName(sopClass), ts)
}

// storeFunc sends one C-STORE-RQ with its data set and returns the
// response.
type storeFunc func(ctx context.Context, pcID byte, rq *Command, data io.Reader) (*Command, error)

// SubOpError is a sub-operation that failed before the peer answered:
// no usable context, the object could not be opened. The association is
// still usable.
type SubOpError struct{ Err error }

func (e *SubOpError) Error() string { return e.Err.Error() }
func (e *SubOpError) Unwrap() error { return e.Err }

// sendInstance is the one place that sends an object with C-STORE: it
// chooses the context (SelectContext), opens the object and converts it
// among the native syntaxes when the context's syntax differs. rq is the
// C-STORE-RQ (message ID, move originator); its class, instance and
// priority are filled in. A *SubOpError means nothing was sent; any other
// error is a transport or protocol error.
func sendInstance(ctx context.Context, contexts map[byte]*assoc.Context, usable func(*assoc.Context) bool, inst *Instance, rq *Command, send storeFunc) (*Command, error) {
	pc, err := SelectContext(contexts, inst.SOPClassUID, inst.TransferSyntaxUID, usable)
	if err != nil {
		return nil, &SubOpError{err}
	}
	var from, to *dicom.TransferSyntax
	if pc.TransferSyntax != inst.TransferSyntaxUID {
		from, to = dicom.LookupTransferSyntax(inst.TransferSyntaxUID), dicom.LookupTransferSyntax(pc.TransferSyntax)
		if from == nil || to == nil {
			return nil, &SubOpError{fmt.Errorf("%w: cannot convert %s to %s", ErrNoContext, inst.TransferSyntaxUID, pc.TransferSyntax)}
		}
	}
	if from != nil && inst.Size > 0 && inst.Size <= ConvertCheckLimit {
		if err := checkConvert(ctx, inst, from, to); err != nil {
			return nil, &SubOpError{err}
		}
	}
	rc, err := inst.Open(ctx)
	if err != nil {
		return nil, &SubOpError{fmt.Errorf("opening the object: %w", err)}
	}
	defer rc.Close()
	var data io.Reader = rc
	if from != nil {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(dicom.Transcode(pw, rc, from, to)) }()
		defer pr.Close()
		data = pr
	}
	rq.CommandField = CStoreRQ
	rq.AffectedSOPClassUID = inst.SOPClassUID
	rq.AffectedSOPInstanceUID = inst.SOPInstanceUID
	return send(ctx, pc.ID, rq, data)
}

// ConvertCheckLimit is the largest object converted once without sending
// before it is sent converted: a data set the conversion refuses (a value
// implicit VR would misread, say) then fails its own sub-operation, where
// a failure once sending has begun can only abort the association.
const ConvertCheckLimit = 64 << 20

// checkConvert converts inst from one native syntax to another into
// nothing, to learn whether it converts.
func checkConvert(ctx context.Context, inst *Instance, from, to *dicom.TransferSyntax) error {
	rc, err := inst.Open(ctx)
	if err != nil {
		return fmt.Errorf("opening the object: %w", err)
	}
	defer rc.Close()
	if err := dicom.Transcode(io.Discard, rc, from, to); err != nil {
		return fmt.Errorf("the peer takes %s only in %s, and converting it fails: %w", dicom.UIDName(inst.SOPClassUID), to.Name, err)
	}
	return nil
}

// StoreInstance sends inst with C-STORE on the best accepted context,
// converting among the native syntaxes when needed (see SelectContext).
// origin, when not nil, sets the Move Originator AE title and message ID
// (C-MOVE sub-operations). A failure status is returned as the response;
// a *SubOpError when nothing could be sent; other errors are transport
// errors.
func (cl *Client) StoreInstance(ctx context.Context, inst *Instance, origin *MoveOrigin) (*Command, error) {
	rq := &Command{Priority: PriorityMedium}
	if origin != nil {
		rq.MoveOriginatorAET, rq.MoveOriginatorMessageID = origin.AETitle, origin.MessageID
	}
	return sendInstance(ctx, cl.A.Contexts(), nil, inst, rq, func(ctx context.Context, pcID byte, rq *Command, data io.Reader) (*Command, error) {
		rq.MessageID = cl.nextID()
		if err := cl.WriteMessage(pcID, rq, data); err != nil {
			return nil, err
		}
		return cl.readResponse(rq.MessageID, CStoreRSP)
	})
}

// MoveOrigin names the C-MOVE a C-STORE sub-operation belongs to.
type MoveOrigin struct {
	AETitle   string
	MessageID uint16
}

// ProposeStorage returns the presentation contexts to propose for sending
// the instances: for each distinct (SOP class, stored syntax) one context,
// and for each SOP class one more with Explicit and Implicit VR Little
// Endian (for conversion). IDs start at 1. The instances that fit in
// MaxContexts are proposed; n tells how many of them.
func ProposeStorage(insts []Instance) (pcs []pdu.PresentationContext, n int) {
	type key struct{ class, ts string }
	keys := map[key]bool{}
	classes := map[string]bool{}
	var order []key
	var classOrder []string
	for n < len(insts) {
		in := insts[n]
		k := key{in.SOPClassUID, in.TransferSyntaxUID}
		need := 0
		if !keys[k] {
			need++
		}
		if !classes[k.class] {
			need++
		}
		if len(order)+len(classOrder)+need > MaxContexts {
			break
		}
		if !keys[k] {
			keys[k] = true
			order = append(order, k)
		}
		if !classes[k.class] {
			classes[k.class] = true
			classOrder = append(classOrder, k.class)
		}
		n++
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i].class < order[j].class })
	id := byte(1)
	for _, k := range order {
		pcs = append(pcs, pdu.PresentationContext{ID: id, AbstractSyntax: k.class, TransferSyntaxes: []string{k.ts}})
		id += 2
	}
	for _, c := range classOrder {
		pcs = append(pcs, pdu.PresentationContext{ID: id, AbstractSyntax: c, TransferSyntaxes: append([]string(nil), nativeSyntaxes...)})
		id += 2
	}
	return pcs, n
}
