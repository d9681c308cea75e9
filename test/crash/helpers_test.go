// Package crash checks Ward's durability promises end to end: the real
// `ward serve` binary is killed, stopped by signal, starved of disk space
// and fed a 1 GiB object while DCMTK's storescu (or `ward store`) sends to
// it, and the data directory is checked afterwards.
//
// A SIGKILL alone proves less than it seems: the kernel's page cache
// outlives the killed process, so those tests show that Ward's files are
// consistent at every instant (ordering, recovery), not that anything
// reached the disk: they pass with the object's fsync removed. What survives a
// power cut is checked by TestPowerCutMidIngest, where the data directory
// is on lazyfs (internal/lazyfs), a FUSE file system that keeps only what
// was fsynced, the strict POSIX reading of fsync: a file's bytes by its
// own fsync, directory entries by the directory's. It does not model a
// disk that lies about flushing its cache, torn sector writes, or ext4's
// own ordering beyond POSIX. The unit tests named
// TestCommitDurableAtReturn (store/fsblob, store/sqlite) and
// TestStoreDurableAtResponse (archive) check the same at each commit.
//
// Locally a test skips when a peer tool is missing (or, for lazyfs, when
// not root); under CI=true that is a failure.
package crash

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/fsblob"
	"github.com/ward-pacs/ward/store/sqlite"
	"github.com/ward-pacs/ward/test/harness"
)

// Short names for the shared harness (test/harness), as the tests here
// have always called them.
const pydicomTestFiles = harness.PydicomTestFiles

var (
	skipOrFail  = testci.SkipOrFail
	requireTool = testci.RequireTool
	wardBinary  = harness.WardBinary
	freePort    = harness.FreePort
	dcmtk       = harness.DCMTK
	dcmtkRun    = harness.RunDCMTK
)

// TestMain removes the binary built for the package's tests.
func TestMain(m *testing.M) { harness.Main(m) }

// startWard starts `ward serve` on dir and a free loopback port and waits
// until it listens. extra are added flags (e.g. --config).
func startWard(t *testing.T, dir string, port int, extra ...string) *harness.Proc {
	t.Helper()
	args := []string{"serve", "--data", dir, "--dicom-listen", "127.0.0.1:" + strconv.Itoa(port), "--aet", "WARD", "--loopback-any-ae", "--http-listen", "127.0.0.1:0"}
	if !slices.Contains(extra, "--config") {
		// The test machine's disk may be fuller than the default reserve
		// (1 GiB) allows; the tests need little.
		args = append(args, "--min-free", "16MiB")
	}
	args = append(args, extra...)
	w := harness.Start(t, exec.Command(wardBinary(t), args...), false)
	w.Port = strconv.Itoa(port)
	w.WaitServing(t)
	return w
}

// dataSetTrailingPadding is (FFFC,FFFC).
const dataSetTrailingPadding = dicom.Tag(0xFFFCFFFC)

// instance is one generated object: its file and the data set bytes a
// sender transmits for it.
type instance struct {
	path    string
	uid     string
	dataSet []byte
}

// makeInstances writes n distinct instances into dir: copies of CT_small
// and MR_small with a new SOP Instance UID, a Series Instance UID per ten
// instances and an Instance Number, in Explicit VR Little Endian, encoded
// as storescu sends them (so the data set Ward stores must equal the
// file's byte for byte).
func makeInstances(t *testing.T, dir, prefix string, n int) []*instance {
	t.Helper()
	return makeStudy(t, dir, prefix, "", n)
}

// makeStudy is makeInstances with every instance in the study of UID
// study (when not empty).
func makeStudy(t *testing.T, dir, prefix, study string, n int) []*instance {
	t.Helper()
	var sources []*dicom.DataSet
	for _, name := range []string{"CT_small.dcm", "MR_small.dcm"} {
		p := filepath.Join(pydicomTestFiles, name)
		meta, rc, err := dicom.OpenFile(p)
		if err != nil {
			skipOrFail(t, "pydicom test file %s: %v", p, err)
		}
		if meta.TransferSyntaxUID != dicom.ExplicitVRLittleEndian.UID {
			rc.Close()
			t.Fatalf("%s is not Explicit VR Little Endian", p)
		}
		ds, err := dicom.ReadDataSet(rc, dicom.ExplicitVRLittleEndian, 1<<24)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, ds)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := make([]*instance, n)
	for i := range n {
		src := sources[i%len(sources)]
		ds := &dicom.DataSet{Elements: append([]*dicom.Element(nil), src.Elements...)}
		uid := prefix + "." + strconv.Itoa(i+1)
		ds.Set(dicom.SOPInstanceUID, uid)
		ds.Set(dicom.SeriesInstanceUID, prefix+".0."+strconv.Itoa(i/10+1))
		ds.Set(dicom.InstanceNumber, strconv.Itoa(i+1))
		if study != "" {
			ds.Set(dicom.StudyInstanceUID, study)
		}
		// storescu drops Data Set Trailing Padding (MR_small has some) and
		// re-encodes sequences with explicit lengths, where
		// dicom.WriteDataSet writes undefined lengths: without either, the
		// bytes storescu sends are the file's.
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
		err = dicom.WriteFileHeader(&file, &dicom.FileMeta{
			MediaStorageSOPClassUID:    ds.String(dicom.SOPClassUID),
			MediaStorageSOPInstanceUID: uid,
			TransferSyntaxUID:          dicom.ExplicitVRLittleEndian.UID,
		})
		if err != nil {
			t.Fatal(err)
		}
		file.Write(body)
		p := filepath.Join(dir, fmt.Sprintf("%05d.dcm", i+1))
		if err := os.WriteFile(p, file.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		out[i] = &instance{path: p, uid: uid, dataSet: body}
	}
	return out
}

// storescuLog follows storescu -v (or -d) output as it is written: it
// counts success responses and remembers which files they acknowledged.
type storescuLog struct {
	mu       sync.Mutex
	out      bytes.Buffer
	partial  []byte
	current  string // file being sent
	awaiting bool   // -d: a response was received, its status line follows
	acked    []string
	onAck    func() // called (without mu) after each success response
}

func (l *storescuLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.out.Write(p)
	l.partial = append(l.partial, p...)
	acks := 0
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		switch {
		case strings.HasPrefix(line, "I: Sending file: "):
			l.current = strings.TrimPrefix(line, "I: Sending file: ")
		case line == "I: Received Store Response (Success)": // -v
			l.acked = append(l.acked, l.current)
			acks++
		case line == "I: Received Store Response": // -d: the status follows
			l.awaiting = true
		case l.awaiting && strings.HasPrefix(line, "D: DIMSE Status"):
			l.awaiting = false
			if strings.Contains(line, ": 0x0000: Success") {
				l.acked = append(l.acked, l.current)
				acks++
			}
		}
	}
	on := l.onAck
	l.mu.Unlock()
	for range acks {
		if on != nil {
			on()
		}
	}
	return len(p), nil
}

