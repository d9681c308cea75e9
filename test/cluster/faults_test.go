package cluster

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/test/harness"
)

// TestNodeKilled: two storescu associations through HAProxy (leastconn:
// one on each node); node A is killed with SIGKILL in the middle. Every
// object acknowledged on A is retrieved byte-equal through B; the
// association on B goes on to the end; new associations and DICOMweb
// requests through HAProxy reach B at once. A restarts while B ingests:
// it has finished its own unfinished work (its pending objects) before
// it serves, and B's ingest loses nothing to it; HAProxy takes A back.
// Once every node has stopped, every acknowledged object is in the store
// as sent, no blob is pending or unreferenced and no multipart upload is
// left in the bucket.
func TestNodeKilled(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	a, b := c.nodes[0], c.nodes[1]
	const prefix = "1.2.826.0.1.3680043.10.1432.18.2"
	study := prefix + ".0"
	objs := makeObjects(t, prefix, 900, "")
	first, second, third := objs[:400], objs[400:800], objs[800:]
	tok := c.webToken(t)
	lbPort := strconv.Itoa(c.lb.DIMSEPort)

	// Node A is killed once each association has had 40 objects
	// acknowledged, in the middle of both.
	var n1, n2 atomic.Int64
	ready := make(chan struct{})
	var once sync.Once
	check := func() {
		if n1.Load() >= 40 && n2.Load() >= 40 {
			once.Do(func() { close(ready) })
		}
	}
	started := make(chan struct{})
	var startOnce sync.Once
	s1 := startStorescu(t, lbPort, paths(first), func(n int) {
		n1.Store(int64(n))
		startOnce.Do(func() { close(started) })
		check()
	})
	// The second association is opened once the first is in use, so
	// that leastconn sends it to the other node.
	waitChan(t, started, "storescu 1's first acknowledgement")
	s2 := startStorescu(t, lbPort, paths(second), func(n int) { n2.Store(int64(n)); check() })
	waitChan(t, ready, "40 acknowledgements on each association")
	st := c.lb.States(t)
	if st[harness.HAProxyDIMSE+"/node-a"].Current != 1 || st[harness.HAProxyDIMSE+"/node-b"].Current != 1 {
		t.Fatalf("the two associations are not one on each node: %+v", st)
	}
	a.Kill()

	err1, err2 := s1.wait(t, 60*time.Second), s2.wait(t, 60*time.Second)
	victim, victimFiles, survivor, survivorFiles := s1, first, s2, second
	if err1 == nil {
		victim, victimFiles, survivor, survivorFiles = s2, second, s1, first
		if err2 == nil {
			t.Fatalf("both storescu runs succeeded though node A was killed under one of them")
		}
	} else if err2 != nil {
		t.Fatalf("both storescu runs failed; node B did not keep serving:\n%s\n%s", s1.String(), s2.String())
	}
	if got := len(survivor.ackedObjects(survivorFiles)); got != len(survivorFiles) {
		t.Errorf("the association on node B: %d of %d acknowledged:\n%s", got, len(survivorFiles), survivor.String())
	}
	lost := victim.ackedObjects(victimFiles)
	t.Logf("node A was killed after acknowledging %d of %d objects", len(lost), len(victimFiles))
	if len(lost) == len(victimFiles) {
		t.Fatal("node A acknowledged every object before it was killed: the kill came too late to test anything")
	}
	checkRetrieved(t, b.Addr(), study, lost)
	leftA := c.pendingMarkers(t, "node-a")
	t.Logf("node A left %d pending markers in the bucket", len(leftA))

	// New associations through HAProxy go to B (A's port refuses, so
	// HAProxy redispatches, and soon marks A down).
	acked := map[string]bool{}
	for _, o := range lost {
		acked[o.uid] = true
	}
	var rest []*object
	for _, o := range victimFiles {
		if !acked[o.uid] {
			rest = append(rest, o)
		}
	}
	s3 := startStorescu(t, lbPort, paths(rest), nil)
	if err := s3.wait(t, 60*time.Second); err != nil || len(s3.ackedObjects(rest)) != len(rest) {
		t.Fatalf("resending the %d objects node A did not acknowledge through HAProxy: %v\n%s", len(rest), err, s3.String())
	}
	c.lb.WaitState(t, harness.HAProxyDIMSE, "node-a", "DOWN", 10*time.Second)
	// DICOMweb through HAProxy goes on too (to B).
	code, body := httpGet(t, "http://127.0.0.1:"+strconv.Itoa(c.lb.HTTPPort)+"/dicom-web/studies/"+study+"/instances?limit=1", tok, "application/dicom+json")
	if code != 200 {
		t.Errorf("QIDO-RS through HAProxy with node A killed: %d %s", code, body)
	}

	// A restarts while B ingests: its recovery must leave B's work alone.
	s4 := startStorescu(t, strconv.Itoa(b.DICOMPort), paths(third), nil)
	a.Start(t)
	// A's recovery ran before it served: nothing of its own is pending.
	if left := c.pendingMarkers(t, "node-a"); len(left) != 0 {
		t.Errorf("node A serves again, yet %d of its pending markers are left, e.g. %s", len(left), left[0])
	}
	if err := s4.wait(t, 60*time.Second); err != nil || len(s4.ackedObjects(third)) != len(third) {
		t.Fatalf("the ingest on node B while node A restarted: %v\n%s", err, s4.String())
	}
	c.lb.WaitState(t, harness.HAProxyDIMSE, "node-a", "UP", 20*time.Second)
	checkRetrieved(t, a.Addr(), study, objs)

	c.stopAll(t)
	c.checkConsistent(t, objs, int64(len(objs)))
	c.checkNoUploads(t)
}

