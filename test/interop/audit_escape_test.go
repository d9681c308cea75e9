package interop

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
)

// TestAuditTailEscapesNetworkText: calling AE titles sent by DCMTK's
// echoscu with an escape sequence ("\x1b]0;X\x07A" retitles an xterm) and
// with a newline and a tab ("A\nFAKE\tline" forged a record's line) are
// recorded as received, and `ward audit tail` and `ward audit search`
// print them escaped, as Ward's own log does: no control character
// reaches the terminal and every record stays one line.
func TestAuditTailEscapesNetworkText(t *testing.T) {
	requireTool(t, "echoscu")
	w := startWard(t)
	evil := []string{"\x1b]0;X\x07A", "A\nFAKE\tline"}
	for _, aet := range evil {
		// Accepted or refused, the association request is recorded.
		_, _ = dcmtk("echoscu", "-aet", aet, "-aec", "WARD", w.host, w.port).CombinedOutput()
	}
	readAudit(t, w.dir, func(recs []audit.Record) bool {
		n := 0
		for _, r := range recs {
			for _, e := range evil {
				if slices.Contains(r.Peers, e) {
					n++
				}
			}
		}
		return n >= len(evil)
	})
	file := filepath.Join(w.dir, "audit", audit.FileName)
	for _, args := range [][]string{
		{"audit", "tail", "--file", file},
		{"audit", "tail", "--xml", "--file", file},
		{"audit", "search", "--event", "authentication", "--file", file},
	} {
		out, code := wardCLI(t, args...)
		if code != 0 {
			t.Fatalf("ward %s: exit %d", strings.Join(args, " "), code)
		}
		if i := strings.IndexFunc(out, func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' || r == 0x7f }); i >= 0 {
			t.Errorf("ward %s printed a control character %q:\n%q", strings.Join(args, " "), out[i], out)
		}
		for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			if strings.HasPrefix(line, "FAKE") || strings.HasPrefix(line, "line") {
				t.Errorf("ward %s: a peer forged a line: %q", strings.Join(args, " "), line)
			}
		}
		if args[1] != "tail" || len(args) == 4 {
			for _, want := range []string{`peers="\x1b]0;X\aA"`, `peers="A\nFAKE\tline"`} {
				if !strings.Contains(out, want) {
					t.Errorf("ward %s: %s missing:\n%s", strings.Join(args, " "), want, out)
				}
			}
		}
	}
}

