package interop

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/store/encblob"
	"github.com/ward-pacs/ward/test/harness"
)

// encryptedPatientData are bytes of the patients of CT_small.dcm and
// rtdose.dcm that must not be found in an encrypted archive's objects.
var encryptedPatientData = []string{"CompressedSamples^CT1", "1CT1", "Multiframe^Encrypted", "MF-ENC-1"}

// multiFrameScript writes (with pydicom) a multi-frame object of 20
// frames of 32 KiB, in ten chunks of the encryption: frames straddle
// chunk boundaries.
const multiFrameScript = `import sys
import struct
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
meta.MediaStorageSOPInstanceUID = generate_uid()
meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds = Dataset()
ds.file_meta = meta
ds.SOPClassUID = meta.MediaStorageSOPClassUID
ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
ds.StudyInstanceUID = generate_uid()
ds.SeriesInstanceUID = generate_uid()
ds.PatientName = "Multiframe^Encrypted"
ds.PatientID = "MF-ENC-1"
ds.Modality = "OT"
ds.SamplesPerPixel = 1
ds.PhotometricInterpretation = "MONOCHROME2"
ds.NumberOfFrames = 20
ds.Rows = 128
ds.Columns = 128
ds.BitsAllocated = 16
ds.BitsStored = 16
ds.HighBit = 15
ds.PixelRepresentation = 0
ds.PixelData = struct.pack('<%dH' % (20*128*128), *[(i * 2654435761) % 65521 for i in range(20*128*128)])
try:
    ds.save_as(sys.argv[1], enforce_file_format=True)
except TypeError:
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.save_as(sys.argv[1], write_like_original=False)
`

// noPlaintext fails the test when a file under dir (the index and the
// audit trail aside, which are not encrypted: docs/security.md) holds a
// patient's name or ID.
func noPlaintext(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() || strings.HasPrefix(rel, "index.db") || strings.HasPrefix(rel, "audit") || strings.HasSuffix(rel, ".sock") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, s := range encryptedPatientData {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds %q in plaintext", rel, s)
			}
		}
		if strings.HasPrefix(rel, "objects") && !strings.HasPrefix(d.Name(), "_enc.") {
			n++ // an object, not a record of the encryption's own
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// framesOf asks w for frames of the instance at path and returns the
// parts' bytes.
func framesOf(t *testing.T, w *webWard, token, path string) [][]byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, w.url("/dicom-web"+path), nil)
	req.Header.Set("Accept", `multipart/related; type="application/octet-stream"`)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != 200 || mt != "multipart/related" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("frames %s: %d %s", path, resp.StatusCode, b)
	}
	var parts [][]byte
	mr := multipart.NewReader(resp.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return parts
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, b)
	}
}