// pendingMarkers lists the keys under PREFIX/pending/NODE/ and
// PREFIX/open/NODE/ in the bucket: the blobs the node was writing, or
// committed and has not published yet, and its epochs with such blobs
// (store/s3blob's layout).
func (c *cluster) pendingMarkers(t *testing.T, node string) []string {
	t.Helper()
	bucket, prefix, _ := strings.Cut(strings.TrimPrefix(c.blobs, "s3://"), "/")
	prefix, _, _ = strings.Cut(prefix, "?")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var keys []string
	for _, dir := range []string{"/pending/", "/open/"} {
		p := s3.NewListObjectsV2Paginator(c.s3.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix + dir + node + "/")})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatalf("listing the pending markers of %s: %v", node, err)
			}
			for _, o := range page.Contents {
				keys = append(keys, aws.ToString(o.Key))
			}
		}
	}
	return keys
}

// checkNoUploads checks that no multipart upload is left unfinished in
// the bucket.
func (c *cluster) checkNoUploads(t *testing.T) {
	t.Helper()
	bucket, _, _ := strings.Cut(strings.TrimPrefix(c.blobs, "s3://"), "/")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := c.s3.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatalf("listing multipart uploads: %v", err)
	}
	if len(out.Uploads) != 0 {
		t.Errorf("%d multipart uploads left unfinished in the bucket, e.g. %s", len(out.Uploads), aws.ToString(out.Uploads[0].Key))
	}
}