// TestAuditRewriteDetected is issue 14 item 8 end to end: a log written by
// `ward serve` for DCMTK's echoscu and findscu, then one record removed
// and every hash after it recomputed, as the tester did. `ward audit
// verify` with the log's key finds it whether the forger rehashes with
// SHA-256 (the old format) or with a key of his own; the untouched log
// verifies.
func TestAuditRewriteDetected(t *testing.T) {
	requireTool(t, "echoscu", "findscu")
	w := startWard(t)
	for i := 0; i < 3; i++ {
		if out, err := dcmtk("echoscu", "-aet", "MODALITY", "-aec", "WARD", w.host, w.port).CombinedOutput(); err != nil {
			t.Fatalf("echoscu: %v\n%s", err, out)
		}
		if out, err := dcmtk("findscu", "-S", "-aet", "VIEWER", "-aec", "WARD", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=P1", w.host, w.port).CombinedOutput(); err != nil {
			t.Fatalf("findscu: %v\n%s", err, out)
		}
	}
	recs := readAudit(t, w.dir, func(r []audit.Record) bool { return count(r, "query") == 3 && count(r, "authentication") == 6 })
	w.stop()
	file := filepath.Join(w.dir, "audit", audit.FileName)
	key := filepath.Join(w.dir, audit.KeyFileName)
	if out, code := wardCLI(t, "audit", "verify", "--file", file, "--key", key); code != 0 || !strings.Contains(out, "chain intact") {
		t.Fatalf("the untouched log: exit %d\n%s", code, out)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < len(recs) || len(lines) < 6 {
		t.Fatalf("%d lines", len(lines))
	}
	// Remove the fourth record (a Query: who looked up P1) and rehash.
	kept := append(lines[:3:3], lines[4:]...)
	for _, tc := range []struct {
		name string
		mac  func([]byte) string
	}{
		{"rehashed with SHA-256", func(body []byte) string { s := sha256.Sum256(body); return hex.EncodeToString(s[:]) }},
		{"re-signed with another key", func(body []byte) string {
			h := hmac.New(sha256.New, []byte("the forger's guess"))
			h.Write(body)
			return hex.EncodeToString(h.Sum(nil))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forged := forgeChain(t, kept, tc.mac, strings.HasPrefix(tc.name, "rehashed"))
			path := filepath.Join(t.TempDir(), "forged.log")
			if err := os.WriteFile(path, []byte(strings.Join(forged, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(tc.name, "rehashed") {
				// The forgery is a well-formed chain: read as the old
				// format did, without the key, it is "intact".
				f, _ := os.Open(path)
				n, err := audit.Verify(f)
				f.Close()
				if err != nil || n != len(forged) {
					t.Fatalf("the forgery is not a valid unkeyed chain: %d, %v", n, err)
				}
			}
			var out, errb bytes.Buffer
			if code := runCLI([]string{"audit", "verify", "--file", path, "--key", key}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "audit chain broken") {
				t.Fatalf("ward audit verify of a forged log: exit %d\n%s%s", code, out.String(), errb.String())
			} else {
				t.Logf("%s", strings.TrimSpace(errb.String()))
			}
		})
	}
}

// forgeChain renumbers lines and recomputes each record's prev and hash
// with mac, as a forger without the log's key would; dropV writes the
// records in the old format (no "v").
func forgeChain(t *testing.T, lines []string, mac func([]byte) string, dropV bool) []string {
	t.Helper()
	prev := audit.ZeroHash
	out := make([]string, len(lines))
	for i, line := range lines {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		// Rebuild the line in the stored order with the new seq and prev.
		var b strings.Builder
		b.WriteString("{")
		if !dropV {
			b.WriteString(`"v":2,`)
		}
		fmt.Fprintf(&b, `"seq":%d,"time":%s,"prev":%q`, i+1, m["time"], prev)
		for _, k := range []string{"event", "outcome", "peers", "patients", "outage", "xml"} {
			if v, ok := m[k]; ok {
				fmt.Fprintf(&b, `,%q:%s`, k, v)
			}
		}
		body := b.String() + "}"
		h := mac([]byte(body))
		out[i] = b.String() + `,"hash":"` + h + `"}`
		prev = h
	}
	return out
}

// TestWardFindEscapesPeerValues: a hostile Q/R SCP (Ward's fake archive,
// answering with what it stores) puts an escape sequence and a newline in
// a patient name; `ward find` prints the match escaped, on one line (the
// ESC itself the character set decoder already replaces with U+FFFD).
func TestWardFindEscapesPeerValues(t *testing.T) {
	a := &dimsetest.Archive{}
	a.Add(dimsetest.NewObject(map[string]string{
		"PatientID": "P9", "PatientName": "EVIL\x1b]0;X\x07^A\nFAKE\tROW",
		"StudyInstanceUID": "1.2.826.0.1.3680043.10.1432.99.1", "SeriesInstanceUID": "1.2.826.0.1.3680043.10.1432.99.1.1",
		"SOPInstanceUID": "1.2.826.0.1.3680043.10.1432.99.1.1.1", "StudyDate": "20240101", "Modality": "CT",
	}, dicom.ExplicitVRLittleEndian, ""))
	s, err := dimsetest.Start(a, dimsetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, code := wardCLI(t, "find", "--aec", "WARD", "-S", "--level", "STUDY", "-k", "PatientID=P9", "-k", "PatientName", s.Addr)
	if code != 0 {
		t.Fatalf("ward find: exit %d", code)
	}
	if strings.ContainsAny(out, "\x1b\x07") || strings.Count(out, "\n") != 2 || !strings.Contains(out, `0;X\a^A\nFAKE\tROW`) {
		t.Errorf("ward find printed:\n%q", out)
	}
}
