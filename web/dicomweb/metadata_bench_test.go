package dicomweb_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/web"
	"github.com/ward-pacs/ward/web/dicomweb"
)

// discard is a ResponseWriter that counts and drops the body.
type discard struct {
	h http.Header
	n int64
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) WriteHeader(int)             {}
func (d *discard) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }

// BenchmarkSeriesMetadataWarm: the metadata of a 1,000-instance series
// (CT_small.dcm, each with its own SOP Instance UID), every instance's
// JSON kept in the index: one request per iteration through the whole
// web handler (authentication, routing, the index query, the BulkDataURI
// substitution, the JSON written). The target is under 100 ms.
func BenchmarkSeriesMetadataWarm(b *testing.B) { benchSeriesMetadata(b, false) }

// BenchmarkSeriesMetadataCold: the same with nothing kept (an index
// without the capability): every request reads the 1,000 objects (from
// the page cache).
func BenchmarkSeriesMetadataCold(b *testing.B) { benchSeriesMetadata(b, true) }

func benchSeriesMetadata(b *testing.B, cold bool) {
	const n = 1000
	m := newMetaServer(b, cold)
	p := filepath.Join(pydicomData, "test_files/CT_small.dcm")
	if _, err := os.Stat(p); err != nil {
		b.Skipf("%s missing", p)
	}
	meta, rc, err := dicom.OpenFile(p)
	if err != nil {
		b.Fatal(err)
	}
	ds, err := dicom.ReadDataSet(rc, dicom.LookupTransferSyntax(meta.TransferSyntaxUID), 1<<26)
	rc.Close()
	if err != nil {
		b.Fatal(err)
	}
	ts := dicom.LookupTransferSyntax(meta.TransferSyntaxUID)
	ds.Set(dicom.SeriesInstanceUID, "1.2.826.0.1.3680043.10.1234.99.2")
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := 0
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				mu.Lock()
				uid := fmt.Sprintf("1.2.826.0.1.3680043.10.1234.99.3.%d", i)
				ds.Set(dicom.SOPInstanceUID, uid)
				ds.Set(dicom.InstanceNumber, fmt.Sprint(i+1))
				raw, err := ds.Bytes(ts)
				mu.Unlock()
				if err == nil {
					_, err = m.ar.Store(context.Background(), &archive.StoreRequest{SOPClassUID: ds.String(dicom.SOPClassUID),
						SOPInstanceUID: uid, TransferSyntaxUID: ts.UID, Data: bytes.NewReader(raw)})
				}
				if err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	if errs > 0 {
		b.Fatalf("%d stores failed", errs)
	}
	m.ar.Close() // the metadata computed after each store is kept
	study := ds.String(dicom.StudyInstanceUID)
	url := "/dicom-web/studies/" + study + "/series/1.2.826.0.1.3680043.10.1234.99.2/metadata"
	// Whatever the after-store queue left is kept by a first request.
	ar := &archive.Archive{Index: m.idx, Blobs: m.ar.Blobs, SkipMetadataAfterStore: true}
	if cold {
		caps := store.Resolve(m.idx, m.ar.Blobs)
		caps.MetadataKeeper = nil
		ar.Caps = &caps
	}
	if err := ar.Open(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer ar.Close()
	h := web.New(web.Config{Authenticator: viewer{}})
	dicomweb.Register(h, ar, dicomweb.Options{})
	serve := func() *discard {
		req := httptest.NewRequest("GET", url, nil)
		req.Header.Set("Accept", "application/dicom+json")
		d := &discard{h: http.Header{}}
		h.ServeHTTP(d, req)
		return d
	}
	serve()
	kept := 0
	q := &store.Query{Level: store.LevelSeries, WithMetadata: true, Keys: []store.Key{{Attribute: "SeriesInstanceUID", Value: "1.2.826.0.1.3680043.10.1234.99.2"}}}
	if err := m.idx.Instances(context.Background(), q, func(in *store.Instance) error {
		if in.Metadata != nil {
			kept++
		}
		return nil
	}); err != nil || kept != n && !cold {
		b.Fatalf("%d of %d instances' metadata kept: %v", kept, n, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var bytesOut int64
	for i := 0; i < b.N; i++ {
		bytesOut = serve().n
	}
	b.ReportMetric(float64(bytesOut), "bytes/answer")
}
