// Package cluster checks the scale-out promises of issue 18 end to end:
// several real `ward serve` processes sharing one PostgreSQL index and one
// S3 bucket (versitygw), behind Debian's HAProxy (TCP mode for DIMSE, HTTP
// mode for DICOMweb, checks on /readyz), driven by DCMTK's tools and by
// Ward's own SCU (for a status per object), while nodes are killed with
// SIGKILL, PostgreSQL is stopped and started, versitygw is taken away,
// and the same object is stored through two nodes at once.
//
// After a fault, the store is opened from the test process through the
// store seam (store.Open with the postgres and s3 backends) and checked:
// every acknowledged object is indexed and its blob holds exactly the data
// set sent, and no blob is pending or unreferenced once every node has
// stopped.
//
// Locally a test skips when PostgreSQL, versitygw, HAProxy or DCMTK is
// missing; under CI=true that is a failure.
package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/store"
	_ "github.com/ward-pacs/ward/store/postgres" // "postgres": the shared index
	_ "github.com/ward-pacs/ward/store/s3blob"   // "s3": the shared blobs
	"github.com/ward-pacs/ward/test/harness"
)

// TestMain removes what the harness built (the ward binary) and stops the
// shared PostgreSQL cluster.
func TestMain(m *testing.M) { harness.Main(m) }

// scuAET is the calling AE title of the tests' SCUs (DCMTK and Ward's),
// registered on the cluster with every service.
const scuAET = "CLUSTERSCU"

// cluster is a test cluster: its PostgreSQL database, its bucket, the
// nodes and HAProxy in front of them.
type cluster struct {
	pg     *harness.Postgres
	s3     *harness.S3
	dsn    string // the index's URL
	blobs  string // the blobs' URL
	nodes  []*harness.Node
	lb     *harness.HAProxy
	health string // HAProxy's check: "/readyz"
}

// clusterOpts shape a test cluster.
type clusterOpts struct {
	nodes int
	// ownPG: a PostgreSQL cluster of the test's own, which it may stop
	// (else a database in the package's shared one).
	ownPG bool
	// storage is added to each node's [storage] table (e.g.
	// on_duplicate = "reject"); config to its ward.toml.
	storage, config string
}

// newCluster starts PostgreSQL (or takes a database in the shared one),
// versitygw with a bucket, the nodes one after the other, registers
// scuAET through the first node (in the shared index) and waits until
// every node admits it, then starts HAProxy in front of them with checks
// on /readyz and waits until every server is up.
func newCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	testci.RequireTool(t, "storescu", "echoscu")
	harness.RequireHAProxy(t)
	c := &cluster{health: "/readyz"}
	if o.ownPG {
		c.pg = harness.NewPostgres(t)
	} else {
		c.pg = harness.StartPostgres(t)
	}
	c.dsn = c.pg.NewDatabase(t)
	c.s3 = harness.StartS3(t)
	c.blobs = c.s3.URL(c.s3.Bucket(t), "ward")
	if o.nodes == 0 {
		o.nodes = 2
	}
	c.nodes = harness.StartCluster(t, o.nodes, harness.ClusterSpec{
		Index: c.dsn, Blobs: c.blobs, Env: c.s3.Env(), Storage: o.storage, Config: o.config,
	})
	c.nodes[0].CLI(t, "", "peer", "add", scuAET, "--host", "127.0.0.1", "--allow", "echo,store,find,move,get,bulk-query")
	for _, nd := range c.nodes {
		waitAdmitted(t, nd.Addr())
	}
	c.lb = harness.StartHAProxy(t, harness.LBServers(c.nodes), harness.HAProxyOptions{HealthPath: c.health})
	c.lb.WaitAllUp(t, harness.LBServers(c.nodes), 20*time.Second)
	return c
}

// lbAddr is HAProxy's DIMSE address.
func (c *cluster) lbAddr() string { return "127.0.0.1:" + strconv.Itoa(c.lb.DIMSEPort) }

