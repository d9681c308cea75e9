package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

// raceRounds is how many times the same object is stored through both
// nodes at once.
const raceRounds = 25

// TestSameObjectTwoNodes: in each round, two versions of one new object
// (same SOP Instance UID, different Image Comments) are sent at the same
// instant through node A and node B, each on an association opened
// beforehand. With on_duplicate = "replace" (the default) both are
// acknowledged and one whole version remains; with "reject" exactly one
// is acknowledged, the other refused as a duplicate (0x0111), and the one
// acknowledged is what remains. Either way the store ends with one
// instance per round, no blob pending or unreferenced.
func TestSameObjectTwoNodes(t *testing.T) {
	for _, policy := range []string{"replace", "reject"} {
		t.Run(policy, func(t *testing.T) {
			c := newCluster(t, clusterOpts{storage: fmt.Sprintf("on_duplicate = %q", policy)})
			a, b := c.nodes[0], c.nodes[1]
			for i := range raceRounds {
				prefix := fmt.Sprintf("1.2.826.0.1.3680043.10.1432.18.5.%d", i)
				v1, v2 := makeObjects(t, prefix, 1, "v1")[0], makeObjects(t, prefix, 1, "v2")[0]
				r1, r2 := storeAtOnce(t, a.Addr(), v1, b.Addr(), v2)
				var want []*object
				switch policy {
				case "replace":
					if !r1.acked() || !r2.acked() {
						t.Fatalf("round %d: replace policy, yet A answered %v and B %v", i, r1, r2)
					}
					want = []*object{v1, v2}
				case "reject":
					if r1.acked() == r2.acked() {
						t.Fatalf("round %d: reject policy, yet A answered %v and B %v (want exactly one stored)", i, r1, r2)
					}
					other := r2
					want = []*object{v1}
					if r2.acked() {
						other, want = r1, []*object{v2}
					}
					if other.err != nil || other.status != dimse.StatusDuplicateSOPInstance {
						t.Fatalf("round %d: the second store of one object answered %v, want 0x0111 (Duplicate SOP Instance)", i, other)
					}
				}
				got := retrieveOne(t, c.lbAddr(), v1)
				if !bytes.Equal(got, want[0].dataSet) && (len(want) == 1 || !bytes.Equal(got, want[1].dataSet)) {
					t.Fatalf("round %d: the object retrieved (%d bytes) is none of the versions acknowledged", i, len(got))
				}
			}
			c.stopAll(t)
			c.checkConsistent(t, nil, raceRounds)
		})
	}
}

// storeAtOnce opens an association to each address, then sends o1 on the
// first and o2 on the second at the same instant.
func storeAtOnce(t *testing.T, addr1 string, o1 *object, addr2 string, o2 *object) (result, result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pcs, _ := storageContexts([]*object{o1}, false)
	cl1, err := dial(ctx, addr1, pcs)
	if err != nil {
		t.Fatal(err)
	}
	defer release(cl1)
	cl2, err := dial(ctx, addr2, pcs)
	if err != nil {
		t.Fatal(err)
	}
	defer release(cl2)
	start := make(chan struct{})
	var r1, r2 result
	var wg sync.WaitGroup
	for _, x := range []struct {
		cl *dimse.Client
		o  *object
		r  *result
	}{{cl1, o1, &r1}, {cl2, o2, &r2}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			x.r.obj = x.o
			x.r.status, x.r.comment, x.r.err = storeOne(ctx, x.cl, x.o)
		}()
	}
	close(start)
	wg.Wait()
	return r1, r2
}

// retrieveOne C-GETs one object (by its UIDs) through addr and returns
// its data set; it fails the test unless exactly one object came.
func retrieveOne(t *testing.T, addr string, o *object) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, res, err := cget(ctx, addr, []*object{o}, "IMAGE", "StudyInstanceUID", studyOf(o), "SeriesInstanceUID", seriesOf(o), "SOPInstanceUID", o.uid)
	if err != nil || len(got) != 1 || res.Failed() {
		t.Fatalf("C-GET of %s through %s: %d objects, %+v, %v", o.uid, addr, len(got), res, err)
	}
	return got[o.uid]
}

// studyOf and seriesOf are the UIDs makeObjects gave o (its UID is
// PREFIX.N, its study PREFIX.0 and its series PREFIX.0.(N/10+1)).
func studyOf(o *object) string  { return o.uid[:lastDot(o.uid)] + ".0" }
func seriesOf(o *object) string { return studyOf(o) + ".1" }

func lastDot(s string) int { return bytes.LastIndexByte([]byte(s), '.') }

// TestRetrieveDuringReplace: while one object is replaced again and
// again through both nodes (two versions in turn), C-GETs of it through
// HAProxy each return one whole version, never a mix, an empty answer or
// a failure: for a small object (read from S3 in one request) and a
// large one (2 MiB of pixel data, read in several ranged requests).
func TestRetrieveDuringReplace(t *testing.T) {
	for _, large := range []bool{false, true} {
		name := "small"
		if large {
			name = "large"
		}
		t.Run(name, func(t *testing.T) { retrieveDuringReplace(t, large) })
	}
}