// TestPostgresRestarted: PostgreSQL stops while Ward's SCU stores through
// node A, one object after another, and starts again 3 s later. While it
// is down each store is refused with Refused: Out of Resources (0xA700)
// and a comment saying to try again, on the same association (no abort); after it is back,
// stores succeed again without restarting Ward; every acknowledged
// object is retrieved byte-equal through node B, and after the refused
// ones are sent again the store is consistent.
func TestPostgresRestarted(t *testing.T) {
	c := newCluster(t, clusterOpts{ownPG: true})
	a, b := c.nodes[0], c.nodes[1]
	const prefix = "1.2.826.0.1.3680043.10.1432.18.3"
	study := prefix + ".0"
	objs := makeObjects(t, prefix, 600, "")
	res, ft := faultIngest(t, a.Addr(), objs, 3*time.Second, func() {
		if err := c.pg.Stop(); err != nil {
			t.Fatalf("stopping PostgreSQL: %v", err)
		}
	}, func() {
		if err := c.pg.Start(); err != nil {
			t.Fatalf("starting PostgreSQL: %v", err)
		}
	})
	acked, refused, afterResults := checkFault(t, "PostgreSQL was down", res, ft)
	ok := 0
	for _, r := range afterResults {
		if r.acked() {
			ok++
		}
	}
	if ok == 0 || !afterResults[len(afterResults)-1].acked() {
		t.Fatalf("stores did not resume after PostgreSQL came back: %d of %d acknowledged after", ok, len(afterResults))
	}
	checkRetrieved(t, b.Addr(), study, acked)
	for _, o := range refused {
		if r := storeOnce(context.Background(), b.Addr(), o); !r.acked() {
			t.Fatalf("sending %s again: %v", o.uid, r)
		}
	}
	c.stopAll(t)
	c.checkConsistent(t, objs, int64(len(objs)))
}

// TestS3Unreachable: versitygw is killed while Ward's SCU stores through
// node A, and started again 6 s later. Meanwhile each store fails with
// Refused: Out of Resources (0xA700) and a comment saying to try again,
// on the same association; no object that failed is in the index
// (nothing half-stored is visible), and once S3 is back stores succeed
// again. After the failed ones are sent again, and every node restarted
// (what a node could not publish while S3 was away it publishes at its
// next start) and stopped, the store is consistent: no pending or
// unreferenced blob, no multipart upload left.
func TestS3Unreachable(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	a, b := c.nodes[0], c.nodes[1]
	const prefix = "1.2.826.0.1.3680043.10.1432.18.4"
	study := prefix + ".0"
	objs := makeObjects(t, prefix, 600, "")
	// Away for 6 s: longer than a store's own retries (about 3 s), so that
	// some fail rather than all succeeding once S3 is back.
	res, ft := faultIngest(t, a.Addr(), objs, 6*time.Second, c.s3.Stop, c.s3.Start)
	acked, failed, after := checkFault(t, "S3 was away", res, ft)
	if len(after) == 0 || !after[len(after)-1].acked() {
		t.Fatalf("stores did not resume once S3 was back (%d results after)", len(after))
	}
	checkRetrieved(t, b.Addr(), study, acked)

	// Nothing of a failed store is visible: no index row.
	st := c.openStore(t)
	for _, o := range failed {
		if _, err := st.Index.Get(context.Background(), o.uid); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s failed, yet the index has it (%v)", o.uid, err)
		}
	}
	for _, o := range failed {
		if r := storeOnce(context.Background(), b.Addr(), o); !r.acked() {
			t.Fatalf("sending %s again: %v", o.uid, r)
		}
	}
	// What a node could not finish while S3 was away (publishing the
	// objects it stored just before) it finishes at its next start.
	c.stopAll(t)
	for _, nd := range c.nodes {
		nd.Start(t)
	}
	c.stopAll(t)
	c.checkConsistent(t, objs, int64(len(objs)))
	c.checkNoUploads(t)
}

