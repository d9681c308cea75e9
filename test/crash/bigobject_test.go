package crash

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/store/fsblob"
	"github.com/ward-pacs/ward/store/sqlite"
)

// bigPixelBytes is the size of the big object's Pixel Data: 1 GiB.
const bigPixelBytes = 1 << 30

// bigDiskNeeded is the free space TestBigObject needs: the source file,
// the stored copy and some room.
const bigDiskNeeded = 2*bigPixelBytes + 256<<20

// bigTimeout bounds the transfer of the big object (8 s here, idle).
const bigTimeout = 5 * time.Minute

// maxServerRSS is the bound on the server's peak resident set while it
// receives the big object.
const maxServerRSS = 100 << 20

// TestBigObject sends a DICOM object whose Pixel Data is 1 GiB with
// `ward store` into a `ward serve` child process and checks that the
// server's peak RSS (VmHWM) stays under 100 MB and that the stored data set
// is intact (size and SHA-256). It needs about 2.2 GiB of disk under
// $TMPDIR: with less it skips (fails under CI=true). It takes about a
// minute on a busy two-core machine, most of it writing the source file;
// the transfer is bounded by bigTimeout. test/crash/bigobject.sh runs it
// alone, for the figures in docs/PERFORMANCE.md.
func TestBigObject(t *testing.T) {
	if testing.Short() {
		t.Skip("big object: skipped under -short")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(os.TempDir(), &st); err != nil {
		t.Fatal(err)
	}
	if free := int64(st.Bavail) * st.Bsize; free < bigDiskNeeded {
		testci.SkipOrFail(t, "big object: %d MiB free under %s, %d MiB needed", free>>20, os.TempDir(), bigDiskNeeded>>20)
	}
	work := t.TempDir()
	src := filepath.Join(work, "big.dcm")
	uid := fmt.Sprintf("1.2.826.0.1.3680043.10.543.7.%d", time.Now().UnixNano()%1e9)
	t0 := time.Now()
	dsSize, dsSum := writeBigObject(t, src, uid)
	t.Logf("generated %s: data set %d bytes in %s", filepath.Base(src), dsSize, time.Since(t0).Round(time.Millisecond))

	dir := filepath.Join(work, "data")
	w := startWard(t, dir, freePort(t))
	pid := w.Cmd.Process.Pid
	t.Logf("ward serve pid %d: VmHWM %s before the transfer", pid, vmHWM(t, pid))

	ctx, cancel := context.WithTimeout(context.Background(), bigTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, wardBinary(t), "store", "--quiet", "--aec", "WARD", "127.0.0.1:"+w.Port, src)
	t1 := time.Now()
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(t1)
	if err != nil {
		t.Fatalf("ward store: %v\n%s", err, out)
	}
	hwm := vmHWM(t, pid)
	clientRSS := int64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) << 10
	mbps := float64(dsSize) / 1e6 / elapsed.Seconds()
	t.Logf("ward store: %s", strings.TrimSpace(string(out)))
	t.Logf("1 GiB object stored in %s (%.0f MB/s); ward serve VmHWM %s; ward store max RSS %.1f MB",
		elapsed.Round(time.Millisecond), mbps, hwm, float64(clientRSS)/1e6)
	hwmBytes := parseKB(t, hwm)
	if hwmBytes >= maxServerRSS {
		t.Errorf("ward serve peak RSS %s, want < %d MB", hwm, maxServerRSS>>20)
	}
	if err, _ := w.Stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatalf("ward exit: %v", err)
	}

	// The stored object: same data set size and digest.
	idx, err := sqlite.Open(ctx, filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	bs, err := fsblob.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	in, err := idx.Get(ctx, uid)
	if err != nil {
		t.Fatalf("big object not indexed: %v", err)
	}
	rc, err := bs.Open(ctx, in.BlobKey)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, br, err := dicom.ReadFileHeader(rc, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, br)
	if err != nil {
		t.Fatal(err)
	}
	if n != dsSize || !bytes.Equal(h.Sum(nil), dsSum) {
		t.Fatalf("stored data set: %d bytes sha256 %x; sent %d bytes sha256 %x", n, h.Sum(nil), dsSize, dsSum)
	}
	if in.Rows != 16384 || in.Columns != 32768 {
		t.Errorf("indexed %dx%d", in.Rows, in.Columns)
	}
	t.Logf("stored data set intact: %d bytes, sha256 %s", n, hex.EncodeToString(dsSum))
	checkNoLeftovers(t, dir)
}

// writeBigObject streams a Secondary Capture object with 1 GiB of 16-bit
// Pixel Data (OW) to path, never holding the pixels in memory, and returns
// the data set's size and SHA-256.
func writeBigObject(t *testing.T, path, uid string) (int64, []byte) {
	t.Helper()
	const sc = "1.2.840.10008.5.1.4.1.1.7"
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	err = dicom.WriteFileHeader(bw, &dicom.FileMeta{
		MediaStorageSOPClassUID:    sc,
		MediaStorageSOPInstanceUID: uid,
		TransferSyntaxUID:          dicom.ExplicitVRLittleEndian.UID,
	})
	if err != nil {
		t.Fatal(err)
	}
	us := func(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
	ds := &dicom.DataSet{}
	ds.Set(dicom.SOPClassUID, sc)
	ds.Set(dicom.SOPInstanceUID, uid)
	ds.Set(dicom.StudyInstanceUID, uid+".1")
	ds.Set(dicom.SeriesInstanceUID, uid+".1.1")
	ds.Set(dicom.Modality, "OT")
	ds.Set(dicom.PatientID, "BIG-1")
	ds.Set(dicom.PatientName, "Big^Object")
	ds.Set(dicom.PhotometricInterpretation, "MONOCHROME2")
	for _, e := range []struct {
		tag dicom.Tag
		v   uint16
	}{
		{dicom.SamplesPerPixel, 1}, {dicom.Rows, 16384}, {dicom.Columns, 32768},
		{dicom.BitsAllocated, 16}, {dicom.BitsStored, 16}, {dicom.HighBit, 15}, {dicom.PixelRepresentation, 0},
	} {
		ds.Put(&dicom.Element{Tag: e.tag, VR: "US", Value: us(e.v)})
	}
	head, err := ds.Bytes(dicom.ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	// (7FE0,0010) OW, 32-bit length, then the value.
	head = append(head, 0xE0, 0x7F, 0x10, 0x00, 'O', 'W', 0, 0)
	head = binary.LittleEndian.AppendUint32(head, bigPixelBytes)
	h := sha256.New()
	out := io.MultiWriter(bw, h)
	if _, err := out.Write(head); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range chunk {
		chunk[i] = byte(rng.Uint32())
	}
	for i := range bigPixelBytes / len(chunk) {
		binary.LittleEndian.PutUint64(chunk, uint64(i)) // every MiB differs
		if _, err := out.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return int64(len(head)) + bigPixelBytes, h.Sum(nil)
}

// vmHWM returns the VmHWM line's value ("12345 kB") of a process.
func vmHWM(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return ""
}

func parseKB(t *testing.T, v string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	if err != nil {
		t.Fatalf("VmHWM %q: %v", v, err)
	}
	return n << 10
}