// TestEncryptionAtRest: a Ward serving with a key file takes objects from
// DCMTK storescu and gives getscu the same bytes as a Ward without
// encryption, with no patient's name or ID in the files on disk; frames
// of a multi-frame object over WADO-RS equal the unencrypted Ward's; a
// byte flipped on disk is found by ward study verify and never served;
// the backup is encrypted and verifies with the key; the archive refuses
// to start without its key or with a wrong one; ward key rotate re-wraps
// under a new key (audited), after which the old key can go.
func TestEncryptionAtRest(t *testing.T) {
	requireTool(t, "storescu", "getscu")
	requireDir(t, pydicomTestFiles)
	requirePydicom(t)
	mf := filepath.Join(t.TempDir(), "multiframe.dcm")
	if out, err := exec.Command("/usr/bin/python3", "-c", multiFrameScript, mf).CombinedOutput(); err != nil {
		t.Fatalf("making a multi-frame object: %v\n%s", err, out)
	}
	keyFile := filepath.Join(t.TempDir(), "ward.key")
	if err := encblob.InitKeyFile(keyFile, "k1"); err != nil {
		t.Fatal(err)
	}
	enc := startWebWard(t, "[storage.encryption]\nkey_file = \""+keyFile+"\"\n", nil)
	plain := startWebWard(t, "", nil)
	ct := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	for _, w := range []*webWard{enc, plain} {
		if out, err := dcmtk("storescu", "-aec", "WARD", "127.0.0.1", strconv.Itoa(w.dicomPort), ct, mf).CombinedOutput(); err != nil {
			t.Fatalf("storescu: %v\n%s", err, out)
		}
	}
	if n := noPlaintext(t, enc.dir); n != 2 {
		t.Errorf("%d object files, want 2", n)
	}
	getCT := func(w *webWard) ([]byte, string) {
		t.Helper()
		dir := t.TempDir()
		out, err := dcmtk("getscu", "-S", "-aec", "WARD", "-od", dir, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+studyOf(t, ct), "127.0.0.1", strconv.Itoa(w.dicomPort)).CombinedOutput()
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		if err != nil || len(files) != 1 {
			return nil, string(out)
		}
		b, _ := os.ReadFile(files[0])
		return b, string(out)
	}
	fromEnc, out := getCT(enc)
	fromPlain, _ := getCT(plain)
	if fromEnc == nil || !bytes.Equal(fromEnc, fromPlain) {
		t.Fatalf("getscu from the encrypted Ward: %d bytes, from the other %d (differ)\n%s", len(fromEnc), len(fromPlain), out)
	}
	if ok, diff := datasetsEqual(t, ct, writeTemp(t, fromEnc)); !ok {
		t.Fatalf("retrieved differs from sent:\n%s", diff)
	}

	// Frames of the multi-frame object, ranged reads of an encrypted
	// object, equal the unencrypted Ward's.
	study, series, sop := uidsOfFile(t, mf)
	path := "/studies/" + study + "/series/" + series + "/instances/" + sop + "/frames/20,2,7,1"
	var got [2][][]byte
	for i, w := range []*webWard{enc, plain} {
		w.user(t, "reader", "viewer")
		got[i] = framesOf(t, w, w.token(t, "reader", "read"), path)
	}
	if len(got[0]) != 4 || len(got[0]) != len(got[1]) || len(got[0][0]) != 128*128*2 {
		t.Fatalf("frames: %d and %d parts", len(got[0]), len(got[1]))
	}
	for i := range got[0] {
		if !bytes.Equal(got[0][i], got[1][i]) {
			t.Errorf("frame part %d differs between the encrypted and the plain Ward", i)
		}
	}

	// Verified through the running Ward; a flipped byte is found and not
	// served.
	if o := enc.cli(t, "", "study", "verify"); !strings.Contains(o, "verified 2 instances") {
		t.Fatalf("verify: %s", o)
	}
	var files []string
	filepath.WalkDir(filepath.Join(enc.dir, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), "_enc.") {
			files = append(files, p)
		}
		return nil
	})
	var ctFile string
	var ctBytes []byte
	for _, f := range files {
		b, _ := os.ReadFile(f)
		// The stored CT object: its plaintext, one chunk's tag and the
		// header.
		if d := len(b) - len(fromEnc); d > 16 && d < 200 {
			ctFile, ctBytes = f, b
		}
	}
	if ctFile == "" {
		t.Fatalf("no stored CT object among %v", files)
	}
	bad := bytes.Clone(ctBytes)
	bad[len(bad)/2] ^= 0x01
	if err := os.WriteFile(ctFile, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	var vout, verr bytes.Buffer
	cmd := exec.Command(enc.bin, "study", "verify", "--data", enc.dir)
	cmd.Stdout, cmd.Stderr = &vout, &verr
	if err := cmd.Run(); err == nil || !strings.Contains(vout.String()+verr.String(), "fails authentication") {
		t.Fatalf("verify of a tampered object: %v\n%s%s", err, vout.String(), verr.String())
	}
	if b, out := getCT(enc); b != nil {
		t.Fatalf("getscu got a tampered object (%d bytes, same as before: %v):\n%s", len(b), bytes.Equal(b, fromEnc), out)
	} else if !strings.Contains(out, "OutOfResourcesSubOperations") {
		// C-GET's final status: every sub-operation failed (A702), the
		// instance in the Failed SOP Instance UID List.
		t.Errorf("getscu of the tampered object:\n%s", out)
	}
	{
		study, series, sop := uidsOfFile(t, ct)
		resp, body := enc.do(t, http.MethodGet, "/dicom-web/studies/"+study+"/series/"+series+"/instances/"+sop, enc.token(t, "reader", "read"), nil,
			"Accept", `multipart/related; type="application/dicom"`)
		if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "fails its integrity check") {
			t.Errorf("WADO-RS of the tampered object: %d %s", resp.StatusCode, body)
		}
	}
	if err := os.WriteFile(ctFile, ctBytes, 0o600); err != nil {
		t.Fatal(err)
	}

	// The backup holds the objects encrypted, and verifies with the key.
	backup := filepath.Join(t.TempDir(), "backup")
	if o := enc.cli(t, "", "backup", backup); !strings.Contains(o, "2 objects copied") {
		t.Fatalf("backup: %s", o)
	}
	if o := enc.cli(t, "", "backup", backup); !strings.Contains(o, "0 objects copied") {
		t.Fatalf("second backup, nothing new: %s", o)
	}
	if n := noPlaintext(t, backup); n < 2 {
		t.Errorf("%d object files in the backup", n)
	}
	if o, code := wardCLI(t, "study", "verify", "--data", backup); code != 0 || !strings.Contains(o, "verified 2 instances") {
		t.Fatalf("verify the backup with the key: %d %s", code, o)
	}

	// Stopped: without the key, and with a wrong one, it does not start.
	enc.proc.Stop(t, os.Interrupt, 30*time.Second)
	conf, _ := os.ReadFile(filepath.Join(enc.dir, "ward.toml"))
	serve := func(extra ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, enc.bin, append([]string{"serve", "--data", enc.dir}, extra...)...).CombinedOutput()
		if err == nil || ctx.Err() != nil {
			t.Fatalf("ward serve %v: %v (it should refuse to start)\n%s", extra, err, out)
		}
		return string(out)
	}
	noKey := strings.Replace(string(conf), "[storage.encryption]\nkey_file = \""+keyFile+"\"\n", "", 1)
	if noKey == string(conf) {
		t.Fatalf("no key_file in %s", conf)
	}
	if err := os.WriteFile(filepath.Join(enc.dir, "ward.toml"), []byte(noKey), 0o600); err != nil {
		t.Fatal(err)
	}
	if o := serve(); !strings.Contains(o, "objects are encrypted: give its key") {
		t.Errorf("serve without the key: %s", o)
	}
	wrong := filepath.Join(t.TempDir(), "wrong.key")
	if err := encblob.InitKeyFile(wrong, "k1"); err != nil {
		t.Fatal(err)
	}
	if o := serve("--encryption-key-file", wrong); !strings.Contains(o, "not the key k1 this archive was encrypted with") {
		t.Errorf("serve with a wrong key: %s", o)
	}
	os.Chmod(keyFile, 0o644)
	if o := serve("--encryption-key-file", keyFile); !strings.Contains(o, "chmod 600") {
		t.Errorf("serve with a key file others may read: %s", o)
	}
	os.Chmod(keyFile, 0o600)

	// Rotation: a new key, the data keys re-wrapped, the old key gone.
	if o, code := wardCLI(t, "key", "add", keyFile); code != 0 || !strings.Contains(o, "key k2 added") {
		t.Fatalf("key add: %d %s", code, o)
	}
	if o, code := wardCLI(t, "key", "rotate", "--data", enc.dir, "--config", writeConf(t, noKey+"\n", keyFile)); code != 0 || !strings.Contains(o, "2 re-wrapped under key k2") {
		t.Fatalf("key rotate: %d %s", code, o)
	}
	readAudit(t, enc.dir, func(r []audit.Record) bool {
		return hasEvent(r, "security-alert", -1, "encryption key rotation to key k2: 2 objects, 2 re-wrapped")
	})
	ring, err := encblob.ReadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var k2 string
	b, _ := os.ReadFile(keyFile)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "ward-kek-v1:k2:") {
			k2 = l
		}
	}
	if ring.Current() != "k2" || k2 == "" {
		t.Fatalf("key file after add: current %s", ring.Current())
	}
	onlyK2 := filepath.Join(t.TempDir(), "k2.key")
	if err := os.WriteFile(onlyK2, []byte(k2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if o, code := wardCLI(t, "study", "verify", "--data", enc.dir, "--config", writeConf(t, noKey+"\n", onlyK2)); code != 0 || !strings.Contains(o, "verified 2 instances") {
		t.Fatalf("verify with the old key retired: %d %s", code, o)
	}
	// The key from the environment, instead of a file (the data
	// directory's ward.toml names none now).
	cmd = exec.Command(enc.bin, "study", "verify", "--data", enc.dir)
	cmd.Env = append(os.Environ(), encblob.EnvKey+"="+k2+"\n")
	if o, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(o), "verified 2 instances") {
		t.Fatalf("verify with the key in the environment: %v\n%s", err, o)
	}
}