// checkFault sorts the results of a faultIngest by acknowledgement, and
// checks that while the fault held (what: "S3 was away") each store was
// refused with 0xA700 and a comment saying to try again, on the same
// association, and that at least one was; it returns the objects
// acknowledged and refused, and the results after the fault was lifted.
func checkFault(t *testing.T, what string, res []result, ft faultTimes) (acked, refused []*object, after []result) {
	t.Helper()
	during, held, after := ft.split(res)
	for _, r := range res {
		if r.acked() {
			acked = append(acked, r.obj)
		} else {
			refused = append(refused, r.obj)
		}
	}
	t.Logf("%d acknowledged, %d refused; %d results while %s, %d after", len(acked), len(refused), len(during), what, len(after))
	statusRefused := 0
	for _, r := range during {
		switch {
		case r.acked():
		case r.err != nil:
			t.Errorf("%s while %s: %v (want a refusal with a status, on the same association)", r.obj.uid, what, r)
		case r.status != dimse.StatusOutOfResources || !strings.Contains(r.comment, "try again"):
			t.Errorf("%s while %s: %v, want 0xA700 (Refused: Out of Resources) with a comment saying to try again", r.obj.uid, what, r)
		default:
			statusRefused++
		}
	}
	if statusRefused == 0 {
		t.Fatalf("no store was refused while %s (%d results then)", what, len(during))
	}
	if n := len(held) - len(refusals(held)); n > 1 { // one may have been stored just before the fault
		t.Errorf("%d stores acknowledged while %s", n, what)
	}
	t.Logf("while %s: %v", what, firstRefusal(during))
	return acked, refused, after
}

// faultIngest stores objs at addr with Ward's SCU, one after another
// (pausing 50 ms after each that is not acknowledged). Once 50 are
// acknowledged it calls stop, waits for outage and calls start. It
// returns every result, with the fault's times.
func faultIngest(t *testing.T, addr string, objs []*object, outage time.Duration, stop, start func()) ([]result, faultTimes) {
	t.Helper()
	fifty := make(chan struct{})
	var faulted atomic.Bool
	acks := 0
	done := make(chan []result)
	go func() {
		done <- storeAll(context.Background(), addr, objs, 50*time.Millisecond, func(r result) {
			if r.acked() {
				if acks++; acks == 50 {
					close(fifty)
				}
			}
			if acks >= 50 && !faulted.Load() {
				// Slow down until the fault is in place.
				time.Sleep(5 * time.Millisecond)
			}
		})
	}()
	select {
	case <-fifty:
	case all := <-done:
		t.Fatalf("the ingest ended before 50 objects were acknowledged: %v", firstRefusal(all))
	}
	var ft faultTimes
	stop()
	ft.from = time.Now()
	faulted.Store(true)
	time.Sleep(outage)
	ft.until = time.Now()
	start()
	ft.back = time.Now()
	return <-done, ft
}

// faultTimes are when a fault began (stop returned), when it was being
// lifted (start called) and when it was over (start returned).
type faultTimes struct{ from, until, back time.Time }

// split sorts results by when they were answered: during the fault
// (before start returned: a store waiting on the fault may be answered
// after it was lifted), while the fault held for sure (before start was
// called), and after.
func (ft faultTimes) split(rs []result) (during, held, after []result) {
	for _, r := range rs {
		switch {
		case r.at.Before(ft.from):
		case r.at.Before(ft.back):
			during = append(during, r)
			if r.at.Before(ft.until) {
				held = append(held, r)
			}
		default:
			after = append(after, r)
		}
	}
	return during, held, after
}

// firstRefusal is the first result of rs that is not an
// acknowledgement.
func firstRefusal(rs []result) result {
	for _, r := range rs {
		if !r.acked() {
			return r
		}
	}
	return result{}
}

// refusals are the results of rs that are not acknowledgements.
func refusals(rs []result) []result {
	var out []result
	for _, r := range rs {
		if !r.acked() {
			out = append(out, r)
		}
	}
	return out
}

