package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newKeyedLog writes n records to a log in dir signed with the key in
// keyFile (made on first use) and returns the key.
func newKeyedLog(t testing.TB, dir, keyFile string, n int) *Key {
	t.Helper()
	l, err := Open(dir, nil, WithKeyFile(keyFile))
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, l, n)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	k, err := LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func verifyKeyed(t *testing.T, dir string, o VerifyOptions) (*Summary, error) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return VerifyLog(f, o)
}

// rehash rewrites lines from the first on as an attacker without the key
// would: each record's seq, prev and hash recomputed so that the chain
// holds together. macKey nil: format 1 (SHA-256, "v" dropped); else the
// attacker's own key.
func rehash(t *testing.T, lines []string, macKey *Key) []string {
	t.Helper()
	prev := ZeroHash
	out := make([]string, len(lines))
	for i, line := range lines {
		var r Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		r.Seq, r.Prev = uint64(i+1), prev
		b, err := r.encode(macKey)
		if err != nil {
			t.Fatal(err)
		}
		out[i], prev = string(b), r.Hash
	}
	return out
}

// TestRewriteAndRehashDetected is the attack of issue 14 item 8: a record
// removed and every hash after it recomputed. It passed `ward audit
// verify` when the chain was a plain SHA-256 chain (shown first, on a
// format-1 log); with the key it is found however the attacker rehashes.
func TestRewriteAndRehashDetected(t *testing.T) {
	t.Run("unkeyed log (the old format) cannot tell", func(t *testing.T) {
		dir := t.TempDir()
		newLog(t, dir, 10)
		lines := readLines(t, dir)
		writeLines(t, dir, rehash(t, append(lines[:3:3], lines[4:]...), nil))
		if n, err := verifyDir(t, dir); err != nil || n != 9 {
			t.Fatalf("a rehashed unkeyed log: %d, %v (the limit of a plain hash chain)", n, err)
		}
	})
	for _, tc := range []struct {
		name     string
		attacker *Key // nil: rehash as format 1
		line     int
		reason   string
	}{
		{"rehashed as unkeyed records", nil, 1, "unkeyed record where the key signs"},
		{"rehashed with another key", NewKey(1), 4, "MAC does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			key := newKeyedLog(t, dir, filepath.Join(t.TempDir(), KeyFileName), 10)
			if s, err := verifyKeyed(t, dir, VerifyOptions{Key: key}); err != nil || s.Records != 10 || s.Keyed != 10 {
				t.Fatalf("the untouched log: %+v, %v", s, err)
			}
			// Without the key, a keyed log is not called intact.
			if _, err := verifyDir(t, dir); !errors.Is(err, ErrBroken) {
				t.Fatalf("Verify without the key: %v", err)
			}
			lines := readLines(t, dir)
			// Remove seq 4, rehash from the start: the prefix is identical
			// when the attacker's hashes are (they are not: no key).
			forged := rehash(t, append(lines[:3:3], lines[4:]...), tc.attacker)
			if tc.attacker != nil {
				// A smarter attacker keeps the genuine first three records.
				forged = append(lines[:3:3], rehashFrom(t, lines[2], lines[4:], tc.attacker)...)
			}
			writeLines(t, dir, forged)
			_, err := verifyKeyed(t, dir, VerifyOptions{Key: key})
			var be *BreakError
			if !errors.As(err, &be) || be.Line != tc.line || !strings.Contains(be.Reason, tc.reason) {
				t.Fatalf("verify: %v, want a break at line %d (%s)", err, tc.line, tc.reason)
			}
		})
	}
	t.Run("tail cut: found by a checkpoint only", func(t *testing.T) {
		dir := t.TempDir()
		key := newKeyedLog(t, dir, filepath.Join(t.TempDir(), KeyFileName), 10)
		lines := readLines(t, dir)
		var last Record
		if err := json.Unmarshal([]byte(lines[9]), &last); err != nil {
			t.Fatal(err)
		}
		writeLines(t, dir, lines[:7])
		if s, err := verifyKeyed(t, dir, VerifyOptions{Key: key}); err != nil || s.Records != 7 {
			t.Fatalf("a cut log without checkpoints: %+v, %v (the documented limit)", s, err)
		}
		_, err := verifyKeyed(t, dir, VerifyOptions{Key: key, Checkpoints: []Checkpoint{{Seq: 10, Hash: last.Hash}}})
		if !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "cut from its end") {
			t.Fatalf("with the checkpoint: %v", err)
		}
		writeLines(t, dir, lines)
		s, err := verifyKeyed(t, dir, VerifyOptions{Key: key, Checkpoints: []Checkpoint{{Seq: 10, Hash: last.Hash}}})
		if err != nil || s.Checkpoints != 1 {
			t.Fatalf("the whole log with its checkpoint: %+v, %v", s, err)
		}
	})
}