// writeConf writes a configuration file: conf with [storage.encryption]
// key_file set to keyFile.
func writeConf(t *testing.T, conf, keyFile string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ward.toml")
	if err := os.WriteFile(p, []byte(conf+"\n[storage.encryption]\nkey_file = \""+keyFile+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "obj.dcm")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEncryptionAtRestS3: the same wrapper over objects in S3
// (versitygw): storescu's objects come back to getscu as sent, none of
// the bucket's files (objects, intent records, the wrapper's records)
// holds a patient's name or ID, and ward study verify authenticates
// them.
func TestEncryptionAtRestS3(t *testing.T) {
	requireTool(t, "storescu", "getscu")
	requireDir(t, pydicomTestFiles)
	s3p := harness.StartS3(t)
	s3p.SetEnv(t) // ward serve inherits the credentials
	bucket := s3p.Bucket(t)
	keyFile := filepath.Join(t.TempDir(), "ward.key")
	if err := encblob.InitKeyFile(keyFile, "k1"); err != nil {
		t.Fatal(err)
	}
	dir := harness.DataDir(t)
	port := freePort(t)
	conf := fmt.Sprintf("[storage]\nmin_free = \"16MiB\"\nblobs = %q\n[storage.encryption]\nkey_file = %q\n[dicom]\nlisten = \"127.0.0.1:%d\"\nloopback_any_ae = true\n",
		s3p.URL(bucket, "archive"), keyFile, port)
	if err := os.WriteFile(filepath.Join(dir, "ward.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := harness.WardBinary(t)
	p := harness.Start(t, exec.Command(bin, "serve", "--data", dir, "--http-listen", "off"), true)
	p.WaitServing(t)
	ct := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	if out, err := dcmtk("storescu", "-aec", "WARD", "127.0.0.1", strconv.Itoa(port), ct).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	got := t.TempDir()
	if out, err := dcmtk("getscu", "-S", "-aec", "WARD", "-od", got, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+studyOf(t, ct), "127.0.0.1", strconv.Itoa(port)).CombinedOutput(); err != nil {
		t.Fatalf("getscu: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(got, "*"))
	if len(files) != 1 {
		t.Fatalf("retrieved %v", files)
	}
	if ok, diff := datasetsEqual(t, ct, files[0]); !ok {
		t.Fatalf("retrieved differs from sent:\n%s", diff)
	}
	noPlaintext(t, s3p.Dir)
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, "study", "verify", "--data", dir)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "verified 1 instance") {
		t.Fatalf("verify: %v\n%s%s", err, out.String(), errb.String())
	}
}
