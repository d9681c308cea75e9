package server

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

const ctImageStorage = "1.2.840.10008.5.1.4.1.1.2"

// syntheticCT is an explicit VR LE data set with a pixelBytes-long pixel
// data element; its SOP Instance UID is 1.2.826.0.1.3680043.10.1432.9.
// followed by a 10-digit counter that instance patches in place.
type syntheticCT struct {
	data   []byte
	uidOff int
}

const uidPrefix = "1.2.826.0.1.3680043.10.1432.9."

func newSyntheticCT(b testing.TB, pixelBytes int) *syntheticCT {
	ds := &dicom.DataSet{}
	ds.Set(dicom.SOPClassUID, ctImageStorage)
	ds.Set(dicom.SOPInstanceUID, uidPrefix+"0000000000")
	ds.Set(dicom.StudyInstanceUID, uidPrefix+"1")
	ds.Set(dicom.SeriesInstanceUID, uidPrefix+"2")
	ds.Set(dicom.PatientID, "BENCH-1")
	ds.Set(dicom.PatientName, "BENCH^PATIENT")
	ds.Set(dicom.StudyDate, "20260101")
	ds.Set(dicom.Modality, "CT")
	ds.Put(&dicom.Element{Tag: dicom.PixelData, VR: "OW", Value: make([]byte, pixelBytes)})
	var buf bytes.Buffer
	if err := dicom.WriteDataSet(&buf, ds, dicom.ExplicitVRLittleEndian); err != nil {
		b.Fatal(err)
	}
	off := bytes.Index(buf.Bytes(), []byte(uidPrefix+"0000000000"))
	if off < 0 {
		b.Fatal("uid not found")
	}
	return &syntheticCT{data: buf.Bytes(), uidOff: off + len(uidPrefix)}
}

// instance returns a copy with SOP Instance UID counter n.
func (s *syntheticCT) instance(n int) ([]byte, string) {
	d := append([]byte(nil), s.data...)
	digits := fmt.Sprintf("%010d", n)
	copy(d[s.uidOff:], digits)
	return d, uidPrefix + digits
}

// benchServer starts a server on a fresh data directory, its config
// changed by edits.
func benchServer(b *testing.B, edits ...func(*config.Config)) *Server {
	c := config.Default()
	c.DataDir = filepath.Join(b.TempDir(), "data")
	if d := os.Getenv("WARD_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		c.DataDir = dir
	}
	c.DICOM.Listen = "127.0.0.1:0"
	c.Web.Listen = "127.0.0.1:0"
	c.DICOM.LoopbackAnyAE = true
	for _, edit := range edits {
		edit(c)
	}
	s := &Server{Config: c}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Open(ctx); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	return s
}

func dialStore(b *testing.B, addr string) *dimse.Client {
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "BENCH", ApplicationContext: pdu.ApplicationContextName,
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian.UID}}}}
	a, err := assoc.Dial(context.Background(), "tcp", addr, assoc.Config{AETitle: "BENCH"}, rq)
	if err != nil {
		b.Fatal(err)
	}
	return dimse.NewClient(a)
}

// BenchmarkCStore measures C-STORE of a ~512 KB CT instance through the
// whole stack (association, DIMSE, streaming scan, fsync, index commit), with
// one association and with four. Set WARD_BENCH_DIR to put the data on a
// given filesystem (the default temporary directory may be tmpfs).
func BenchmarkCStore(b *testing.B) {
	for _, size := range []int{512 * 1024} {
		ct := newSyntheticCT(b, size)
		for _, par := range []int{1, 4} {
			b.Run(fmt.Sprintf("%dKB/assoc=%d", size/1024, par), func(b *testing.B) {
				benchCStore(b, benchServer(b), ct, par)
			})
		}
	}
}

// benchCStore stores b.N instances like ct into s over par associations
// at once, and checks they are indexed.
func benchCStore(b *testing.B, s *Server, ct *syntheticCT, par int) {
	clients := make([]*dimse.Client, par)
	for i := range clients {
		clients[i] = dialStore(b, s.Addr().String())
	}
	// Pre-build the instances outside the timer.
	objs := make([][]byte, b.N)
	uids := make([]string, b.N)
	for i := range objs {
		objs[i], uids[i] = ct.instance(i)
	}
	b.SetBytes(int64(len(ct.data)))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	for _, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= b.N {
					return
				}
				rsp, err := cl.Store(context.Background(), 1, ctImageStorage, uids[i], bytes.NewReader(objs[i]))
				if err != nil || rsp.Status != dimse.StatusSuccess {
					b.Errorf("store: %v %+v", err, rsp)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	for _, cl := range clients {
		cl.A.Release()
	}
	n, _ := s.Index().CountInstances(context.Background())
	if n != int64(b.N) {
		b.Fatalf("stored %d, sent %d", n, b.N)
	}
}
