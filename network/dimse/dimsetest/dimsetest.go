// Package dimsetest provides an in-memory archive implementing the DIMSE
// service handlers (Echo, Store, Find, Retrieve) and a loopback server for
// it, so that the dispatcher and Ward's SCUs can be tested against DCMTK
// without the real archive.
package dimsetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

// CTImageStorage is the SOP class the generated objects use.
const CTImageStorage = "1.2.840.10008.5.1.4.1.1.2"

// Object is one stored object: its data set bytes in TransferSyntaxUID.
type Object struct {
	SOPClassUID, SOPInstanceUID, TransferSyntaxUID string
	Data                                           []byte
	// DS is the decoded data set (for matching); nil for objects whose
	// bytes are not decodable (e.g. a fake compressed syntax).
	DS *dicom.DataSet
	// MoveOriginator is the Move Originator AE title of the C-STORE that
	// delivered the object, if any.
	MoveOriginator string
}

// NewObject builds a small CT object with the given attributes (keywords
// to values) encoded in ts (labelled as label when not empty, to fake a
// compressed syntax).
func NewObject(attrs map[string]string, ts *dicom.TransferSyntax, label string) *Object {
	ds := &dicom.DataSet{}
	ds.Set(dicom.SOPClassUID, CTImageStorage)
	for k, v := range attrs {
		t, ok := dicom.TagByKeyword(k)
		if !ok {
			panic("dimsetest: unknown keyword " + k)
		}
		ds.Set(t, v)
	}
	ds.Put(&dicom.Element{Tag: dicom.Rows, VR: "US", Value: []byte{2, 0}})
	ds.Put(&dicom.Element{Tag: dicom.Columns, VR: "US", Value: []byte{2, 0}})
	ds.Put(&dicom.Element{Tag: dicom.BitsAllocated, VR: "US", Value: []byte{16, 0}})
	ds.Put(&dicom.Element{Tag: dicom.PixelData, VR: "OW", Value: []byte{1, 0, 2, 0, 3, 0, 4, 0}})
	b, err := ds.Bytes(ts)
	if err != nil {
		panic(err)
	}
	o := &Object{SOPClassUID: CTImageStorage, SOPInstanceUID: ds.String(dicom.SOPInstanceUID), TransferSyntaxUID: ts.UID, Data: b, DS: ds}
	if label != "" {
		o.TransferSyntaxUID = label // matching still works on DS
	}
	return o
}

// WriteFile writes o as a Part 10 file.
func (o *Object) WriteFile(path string) error {
	var b bytes.Buffer
	if err := dicom.WriteFileHeader(&b, &dicom.FileMeta{MediaStorageSOPClassUID: o.SOPClassUID, MediaStorageSOPInstanceUID: o.SOPInstanceUID, TransferSyntaxUID: o.TransferSyntaxUID}); err != nil {
		return err
	}
	b.Write(o.Data)
	return os.WriteFile(path, b.Bytes(), 0o600)
}

// Archive is an in-memory archive.
type Archive struct {
	mu      sync.Mutex
	objects []*Object
	// Destinations maps C-MOVE destination AE titles to HOST:PORT.
	Destinations map[string]string
	// FindDelay is slept before each match; FindRepeat > 1 emits every
	// match that many times (for cancellation tests).
	FindDelay  time.Duration
	FindRepeat int
	// FindCancelled counts Find calls that saw their context cancelled.
	FindCancelled atomic.Int32
	// FailStore makes Store fail for these SOP Instance UIDs (0xA700).
	FailStore map[string]bool
	// StoreDelay is slept in each Store.
	StoreDelay time.Duration
	// PanicFind makes Find panic.
	PanicFind bool
}

// Add stores objects.
func (a *Archive) Add(objs ...*Object) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, o := range objs {
		a.put(o)
	}
}

func (a *Archive) put(o *Object) {
	for i, x := range a.objects {
		if x.SOPInstanceUID == o.SOPInstanceUID {
			a.objects[i] = o
			return
		}
	}
	a.objects = append(a.objects, o)
}

// Objects returns the stored objects.
func (a *Archive) Objects() []*Object {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*Object(nil), a.objects...)
}