// openStore opens the cluster's store from the test process, as a node
// named "verify" would (without its recovery).
func (c *cluster) openStore(t *testing.T) *store.Store {
	t.Helper()
	c.s3.SetEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Spec{Index: "postgres", IndexDSN: c.dsn, Blobs: "s3", BlobsDSN: c.blobs, Node: "verify"})
	if err != nil {
		t.Fatalf("opening the cluster's store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// waitAdmitted waits up to 20 s until Ward at addr answers a C-ECHO from
// scuAET (the registration reached that node).
func waitAdmitted(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := echo(addr)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never admitted %s: %v", addr, scuAET, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dial opens an association from scuAET to Ward at addr with pcs.
func dial(ctx context.Context, addr string, pcs []pdu.PresentationContext, roles ...pdu.RoleSelection) (*dimse.Client, error) {
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: scuAET,
		ApplicationContext: pdu.ApplicationContextName, Contexts: pcs}
	rq.UserInfo.Roles = roles
	a, err := assoc.Dial(ctx, "tcp", addr, assoc.Config{AETitle: scuAET, ImplementationClassUID: dicom.ImplementationClassUID,
		ImplementationVersionName: dicom.ImplementationVersionName}, rq)
	if err != nil {
		return nil, err
	}
	return dimse.NewClient(a), nil
}

// release ends an association: released when it is still up.
func release(cl *dimse.Client) {
	select {
	case <-cl.A.Done():
	default:
		_ = cl.A.Release()
	}
}

var explicitTS = []string{dicom.ExplicitVRLittleEndian.UID}

func echo(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := dial(ctx, addr, []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: explicitTS}})
	if err != nil {
		return err
	}
	defer release(cl)
	return cl.Echo(ctx)
}

// object is one generated instance: its Part 10 file (for DCMTK) and the
// data set bytes a sender transmits for it (what Ward must keep).
type object struct {
	path, uid, sopClass string
	dataSet             []byte
}

// dataSetTrailingPadding is (FFFC,FFFC); imageComments (0020,4000).
const (
	dataSetTrailingPadding = dicom.Tag(0xFFFCFFFC)
	imageComments          = dicom.Tag(0x00204000)
)

// sources are CT_small and MR_small of pydicom's test files, read once.
var sources struct {
	once sync.Once
	ds   []*dicom.DataSet
	err  error
}

