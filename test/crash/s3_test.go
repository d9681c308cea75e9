package crash

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store/s3blob"
	"github.com/ward-pacs/ward/test/harness"
)

// TestS3Blobs: `ward serve` with [storage] blobs in an S3 bucket
// (versitygw): objects storescu sends are acknowledged once they are in
// the bucket, and getscu gets them back byte for byte. With the object
// store unreachable, a C-STORE is refused with a failure status (not
// acknowledged), and nothing of it is visible: no object in the bucket,
// no match for C-FIND. Once the store is back, service resumes without
// a restart, and the refused object can be sent again.
func TestS3Blobs(t *testing.T) {
	requireTool(t, "storescu", "getscu", "findscu")
	s3p := harness.StartS3(t)
	s3p.SetEnv(t) // ward serve inherits the credentials
	bucket := s3p.Bucket(t)
	data, work := harness.DataDir(t), t.TempDir()
	w := startWard(t, data, freePort(t), "--config", s3Config(t, s3p, bucket))
	prefix := fmt.Sprintf("1.2.826.0.1.3680043.10.543.18.%d", time.Now().UnixNano()%1e9)
	study := prefix + ".100"
	batch := makeStudy(t, filepath.Join(work, "in"), prefix, study, 6)
	sent, later := batch[:5], batch[5]

	objects := func() (objs, markers int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := s3p.Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("archive/")})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Contents {
			switch k := aws.ToString(o.Key); {
			case strings.HasPrefix(k, "archive/o/"), strings.HasPrefix(k, "archive/n/"):
				objs++
			case strings.HasPrefix(k, "archive/pending/"), strings.HasPrefix(k, "archive/open/"):
				markers++ // a blob's, or an epoch's
			}
		}
		return objs, markers
	}
	store := func(in *instance) *storescu {
		s := startStorescu(t, w.Port, []string{in.path}, nil, "-d")
		s.wait(t, 60*time.Second)
		return s
	}
	get := func() map[string][]byte {
		t.Helper()
		dir := t.TempDir()
		out, ok := dcmtkRun(t, "getscu", "-S", "-aet", "CRASHTEST", "-aec", "WARD", "-od", dir,
			"-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+study, "127.0.0.1", w.Port)
		if !ok {
			t.Fatalf("getscu:\n%s", out)
		}
		got := map[string][]byte{}
		for _, name := range files(t, dir) {
			meta, rc, err := dicom.OpenFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			_, err = b.ReadFrom(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			got[meta.MediaStorageSOPInstanceUID] = b.Bytes()
		}
		return got
	}
	checkGet := func(want []*instance) {
		t.Helper()
		got := get()
		if len(got) != len(want) {
			t.Errorf("getscu received %d objects, want %d", len(got), len(want))
		}
		for _, in := range want {
			if b, ok := got[in.uid]; !ok {
				t.Errorf("getscu did not receive %s", in.uid)
			} else if !bytes.Equal(b, in.dataSet) {
				t.Errorf("%s: the data set getscu received differs from the one sent (%d bytes, want %d)", in.uid, len(b), len(in.dataSet))
			}
		}
	}

	var paths []string
	for _, in := range sent {
		paths = append(paths, in.path)
	}
	s := startStorescu(t, w.Port, paths, nil, "-d")
	s.wait(t, 60*time.Second)
	if n := len(s.log.ackedFiles()); n != len(sent) {
		t.Fatalf("%d of %d stores acknowledged:\n%s", n, len(sent), tail(s.log.String(), 40))
	}
	// Acknowledged: in the bucket, published (the epoch's marker goes
	// once the epoch is over and its objects indexed: wait for it).
	deadline := time.Now().Add(4 * s3blob.EpochLength)
	for {
		objs, markers := objects()
		if objs == len(sent) && markers == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bucket holds %d objects and %d markers, want %d and 0", objs, markers, len(sent))
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkGet(sent)

	s3p.Stop()
	refused := store(later)
	if len(refused.log.ackedFiles()) != 0 {
		t.Fatalf("a C-STORE was acknowledged with the object store down:\n%s", tail(refused.log.String(), 40))
	}
	if !strings.Contains(refused.log.String(), "0xa700") {
		t.Errorf("C-STORE with the object store down: want status 0xA700 (out of resources):\n%s", tail(refused.log.String(), 40))
	}
	fout, _ := dcmtkRun(t, "findscu", "-S", "-aet", "CRASHTEST", "-aec", "WARD", "-k", "QueryRetrieveLevel=IMAGE",
		"-k", "StudyInstanceUID="+study, "-k", "SOPInstanceUID="+later.uid, "127.0.0.1", w.Port)
	if strings.Contains(fout, later.uid) {
		t.Errorf("C-FIND finds the refused object:\n%s", fout)
	}

	s3p.Start()
	if objs, _ := objects(); objs != len(sent) {
		t.Errorf("after the refused store the bucket holds %d objects, want %d", objs, len(sent))
	}
	// Service resumes, without a restart.
	if again := store(later); len(again.log.ackedFiles()) != 1 {
		t.Fatalf("C-STORE after the object store came back:\n%s", tail(again.log.String(), 40))
	}
	checkGet(batch)
	// What the refused store left is gone with the next objects
	// published, and their epoch closes.
	deadline = time.Now().Add(4 * s3blob.EpochLength)
	for {
		objs, markers := objects()
		if objs == len(batch) && markers == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bucket holds %d objects and %d markers, want %d and 0", objs, markers, len(batch))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// s3Config writes a ward.toml that puts the objects in bucket under
// prefix "archive" on s3p: [storage] blobs = "s3://…".
func s3Config(t *testing.T, s3p *harness.S3, bucket string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "ward.toml")
	toml := fmt.Sprintf("[storage]\nmin_free = \"16MiB\"\nblobs = %q\n", s3p.URL(bucket, "archive"))
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestS3KillMidIngest is TestKillMidIngest with the objects in S3
// (versitygw): rounds of storescu ingest, one and four associations at
// once, each ended by SIGKILL of ward serve at a random moment, some
// instances sent again (replacements). After each restart (recovery runs
// at start), every acknowledged instance is indexed and its object holds
// exactly the data set sent; the bucket holds exactly the indexed
// objects, all published, and no marker of unfinished work.
func TestS3KillMidIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: skipped under -short")
	}
	requireTool(t, "storescu")
	s3p := harness.StartS3(t)
	s3p.SetEnv(t)
	bucket := s3p.Bucket(t)
	cfg := s3Config(t, s3p, bucket)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x53))

	const perRound, resend = 60, 15
	work := t.TempDir()
	dir := filepath.Join(work, "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	acked := map[string]*instance{}
	byPath := map[string]*instance{}
	var prev []*instance
	for r, parallel := range []int{1, 4, 1, 4} {
		fresh := makeInstances(t, filepath.Join(work, fmt.Sprint("in", r)), fmt.Sprintf("1.2.826.0.1.3680043.10.543.53.%d.%d", seed%1e6, r+1), perRound)
		batch := append(append([]*instance(nil), fresh...), prev[:min(resend, len(prev))]...)
		rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		for _, in := range batch {
			byPath[in.path] = in
		}
		prev = fresh

		w := startWard(t, dir, freePort(t), "--config", cfg)
		killAt := int64(1 + rng.IntN(len(batch)*3/4))
		jitter := time.Duration(rng.IntN(5000)) * time.Microsecond
		var acks atomic.Int64
		killed := make(chan struct{})
		onAck := func() {
			if acks.Add(1) == killAt {
				go func() {
					time.Sleep(jitter)
					w.Kill()
					close(killed)
				}()
			}
		}
		var scus []*storescu
		for p := range parallel {
			var paths []string
			for i := p; i < len(batch); i += parallel {
				paths = append(paths, batch[i].path)
			}
			scus = append(scus, startStorescu(t, w.Port, paths, onAck))
		}
		select {
		case <-killed:
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: only %d of %d acknowledgements in 60s", r, acks.Load(), killAt)
		}
		for _, s := range scus {
			s.wait(t, 10*time.Second)
			for _, p := range s.log.ackedFiles() {
				acked[byPath[p].uid] = byPath[p]
			}
		}
		w = startWard(t, dir, freePort(t), "--config", cfg)
		if err, _ := w.Stop(t, syscall.SIGTERM, 15*time.Second); err != nil {
			t.Fatalf("ward after recovery: exit %v", err)
		}
		bs, err := s3blob.Open(context.Background(), s3p.URL(bucket, "archive"))
		if err != nil {
			t.Fatal(err)
		}
		n := verifyStore(t, filepath.Join(dir, "index.db"), bs, acked)
		bs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for _, dir := range []string{"archive/pending/", "archive/open/"} {
			out, err := s3p.Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(dir)})
			if err != nil {
				t.Fatal(err)
			}
			if len(out.Contents) != 0 {
				t.Errorf("round %d: %d markers left after recovery and a clean stop, e.g. %s", r, len(out.Contents), aws.ToString(out.Contents[0].Key))
			}
		}
		cancel()
		if t.Failed() {
			t.Fatalf("round %d: inconsistent after crash and restart", r)
		}
		t.Logf("round %d: SIGKILL after %d acknowledgements; after restart %d instances indexed, all %d acknowledged present", r, killAt, n, len(acked))
	}
}
