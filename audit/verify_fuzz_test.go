package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzVerifyLog: `ward audit verify` and `ward audit query` read a log an
// attacker may have edited, and Open reads its last record back to resume
// the chain. Whatever the file holds gives a count and a *BreakError, never
// a panic; a log that verifies resumes at its last record.
func FuzzVerifyLog(f *testing.F) {
	dir := f.TempDir()
	newLog(f, dir, 3)
	good, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(bytes.Replace(good, []byte(`"seq":2`), []byte(`"seq":7`), 1))
	f.Add(bytes.ReplaceAll(good, []byte("\n"), []byte("\r\n")))
	// A keyed log (format 2) after two unkeyed records, with an outage
	// record: checked with its key below.
	kdir := f.TempDir()
	newLog(f, kdir, 2)
	key := newKeyedLog(f, kdir, filepath.Join(f.TempDir(), KeyFileName), 2)
	keyed, err := os.ReadFile(filepath.Join(kdir, FileName))
	if err != nil {
		f.Fatal(err)
	}
	outage := &Record{Seq: 5, Prev: "x", Event: "security-alert", Outcome: OutcomeSeriousFail,
		Outage: &Outage{Lost: 3, LostEvents: map[string]int{"query": 3}, Err: "no space left on device"}, XML: "<AuditMessage/>"}
	line, _ := outage.encode(key)
	f.Add(keyed)
	f.Add(append(append(keyed, line...), '\n'))
	f.Add(bytes.Replace(keyed, []byte(`{"v":2,`), []byte(`{`), 1))
	f.Add(bytes.Replace(keyed, []byte(`{"v":2,`), []byte(`{"v":3,`), 1))
	f.Add([]byte("{}\n"))
	f.Add([]byte("\n\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := Verify(bytes.NewReader(b))
		var be *BreakError
		if err != nil && !errors.As(err, &be) {
			t.Fatalf("Verify: %v is not a *BreakError", err)
		}
		_ = Each(bytes.NewReader(b), func(*Record) error { return nil })
		s, kerr := VerifyLog(bytes.NewReader(b), VerifyOptions{Key: key, Checkpoints: []Checkpoint{{Seq: 3, Hash: ZeroHash}}})
		if kerr != nil && !errors.As(kerr, &be) {
			t.Fatalf("VerifyLog: %v is not a *BreakError", kerr)
		}
		if s == nil || s.Records < s.Keyed || s.Records < len(s.Outages) {
			t.Fatalf("VerifyLog summary %+v", s)
		}
		end, last, lerr := lastLine(bytes.NewReader(b), int64(len(b)))
		if lerr != nil || end < 0 || end > int64(len(b)) {
			t.Fatalf("lastLine: end %d of %d, %v", end, len(b), lerr)
		}
		if err == nil && n > 0 && bytes.HasSuffix(b, []byte("\n")) {
			var r Record
			if jerr := json.Unmarshal(last, &r); jerr != nil || r.Seq != uint64(n) {
				t.Fatalf("a log of %d good records resumes at %q (seq %d, %v)", n, last, r.Seq, jerr)
			}
		}
	})
}
