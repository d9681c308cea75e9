package audit

import (
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fullDisk is the log file with a switch: while full, writes are cut short
// with ENOSPC after a few bytes (as a full file system does), and an fsync
// may fail too.
type fullDisk struct {
	appender
	full      atomic.Bool
	syncFails atomic.Bool
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if d.full.Load() {
		n := min(len(p), 7)
		d.appender.Write(p[:n])
		return n, syscall.ENOSPC
	}
	return d.appender.Write(p)
}

func (d *fullDisk) Sync() error {
	if d.syncFails.Load() {
		return syscall.EIO
	}
	return d.appender.Sync()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOutageRecordedAndResumed is issue 14 item 7 in the audit package:
// after a write error the log used to stop for good. Now Err reports the
// failure, records are held up to MaxHeld and counted beyond it, and once
// the file can be written again the held records and an Audit Recording
// Started record carrying the outage (the count lost, from when to when)
// enter the chain, which verifies, with the outage reported.
func TestOutageRecordedAndResumed(t *testing.T) {
	oldHeld, oldRetry := MaxHeld, RetryInterval
	MaxHeld, RetryInterval = 5, 20*time.Millisecond
	defer func() { MaxHeld, RetryInterval = oldHeld, oldRetry }()
	for _, tc := range []struct {
		name       string
		syncFails  bool
		writeFails bool
	}{
		{"append fails (ENOSPC)", false, true},
		{"fsync fails (EIO)", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			keyFile := filepath.Join(t.TempDir(), KeyFileName)
			var disk *fullDisk
			l, err := Open(dir, nil, WithKeyFile(keyFile), func(o *options) {
				o.wrap = func(a appender) appender { disk = &fullDisk{appender: a}; return disk }
			})
			if err != nil {
				t.Fatal(err)
			}
			writeN(t, l, 3)
			if err := l.Sync(); err != nil || l.Err() != nil {
				t.Fatalf("healthy log: %v, %v", err, l.Err())
			}
			disk.full.Store(tc.writeFails)
			disk.syncFails.Store(tc.syncFails)
			writeN(t, l, 1)
			waitFor(t, "Err to report the failure", func() bool { return l.Err() != nil })
			writeN(t, l, 11) // 5 held in all, 7 lost
			if err := l.Sync(); err == nil {
				t.Fatal("Sync succeeded on a full disk")
			}
			if want := syscall.ENOSPC; tc.writeFails && !errors.Is(l.Err(), want) {
				t.Errorf("Err = %v, want %v", l.Err(), want)
			}
			disk.full.Store(false)
			disk.syncFails.Store(false)
			waitFor(t, "the log to be written again", func() bool { return l.Err() == nil })
			writeN(t, l, 2)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			key, err := LoadKey(keyFile)
			if err != nil {
				t.Fatal(err)
			}
			s, err := verifyKeyed(t, dir, VerifyOptions{Key: key})
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			// 3 before, 5 held, the outage record, 2 after.
			if s.Records != 11 || len(s.Outages) != 1 {
				t.Fatalf("%d records, outages %+v", s.Records, s.Outages)
			}
			o := s.Outages[0]
			if o.Seq != 9 || o.Event != "security-alert" || o.Outcome != OutcomeSeriousFail || o.Outage.Lost != 7 ||
				o.Outage.LostEvents["query"] != 7 || !o.Outage.To.After(o.Outage.From) || o.Outage.Err == "" {
				t.Errorf("outage record %+v %+v", o, o.Outage)
			}
			recs := readLines(t, dir)
			for _, want := range []string{`110134`, "7 records were lost", "5 records held"} {
				if !strings.Contains(recs[8], want) {
					t.Errorf("outage record lacks %q: %s", want, recs[8])
				}
			}
		})
	}
}

// Close while the disk is still full says what was not written.
func TestCloseWhileFailing(t *testing.T) {
	oldRetry := RetryInterval
	RetryInterval = 20 * time.Millisecond
	defer func() { RetryInterval = oldRetry }()
	var disk *fullDisk
	l, err := Open(t.TempDir(), nil, func(o *options) {
		o.wrap = func(a appender) appender { disk = &fullDisk{appender: a}; return disk }
	})
	if err != nil {
		t.Fatal(err)
	}
	disk.full.Store(true)
	writeN(t, l, 3)
	if err := l.Close(); !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "3 records not written") {
		t.Fatalf("Close: %v", err)
	}
}

// Probe has a failing log tried at once: service can resume the moment
// space is freed, not at the next retry (here an hour away).
func TestProbeRetriesAtOnce(t *testing.T) {
	oldRetry := RetryInterval
	RetryInterval = time.Hour
	defer func() { RetryInterval = oldRetry }()
	var disk *fullDisk
	l, err := Open(t.TempDir(), nil, func(o *options) {
		o.wrap = func(a appender) appender { disk = &fullDisk{appender: a}; return disk }
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Probe(time.Second); err != nil {
		t.Fatalf("Probe of a healthy log: %v", err)
	}
	disk.full.Store(true)
	writeN(t, l, 1)
	waitFor(t, "the failure", func() bool { return l.Err() != nil })
	time.Sleep(ProbeInterval)
	if err := l.Probe(time.Second); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Probe of a full disk: %v", err)
	}
	disk.full.Store(false)
	time.Sleep(ProbeInterval)
	if err := l.Probe(time.Second); err != nil || l.Err() != nil {
		t.Fatalf("Probe once space is free: %v, %v", err, l.Err())
	}
}