// Get returns a stored object by SOP Instance UID.
func (a *Archive) Get(uid string) *Object {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, o := range a.objects {
		if o.SOPInstanceUID == uid {
			return o
		}
	}
	return nil
}

// Echo implements dimse.Echoer.
func (a *Archive) Echo(ctx context.Context, r *dimse.Request) error { return nil }

// Store implements dimse.Storer.
func (a *Archive) Store(ctx context.Context, r *dimse.StoreRequest) error {
	b, err := io.ReadAll(io.LimitReader(r.Data, 64<<20))
	if err != nil {
		return err
	}
	if a.StoreDelay > 0 {
		time.Sleep(a.StoreDelay)
	}
	if a.FailStore[r.SOPInstanceUID] {
		return &dimse.StatusError{Status: dimse.StatusOutOfResources, Comment: "told to fail"}
	}
	o := &Object{SOPClassUID: r.SOPClassUID, SOPInstanceUID: r.SOPInstanceUID, TransferSyntaxUID: r.TransferSyntaxUID, Data: b, MoveOriginator: r.Command.MoveOriginatorAET}
	if ts := dicom.LookupTransferSyntax(r.TransferSyntaxUID); dicom.IsUncompressed(ts) {
		o.DS, _ = dicom.ReadDataSet(bytes.NewReader(b), ts, int64(len(b))+1)
	}
	a.mu.Lock()
	a.put(o)
	a.mu.Unlock()
	return nil
}

var levelKey = map[string]dicom.Tag{
	"PATIENT": dicom.PatientID, "STUDY": dicom.StudyInstanceUID,
	"SERIES": dicom.SeriesInstanceUID, "IMAGE": dicom.SOPInstanceUID,
}