// rehashFrom continues a chain after the line before with lines rehashed
// under key.
func rehashFrom(t *testing.T, before string, lines []string, key *Key) []string {
	t.Helper()
	var b Record
	if err := json.Unmarshal([]byte(before), &b); err != nil {
		t.Fatal(err)
	}
	seq, prev := b.Seq, b.Hash
	var out []string
	for _, line := range lines {
		var r Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		r.Seq, r.Prev = seq+1, prev
		enc, err := r.encode(key)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(enc))
		seq, prev = r.Seq, r.Hash
	}
	return out
}

// TestKeyFile: the key is made on first start, 0600, in its own file, and
// kept; a log that had unkeyed records goes on keyed from the next seq,
// and the first keyed record seals the unkeyed ones before it; a keyed log
// whose key is gone is refused rather than continued without it.
func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	newLog(t, dir, 3) // format 1, as before keys
	keyFile := filepath.Join(t.TempDir(), "keys", KeyFileName)
	k1 := newKeyedLog(t, dir, keyFile, 2)
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	if di, _ := os.Stat(filepath.Dir(keyFile)); di.Mode().Perm() != 0o700 {
		t.Errorf("key directory mode %v", di.Mode())
	}
	if k1.From != 4 {
		t.Errorf("from_seq %d, want 4", k1.From)
	}
	k2 := newKeyedLog(t, dir, keyFile, 2)
	if hex.EncodeToString(k2.mac) != hex.EncodeToString(k1.mac) || k2.From != 4 {
		t.Fatal("the key changed on the second start")
	}
	s, err := verifyKeyed(t, dir, VerifyOptions{Key: k2})
	if err != nil || s.Records != 7 || s.Keyed != 4 {
		t.Fatalf("verify: %+v, %v", s, err)
	}
	// An unkeyed record edited and the unkeyed chain rehashed: the first
	// keyed record's prev no longer matches.
	lines := readLines(t, dir)
	lines[1] = strings.Replace(lines[1], "MODALITY", "MODALITX", 1)
	writeLines(t, dir, append(rehash(t, lines[:3], nil), lines[3:]...))
	if _, err := verifyKeyed(t, dir, VerifyOptions{Key: k2}); !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "line 4") {
		t.Fatalf("an edited record before the key: %v", err)
	}

	// Cut back to before the key's first record: found, though every
	// remaining record is sound.
	lines = readLines(t, dir)
	writeLines(t, dir, lines[:2])
	if _, err := verifyKeyed(t, dir, VerifyOptions{Key: k2}); !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "cut from its end") {
		t.Fatalf("a log cut before the key's first record: %v", err)
	}
	writeLines(t, dir, lines)

	if _, err := Open(dir, nil); !errors.Is(err, ErrNoKey) {
		t.Errorf("a keyed log opened without a key: %v", err)
	}
	os.Rename(keyFile, keyFile+".gone")
	if _, err := Open(dir, nil, WithKeyFile(keyFile)); !errors.Is(err, ErrNoKey) {
		t.Errorf("a keyed log whose key file is gone: %v", err)
	}
	os.Rename(keyFile+".gone", keyFile)
	os.Chmod(keyFile, 0o644)
	if _, err := Open(dir, nil, WithKeyFile(keyFile)); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Errorf("a key file others may read: %v", err)
	}
}