// makeObjects writes n distinct instances of one study (UID prefix+".0")
// into a temporary folder: copies of CT_small and MR_small with their own
// SOP Instance UID (prefix.N), a series per ten and an Instance Number,
// in Explicit VR Little Endian, encoded as storescu sends them (without
// Data Set Trailing Padding and sequences, which storescu re-encodes), so
// that the data set Ward stores must equal the file's byte for byte.
// mark, when not empty, goes in Image Comments (two versions of one
// object differ by it).
func makeObjects(t *testing.T, prefix string, n int, mark string) []*object {
	t.Helper()
	harness.RequireDir(t, harness.PydicomTestFiles)
	sources.once.Do(func() {
		for _, name := range []string{"CT_small.dcm", "MR_small.dcm"} {
			meta, rc, err := dicom.OpenFile(filepath.Join(harness.PydicomTestFiles, name))
			if err != nil {
				sources.err = err
				return
			}
			ds, err := dicom.ReadDataSet(rc, dicom.LookupTransferSyntax(meta.TransferSyntaxUID), 1<<24)
			rc.Close()
			if err != nil {
				sources.err = err
				return
			}
			sources.ds = append(sources.ds, ds)
		}
	})
	if sources.err != nil {
		t.Fatal(sources.err)
	}
	dir := t.TempDir()
	out := make([]*object, n)
	for i := range n {
		src := sources.ds[i%len(sources.ds)]
		ds := &dicom.DataSet{Elements: append([]*dicom.Element(nil), src.Elements...)}
		uid := prefix + "." + strconv.Itoa(i+1)
		ds.Set(dicom.SOPInstanceUID, uid)
		ds.Set(dicom.StudyInstanceUID, prefix+".0")
		ds.Set(dicom.SeriesInstanceUID, prefix+".0."+strconv.Itoa(i/10+1))
		ds.Set(dicom.InstanceNumber, strconv.Itoa(i+1))
		if mark != "" {
			ds.Set(imageComments, mark)
		}
		ds.Delete(dataSetTrailingPadding)
		for _, e := range src.Elements {
			if e.IsSequence() {
				ds.Delete(e.Tag)
			}
		}
		body, err := ds.Bytes(dicom.ExplicitVRLittleEndian)
		if err != nil {
			t.Fatal(err)
		}
		var file bytes.Buffer
		class := ds.String(dicom.SOPClassUID)
		if err := dicom.WriteFileHeader(&file, &dicom.FileMeta{MediaStorageSOPClassUID: class,
			MediaStorageSOPInstanceUID: uid, TransferSyntaxUID: dicom.ExplicitVRLittleEndian.UID}); err != nil {
			t.Fatal(err)
		}
		file.Write(body)
		p := filepath.Join(dir, fmt.Sprintf("%s-%05d.dcm", mark, i+1))
		if err := os.WriteFile(p, file.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		out[i] = &object{path: p, uid: uid, sopClass: class, dataSet: body}
	}
	return out
}

// storageContexts are presentation contexts for the classes of objs
// (Explicit VR Little Endian), from ID 1, with the SCP role when scp.
func storageContexts(objs []*object, scp bool) ([]pdu.PresentationContext, []pdu.RoleSelection) {
	var pcs []pdu.PresentationContext
	var roles []pdu.RoleSelection
	seen := map[string]bool{}
	for _, o := range objs {
		if seen[o.sopClass] {
			continue
		}
		seen[o.sopClass] = true
		pcs = append(pcs, pdu.PresentationContext{ID: byte(2*len(pcs) + 1), AbstractSyntax: o.sopClass, TransferSyntaxes: explicitTS})
		if scp {
			roles = append(roles, pdu.RoleSelection{SOPClassUID: o.sopClass, SCU: false, SCP: true})
		}
	}
	return pcs, roles
}

// result is the outcome of one C-STORE by Ward's SCU.
type result struct {
	obj     *object
	status  uint16
	comment string
	err     error // no response (the association failed)
	at      time.Time
}

func (r result) acked() bool { return r.err == nil && r.status == dimse.StatusSuccess }

func (r result) String() string {
	if r.err != nil {
		return "no response: " + r.err.Error()
	}
	return fmt.Sprintf("0x%04X %q", r.status, r.comment)
}

// storeAll sends objs to addr with Ward's SCU, one association at a time:
// when one fails, the next object goes on a new one. After an object
// that was not acknowledged it waits pause. Each object is sent once and
// gets its own result. each, when set, sees each
// result as it comes.
func storeAll(ctx context.Context, addr string, objs []*object, pause time.Duration, each func(result)) []result {
	pcs, _ := storageContexts(objs, false)
	out := make([]result, 0, len(objs))
	var cl *dimse.Client
	defer func() {
		if cl != nil {
			release(cl)
		}
	}()
	for _, o := range objs {
		r := result{obj: o}
		if cl == nil {
			cl, r.err = dial(ctx, addr, pcs)
		}
		if r.err == nil {
			r.status, r.comment, r.err = storeOne(ctx, cl, o)
			if r.err != nil {
				release(cl)
				cl = nil
			}
		}
		r.at = time.Now()
		if !r.acked() && ctx.Err() == nil {
			select {
			case <-time.After(pause):
			case <-ctx.Done():
			}
		}
		out = append(out, r)
		if each != nil {
			each(r)
		}
	}
	return out
}

// storeOne sends one object on cl and returns its status and comment.
func storeOne(ctx context.Context, cl *dimse.Client, o *object) (uint16, string, error) {
	pc, ok := cl.FindContext(o.sopClass, dicom.ExplicitVRLittleEndian.UID)
	if !ok {
		return 0, "", fmt.Errorf("no accepted context for %s", o.sopClass)
	}
	rsp, err := cl.Store(ctx, pc.ID, o.sopClass, o.uid, bytes.NewReader(o.dataSet))
	if err != nil {
		return 0, "", err
	}
	return rsp.Status, rsp.ErrorComment, nil
}

// storeOnce sends one object on a new association to addr.
func storeOnce(ctx context.Context, addr string, o *object) result {
	pcs, _ := storageContexts([]*object{o}, false)
	r := result{obj: o}
	cl, err := dial(ctx, addr, pcs)
	if err != nil {
		r.err = err
		return r
	}
	defer release(cl)
	r.status, r.comment, r.err = storeOne(ctx, cl, o)
	return r
}

// getter receives the objects of a C-GET: data set bytes by SOP Instance
// UID.
type getter struct {
	mu  sync.Mutex
	got map[string][]byte
}

func (g *getter) Store(_ context.Context, r *dimse.StoreRequest) error {
	b, err := io.ReadAll(r.Data)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.got[r.SOPInstanceUID] = b
	g.mu.Unlock()
	return nil
}

// cget retrieves with C-GET (study root) from addr what identifier names
// (level and keys as pairs) and returns the data sets received.
func cget(ctx context.Context, addr string, classes []*object, level string, kv ...string) (map[string][]byte, *dimse.RetrieveResult, error) {
	pcs, roles := storageContexts(classes, true)
	pcs = append(pcs, pdu.PresentationContext{ID: byte(2*len(pcs) + 1), AbstractSyntax: dimse.StudyRootGet, TransferSyntaxes: explicitTS})
	cl, err := dial(ctx, addr, pcs, roles...)
	if err != nil {
		return nil, nil, err
	}
	defer release(cl)
	pc, ok := cl.FindContext(dimse.StudyRootGet, "")
	if !ok {
		return nil, nil, errors.New("C-GET context refused")
	}
	g := &getter{got: map[string][]byte{}}
	res, err := cl.Get(ctx, pc.ID, identifier(level, kv...), g, nil)
	return g.got, res, err
}

// identifier is a query identifier at level with keys as pairs.
func identifier(level string, kv ...string) *dicom.DataSet {
	ds := &dicom.DataSet{}
	ds.Set(dicom.QueryRetrieveLevel, level)
	for i := 0; i+1 < len(kv); i += 2 {
		tag, ok := dicom.TagByKeyword(kv[i])
		if !ok {
			panic("unknown keyword " + kv[i])
		}
		ds.Set(tag, kv[i+1])
	}
	return ds
}

// checkRetrieved C-GETs the study of objs through addr and checks that
// every object of want came back exactly as sent.
func checkRetrieved(t *testing.T, addr string, study string, want []*object) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got, res, err := cget(ctx, addr, want, "STUDY", "StudyInstanceUID", study)
	if err != nil {
		t.Fatalf("C-GET of study through %s: %v", addr, err)
	}
	missing := 0
	for _, o := range want {
		b, ok := got[o.uid]
		switch {
		case !ok:
			missing++
			if missing <= 5 {
				t.Errorf("%s not retrieved through %s", o.uid, addr)
			}
		case !bytes.Equal(b, o.dataSet):
			t.Errorf("%s retrieved through %s differs from what was sent (%d bytes, sent %d)", o.uid, addr, len(b), len(o.dataSet))
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged objects not retrieved through %s (C-GET final %+v)", missing, len(want), addr, res.Final)
	}
}

// checkConsistent opens the store (every node stopped) and checks that
// each object of acked is indexed with its blob holding exactly the data
// set sent, that no blob is pending or unreferenced, and that the index
// holds want instances (-1: don't check).
func (c *cluster) checkConsistent(t *testing.T, acked []*object, want int64) {
	t.Helper()
	st := c.openStore(t)
	ctx := context.Background()
	for _, o := range acked {
		row, err := st.Index.Get(ctx, o.uid)
		if err != nil {
			t.Errorf("acknowledged %s not in the index: %v", o.uid, err)
			continue
		}
		got, err := harness.StoredDataSet(ctx, st.Blobs, row.BlobKey)
		if err != nil {
			t.Errorf("acknowledged %s: blob %s: %v", o.uid, row.BlobKey, err)
			continue
		}
		if !bytes.Equal(got, o.dataSet) {
			t.Errorf("acknowledged %s: its blob's data set (%d bytes) differs from the one sent (%d)", o.uid, len(got), len(o.dataSet))
		}
	}
	n, err := st.Index.CountInstances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want >= 0 && n != want {
		t.Errorf("the index holds %d instances, want %d", n, want)
	}
	if keys, err := st.Index.PendingBlobDeletes(ctx, 100); err != nil || len(keys) != 0 {
		t.Errorf("blobs still recorded for deletion after every node stopped: %d %v", len(keys), err)
	}
	harness.CheckBlobsIndexed(t, ctx, st.Index, st.Blobs, n)
}

// stopAll stops every node cleanly (each recovers nothing more then).
func (c *cluster) stopAll(t *testing.T) {
	t.Helper()
	for _, nd := range c.nodes {
		nd.Stop(t)
	}
}

// webToken makes a viewer user through the first node's ward command (in
// the shared index) and returns a read token of it.
func (c *cluster) webToken(t *testing.T) string {
	t.Helper()
	nd := c.nodes[0]
	nd.CLI(t, "a long passcode for the cluster viewer\n", "user", "add", "viewer1", "--role", "viewer")
	tok := strings.TrimSpace(nd.CLI(t, "", "token", "issue", "viewer1", "--scope", "read", "--ttl", "2h"))
	if tok == "" || strings.ContainsAny(tok, " \n") {
		t.Fatalf("ward token issue printed %q", tok)
	}
	return tok
}

// httpGet sends GET url with the token and accept, and returns the
// status and body.
func httpGet(t *testing.T, url, token, accept string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	cl := &http.Client{Timeout: 30 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, b
}