func (l *storescuLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.out.String()
}

func (l *storescuLog) ackedFiles() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.acked...)
}

// storescu runs DCMTK storescu -v sending files to Ward, with Nagle off.
type storescu struct {
	cmd  *exec.Cmd
	log  *storescuLog
	done chan struct{}
	err  error
}

func startStorescu(t *testing.T, port string, files []string, onAck func(), extra ...string) *storescu {
	t.Helper()
	args := append([]string{"-v", "-aec", "WARD", "-aet", "CRASHTEST"}, extra...)
	args = append(args, "127.0.0.1", port)
	args = append(args, files...)
	cmd := dcmtk("storescu", args...)
	s := &storescu{cmd: cmd, log: &storescuLog{onAck: onAck}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

func (s *storescu) wait(t *testing.T, limit time.Duration) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(limit):
		_ = s.cmd.Process.Kill()
		<-s.done
		t.Fatalf("storescu still running after %s:\n%s", limit, s.log.String())
	}
}

// files lists the regular files under dir (relative names).
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

// checkNoLeftovers asserts that tmp/ and pending/ are empty.
func checkNoLeftovers(t *testing.T, dir string) {
	t.Helper()
	for _, sub := range []string{"tmp", "pending"} {
		if fs := files(t, filepath.Join(dir, sub)); len(fs) != 0 {
			t.Errorf("%s/ is not empty: %d files, e.g. %s", sub, len(fs), fs[0])
		}
	}
}

// verify opens the stores of a stopped Ward's data directory and checks:
// every acknowledged instance is indexed, its blob is readable and holds
// exactly the data set sent; tmp/ and pending/ are empty; every file under
// objects/ is referenced by the index and there are as many as instances;
// no replaced blob is still waiting for deletion. It returns the number of
// instances in the index.
func verify(t *testing.T, dir string, acked map[string]*instance) int64 {
	t.Helper()
	return verifyIndex(t, dir, filepath.Join(dir, "index.db"), acked)
}

// verifyIndex is verify with the sqlite index at indexPath.
func verifyIndex(t *testing.T, dir, indexPath string, acked map[string]*instance) int64 {
	t.Helper()
	checkNoLeftovers(t, dir)
	bs, err := fsblob.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	return verifyStore(t, indexPath, bs, acked)
}

// verifyStore is verifyIndex's check of the index against the blobs bs:
// whatever their backend, they must hold exactly the indexed objects, all
// published.
func verifyStore(t *testing.T, indexPath string, bs store.Blobs, acked map[string]*instance) int64 {
	t.Helper()
	ctx := context.Background()
	idx, err := sqlite.Open(ctx, indexPath)
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	lost := 0
	for uid, in := range acked {
		row, err := idx.Get(ctx, uid)
		if err != nil {
			lost++
			t.Errorf("acknowledged instance %s not in the index: %v", uid, err)
			continue
		}
		got, err := harness.StoredDataSet(ctx, bs, row.BlobKey)
		if err != nil {
			t.Errorf("acknowledged instance %s: blob %s: %v", uid, row.BlobKey, err)
			continue
		}
		if !bytes.Equal(got, in.dataSet) {
			t.Errorf("acknowledged instance %s: stored data set (%d bytes) differs from the one sent (%d bytes)", uid, len(got), len(in.dataSet))
		}
	}
	n, err := idx.CountInstances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	harness.CheckBlobsIndexed(t, ctx, idx, bs, n)
	if keys, err := idx.PendingBlobDeletes(ctx, 10); err != nil || len(keys) != 0 {
		t.Errorf("replaced blobs still waiting for deletion after restart: %v %v", keys, err)
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged instances lost", lost, len(acked))
	}
	return n
}

// countLines counts lines of s containing sub.
func countLines(s, sub string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			n++
		}
	}
	return n
}