func retrieveDuringReplace(t *testing.T, large bool) {
	c := newCluster(t, clusterOpts{})
	a, b := c.nodes[0], c.nodes[1]
	const prefix = "1.2.826.0.1.3680043.10.1432.18.6"
	v1, v2 := makeObjects(t, prefix, 1, "v1")[0], makeObjects(t, prefix, 1, "v2")[0]
	if large {
		v1, v2 = enlarge(t, v1, 1), enlarge(t, v2, 2)
	}
	if r := storeOnce(context.Background(), a.Addr(), v1); !r.acked() {
		t.Fatalf("storing %s: %v", v1.uid, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var replaces, retrieves atomic.Int64
	var wg sync.WaitGroup
	for i, addr := range []string{a.Addr(), b.Addr()} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pcs, _ := storageContexts([]*object{v1}, false)
			cl, err := dial(context.Background(), addr, pcs)
			if err != nil {
				t.Error(err)
				return
			}
			defer release(cl)
			for n := 0; ctx.Err() == nil; n++ {
				o := v1
				if (n+i)%2 == 0 {
					o = v2
				}
				st, comment, err := storeOne(context.Background(), cl, o)
				if err != nil || st != dimse.StatusSuccess {
					t.Errorf("replacing through %s: 0x%04X %q %v", addr, st, comment, err)
					return
				}
				replaces.Add(1)
			}
		}()
	}
	var bad []string
	var mu sync.Mutex
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pcs, roles := storageContexts([]*object{v1}, true)
			pcs = append(pcs, pdu.PresentationContext{ID: byte(2*len(pcs) + 1), AbstractSyntax: dimse.StudyRootGet, TransferSyntaxes: explicitTS})
			cl, err := dial(context.Background(), c.lbAddr(), pcs, roles...)
			if err != nil {
				t.Error(err)
				return
			}
			defer release(cl)
			pc, _ := cl.FindContext(dimse.StudyRootGet, "")
			for ctx.Err() == nil {
				g := &getter{got: map[string][]byte{}}
				res, err := cl.Get(context.Background(), pc.ID, identifier("IMAGE", "StudyInstanceUID", studyOf(v1), "SeriesInstanceUID", seriesOf(v1), "SOPInstanceUID", v1.uid), g, nil)
				retrieves.Add(1)
				got, ok := g.got[v1.uid]
				switch {
				case err != nil:
					mu.Lock()
					bad = append(bad, "C-GET failed: "+err.Error())
					mu.Unlock()
					return
				case !ok || len(g.got) != 1:
					mu.Lock()
					bad = append(bad, fmt.Sprintf("C-GET returned %d objects (final %+v)", len(g.got), res.Final))
					mu.Unlock()
				case !bytes.Equal(got, v1.dataSet) && !bytes.Equal(got, v2.dataSet):
					mu.Lock()
					bad = append(bad, fmt.Sprintf("C-GET returned %d bytes that are neither version", len(got)))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d replaces, %d retrieves", replaces.Load(), retrieves.Load())
	if len(bad) > 0 {
		t.Errorf("%d of %d retrieves during replaces did not return one whole object, e.g. %s", len(bad), retrieves.Load(), bad[0])
	}
	if replaces.Load() < 10 || retrieves.Load() < 10 {
		t.Errorf("too little overlap to show anything: %d replaces, %d retrieves", replaces.Load(), retrieves.Load())
	}
	c.stopAll(t)
	c.checkConsistent(t, nil, 1)
}

// enlarge gives o 1024×1024 16-bit pixels (2 MiB, each byte fill) in
// place of its own, and returns it.
func enlarge(t *testing.T, o *object, fill byte) *object {
	t.Helper()
	return enlargeTo(t, o, fill, 1024)
}

// enlargeTo gives o side×side 16-bit pixels (each byte fill) in place of
// its own, and returns it.
func enlargeTo(t *testing.T, o *object, fill byte, side int) *object {
	t.Helper()
	meta, rc, err := dicom.OpenFile(o.path)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := dicom.ReadDataSet(rc, dicom.LookupTransferSyntax(meta.TransferSyntaxUID), 1<<24)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if ds.String(dicom.SOPClassUID) != "1.2.840.10008.5.1.4.1.1.2" {
		t.Fatalf("%s is not a CT image", o.path)
	}
	us := []byte{byte(side), byte(side >> 8)}
	ds.Put(&dicom.Element{Tag: dicom.Rows, VR: "US", Value: us})
	ds.Put(&dicom.Element{Tag: dicom.Columns, VR: "US", Value: us})
	ds.Put(&dicom.Element{Tag: dicom.PixelData, VR: "OW", Value: bytes.Repeat([]byte{fill}, side*side*2)})
	body, err := ds.Bytes(dicom.ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if err := dicom.WriteFileHeader(&file, &dicom.FileMeta{MediaStorageSOPClassUID: o.sopClass,
		MediaStorageSOPInstanceUID: o.uid, TransferSyntaxUID: dicom.ExplicitVRLittleEndian.UID}); err != nil {
		t.Fatal(err)
	}
	file.Write(body)
	if err := os.WriteFile(o.path, file.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return &object{path: o.path, uid: o.uid, sopClass: o.sopClass, dataSet: body}
}