// matches applies single-value, universal and '*' wildcard matching of
// every non-empty key of the identifier (except the level).
func matches(o *Object, id *dicom.DataSet) bool {
	if o.DS == nil {
		return false
	}
	for _, e := range id.Elements {
		if e.Tag == dicom.QueryRetrieveLevel || e.Tag == dicom.SpecificCharacterSet || e.IsSequence() {
			continue
		}
		want := id.String(e.Tag)
		if want == "" || want == "*" {
			continue
		}
		got := o.DS.String(e.Tag)
		if strings.Contains(want, `\`) {
			ok := false
			for _, w := range strings.Split(want, `\`) {
				ok = ok || w == got
			}
			if !ok {
				return false
			}
			continue
		}
		if strings.HasSuffix(want, "*") {
			if !strings.HasPrefix(strings.ToUpper(got), strings.ToUpper(strings.TrimSuffix(want, "*"))) {
				return false
			}
			continue
		}
		if got != want {
			return false
		}
	}
	return true
}

// Find implements dimse.Finder: one match per distinct value of the
// level's unique key, holding the requested keys.
func (a *Archive) Find(ctx context.Context, r *dimse.FindRequest, emit func(*dicom.DataSet) error) error {
	if a.PanicFind {
		panic("told to panic")
	}
	level := strings.TrimSpace(r.Identifier.String(dicom.QueryRetrieveLevel))
	key, ok := levelKey[level]
	if !ok {
		return &dimse.StatusError{Status: dimse.StatusDataSetMismatch, Comment: "bad Query/Retrieve Level " + level, Offending: []uint32{uint32(dicom.QueryRetrieveLevel)}}
	}
	seen := map[string]bool{}
	var out []*dicom.DataSet
	for _, o := range a.Objects() {
		if !matches(o, r.Identifier) {
			continue
		}
		k := o.DS.String(key)
		if seen[k] {
			continue
		}
		seen[k] = true
		m := &dicom.DataSet{}
		for _, e := range r.Identifier.Elements {
			if e.Tag == dicom.QueryRetrieveLevel {
				m.Put(e)
				continue
			}
			if v := o.DS.Get(e.Tag); v != nil {
				m.Put(v)
			} else {
				m.Put(&dicom.Element{Tag: e.Tag, VR: e.VR})
			}
		}
		out = append(out, m)
	}
	n := a.FindRepeat
	if n < 1 {
		n = 1
	}
	for i := 0; i < n; i++ {
		for _, m := range out {
			if a.FindDelay > 0 {
				select {
				case <-time.After(a.FindDelay):
				case <-ctx.Done():
				}
			}
			if ctx.Err() != nil {
				a.FindCancelled.Add(1)
				return ctx.Err()
			}
			if err := emit(m); err != nil {
				if ctx.Err() != nil {
					a.FindCancelled.Add(1)
				}
				return err
			}
		}
	}
	return nil
}

// Retrieve implements dimse.Retriever: the objects matching the
// identifier's keys.
func (a *Archive) Retrieve(ctx context.Context, r *dimse.RetrieveRequest) ([]dimse.Instance, error) {
	var out []dimse.Instance
	for _, o := range a.Objects() {
		if !matches(o, r.Identifier) {
			continue
		}
		o := o
		out = append(out, dimse.Instance{SOPClassUID: o.SOPClassUID, SOPInstanceUID: o.SOPInstanceUID, TransferSyntaxUID: o.TransferSyntaxUID,
			Open: func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(o.Data)), nil }})
	}
	return out, nil
}

// Destination implements dimse.Retriever.
func (a *Archive) Destination(ctx context.Context, r *dimse.RetrieveRequest) (string, error) {
	ae := r.MoveDestination
	if addr, ok := a.Destinations[ae]; ok {
		return addr, nil
	}
	return "", fmt.Errorf("%q: %w", ae, dimse.ErrUnknownDestination)
}

// Server is a loopback DIMSE server for an Archive.
type Server struct {
	Addr string
	ln   net.Listener
	wg   sync.WaitGroup
}

// Options tune a Server.
type Options struct {
	AETitle string // default "WARD"
	// StorageSyntaxes, when set, are the only transfer syntaxes accepted
	// for storage (preference order); otherwise any known syntax in the
	// peer's order.
	StorageSyntaxes []string
	// NoSCPRole refuses the SCP role (C-GET) for storage SOP classes.
	NoSCPRole bool
	// Requestor configures C-MOVE sub-associations.
	Requestor  assoc.Config
	Dispatcher func(*dimse.Dispatcher)
	// IdleTimeout of the served associations; 0 means 30 s.
	IdleTimeout time.Duration
}

// Start serves a on a loopback port until Close.
func Start(a *Archive, opt Options) (*Server, error) {
	if opt.AETitle == "" {
		opt.AETitle = "WARD"
	}
	if opt.IdleTimeout == 0 {
		opt.IdleTimeout = 30 * time.Second
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	native := []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}
	neg := &assoc.Acceptor{
		AETitle: opt.AETitle,
		TransferSyntaxes: func(rq *pdu.AssociateRQ, remote net.Addr, abstract string) ([]string, func(string) bool, bool) {
			switch {
			case abstract == dimse.VerificationSOPClass || dimse.QRCommand(abstract) != 0:
				return native, nil, true
			case dicom.IsStorageSOPClass(abstract):
				if opt.StorageSyntaxes != nil {
					return opt.StorageSyntaxes, nil, true
				}
				return nil, func(ts string) bool { return dicom.LookupTransferSyntax(ts) != nil }, true
			}
			return nil, nil, false
		},
		SCPRole: func(abstract string) bool { return !opt.NoSCPRole && dicom.IsStorageSOPClass(abstract) },
	}
	d := &dimse.Dispatcher{Handlers: dimse.Handlers{Echo: a, Store: a, Find: a, Retrieve: a}, Requestor: opt.Requestor}
	if opt.Dispatcher != nil {
		opt.Dispatcher(d)
	}
	s := &Server{Addr: ln.Addr().String(), ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				as, err := assoc.Serve(conn, assoc.Config{AETitle: opt.AETitle, IdleTimeout: opt.IdleTimeout}, neg)
				if err != nil {
					return
				}
				_ = d.Serve(context.Background(), as)
			}()
		}
	}()
	return s, nil
}

// Close stops accepting and waits for the associations to end.
func (s *Server) Close() {
	s.ln.Close()
	s.wg.Wait()
}

// WriteAll writes every object of a into dir as Part 10 files named by
// SOP Instance UID and returns the paths.
func WriteAll(a *Archive, dir string) ([]string, error) {
	var paths []string
	for _, o := range a.Objects() {
		p := filepath.Join(dir, o.SOPInstanceUID+".dcm")
		if err := o.WriteFile(p); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}