// A key file's content as LoadKey reads it: anything else is refused.
func TestLoadKeyRefusesBadFiles(t *testing.T) {
	good := hex.EncodeToString(make([]byte, sha256.Size))
	for name, body := range map[string]string{
		"not json":  "x",
		"format":    `{"format":"other","key":"` + good + `","from_seq":1}`,
		"short key": `{"format":"ward-audit-key-1","key":"abcd","from_seq":1}`,
		"no from":   `{"format":"ward-audit-key-1","key":"` + good + `"}`,
		"not hex":   `{"format":"ward-audit-key-1","key":"` + strings.Repeat("zz", 32) + `","from_seq":1}`,
	} {
		p := filepath.Join(t.TempDir(), "k")
		os.WriteFile(p, []byte(body), 0o600)
		if _, err := LoadKey(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestForwardCheckpoints: with checkpoints on, the collector receives the
// chain's head; checked against them, the log shows records cut from its
// end, and a record rewritten by someone who holds the key, which the MAC
// alone cannot show.
func TestForwardCheckpoints(t *testing.T) {
	oldEvery := checkpointEvery
	checkpointEvery = 50 * time.Millisecond
	defer func() { checkpointEvery = oldEvery }()
	p := newPKI(t)
	col := startCollector(t, p, "127.0.0.1:0", true)
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), KeyFileName)
	l, err := Open(dir, nil, WithKeyFile(keyFile), WithForward(ForwardConfig{Addr: col.addr, CA: p.caFile, Checkpoints: true}))
	if err != nil {
		t.Fatal(err)
	}
	writeNumbered(t, l, 0, 10)
	l.Sync()
	time.Sleep(100 * time.Millisecond)
	writeNumbered(t, l, 10, 20)
	checkpoints := func() []Checkpoint {
		var cps []Checkpoint
		for _, m := range col.messages() {
			if c, ok := ParseCheckpoint(m); ok {
				cps = append(cps, c)
			}
		}
		return cps
	}
	waitUntil(t, "a checkpoint naming seq 20", func() bool {
		cps := checkpoints()
		return len(cps) > 0 && cps[len(cps)-1].Seq == 20
	})
	closeLog(t, l)
	cps := checkpoints()
	key, err := LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	s, err := verifyKeyed(t, dir, VerifyOptions{Key: key, Checkpoints: cps})
	if err != nil || s.Checkpoints != len(cps) || s.Records != 20 {
		t.Fatalf("verify with %d checkpoints: %+v, %v", len(cps), s, err)
	}
	lines := readLines(t, dir)
	// Cut from the end: the MAC cannot tell, the checkpoint does.
	writeLines(t, dir, lines[:17])
	if _, err := verifyKeyed(t, dir, VerifyOptions{Key: key}); err != nil {
		t.Fatalf("a cut log verifies without checkpoints (documented): %v", err)
	}
	if _, err := verifyKeyed(t, dir, VerifyOptions{Key: key, Checkpoints: cps}); err == nil || !strings.Contains(err.Error(), "cut from its end") {
		t.Fatalf("cut log with checkpoints: %v", err)
	}
	// Rewritten by someone holding the key: record 20 removed, 19 edited
	// and re-signed; the last checkpoint names 20.
	var r Record
	json.Unmarshal([]byte(lines[18]), &r)
	r.Outcome = OutcomeSuccess
	b, _ := r.encode(key)
	writeLines(t, dir, append(lines[:18:18], string(b)))
	if _, err := verifyKeyed(t, dir, VerifyOptions{Key: key}); err != nil {
		t.Fatalf("a log re-signed with the key verifies with the key alone (documented): %v", err)
	}
	if _, err := verifyKeyed(t, dir, VerifyOptions{Key: key, Checkpoints: cps}); !errors.Is(err, ErrBroken) {
		t.Fatalf("re-signed log with checkpoints: %v", err)
	}
}

func TestParseCheckpoint(t *testing.T) {
	h := strings.Repeat("ab", 32)
	for line, want := range map[string]bool{
		"<85>1 2026-01-02T03:04:05.000000Z pacs ward 42 WARD-CHECKPOINT - \ufeffaudit chain head seq=12 hash=" + h: true,
		"Dec  7 18:00:00 pacs ward[42]: WARD-CHECKPOINT audit chain head seq=3 hash=" + h:                          true,
		"WARD-CHECKPOINT audit chain head seq=0 hash=" + h:                                                         false,
		"WARD-CHECKPOINT audit chain head seq=3 hash=" + h[:60]:                                                    false,
		"WARD-CHECKPOINT audit chain head seq=3 hash=" + strings.Repeat("zz", 32):                                  false,
		"DICOM+RFC3881 seq=3 hash=" + h:                                                                            false,
	} {
		if _, ok := ParseCheckpoint(line); ok != want {
			t.Errorf("ParseCheckpoint(%q) = %v", line, ok)
		}
	}
}

// TestCheckpointNamesNode: a checkpoint names the node of its chain when
// the forwarder was given one, so that a collector shared by a cluster's
// nodes holds checkpoints `ward audit verify` can tell apart.
func TestCheckpointNamesNode(t *testing.T) {
	h := strings.Repeat("ab", 32)
	f := &forwarder{host: "pacs", procID: "42", cpNode: "node-a", cpSeq: 7, cpHash: h}
	c, ok := ParseCheckpoint(string(f.checkpointFrame(nil)))
	if !ok || c.Seq != 7 || c.Hash != h || c.Node != "node-a" {
		t.Fatalf("checkpoint %+v %v", c, ok)
	}
	f.cpNode = ""
	if c, ok := ParseCheckpoint(string(f.checkpointFrame(nil))); !ok || c.Node != "" {
		t.Fatalf("checkpoint without a node: %+v %v", c, ok)
	}
}