// waitChan waits up to 60 s for ch to close.
func waitChan(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(60 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestNodeKilledMidUpload: node A is killed while a 24 MiB object it
// receives is being written to S3 as a multipart upload, and restarted
// while node B is in the middle of a multipart upload of its own (both
// objects trickle in over DIMSE, B's held after 12 MiB until A serves
// again, so that the uploads stay open). A's
// recovery aborts its own upload and leaves B's alone: B's object is
// acknowledged and retrieved byte-equal through A, the one A never
// acknowledged is nowhere, and no upload or pending object is left.
func TestNodeKilledMidUpload(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	a, b := c.nodes[0], c.nodes[1]
	const prefix = "1.2.826.0.1.3680043.10.1432.18.7"
	objs := makeObjects(t, prefix, 4, "")
	big := func(i int) *object { return enlargeTo(t, objs[i], byte(i+1), 3584) } // CT: 24.5 MiB
	onA, onB := big(0), big(2)

	errA := make(chan result, 1)
	go func() { errA <- trickleStore(a.Addr(), onA, nil) }()
	c.waitUpload(t, "node-a")
	a.Kill()
	if r := <-errA; r.acked() {
		t.Fatalf("node A acknowledged the object it was killed receiving")
	}

	// B's object stops coming after 12 MiB (one part sent, the upload
	// open) until A has restarted.
	resB := make(chan result, 1)
	gate := make(chan struct{})
	go func() { resB <- trickleStore(b.Addr(), onB, gate) }()
	c.waitUpload(t, "node-b")
	a.Start(t)
	if left := c.pendingMarkers(t, "node-a"); len(left) != 0 {
		t.Errorf("node A serves again, yet %d of its pending markers are left", len(left))
	}
	close(gate)
	if r := <-resB; !r.acked() {
		t.Fatalf("node B's store during node A's restart: %v", r)
	}
	got := retrieveOne(t, a.Addr(), onB)
	if !bytes.Equal(got, onB.dataSet) {
		t.Fatalf("node B's object retrieved through node A: %d bytes, not the %d sent", len(got), len(onB.dataSet))
	}
	c.stopAll(t)
	c.checkConsistent(t, []*object{onB}, 1)
	c.checkNoUploads(t)
}

// trickleStore sends o to addr with Ward's SCU, its data set in 1 MiB
// pieces 100 ms apart; with gate, it stops after 12 MiB until gate is
// closed.
func trickleStore(addr string, o *object, gate <-chan struct{}) result {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pcs, _ := storageContexts([]*object{o}, false)
	r := result{obj: o}
	cl, err := dial(ctx, addr, pcs)
	if err != nil {
		r.err = err
		return r
	}
	defer release(cl)
	pc, ok := cl.FindContext(o.sopClass, dicom.ExplicitVRLittleEndian.UID)
	if !ok {
		r.err = errors.New("no context")
		return r
	}
	rsp, err := cl.Store(ctx, pc.ID, o.sopClass, o.uid, &slowReader{b: o.dataSet, chunk: 1 << 20, pause: 100 * time.Millisecond, gateAt: 12, gate: gate})
	if err != nil {
		r.err = err
		return r
	}
	r.status, r.comment = rsp.Status, rsp.ErrorComment
	return r
}

// slowReader reads b in chunks with a pause before each; with gate,
// it waits for gate to close before chunk number gateAt.
type slowReader struct {
	b      []byte
	chunk  int
	pause  time.Duration
	gateAt int
	gate   <-chan struct{}
	n      int // bytes of the current chunk read
	chunks int // chunks read whole
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	if s.n == s.chunk {
		s.chunks++
		if s.gate != nil && s.chunks == s.gateAt {
			<-s.gate
		}
		time.Sleep(s.pause)
		s.n = 0
	}
	n := min(len(p), len(s.b), s.chunk-s.n)
	copy(p, s.b[:n])
	s.b, s.n = s.b[n:], s.n+n
	return n, nil
}

// waitUpload waits up to 60 s until a multipart upload of an object of
// node (its keys end in ".NODE") is open in the bucket.
func (c *cluster) waitUpload(t *testing.T, node string) {
	t.Helper()
	bucket, _, _ := strings.Cut(strings.TrimPrefix(c.blobs, "s3://"), "/")
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := c.s3.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
		cancel()
		if err == nil {
			for _, u := range out.Uploads {
				if strings.Contains(aws.ToString(u.Key), "."+node) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no multipart upload of %s appeared (%v)", node, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
