package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxLine bounds one record line when reading a log.
const MaxLine = 8 << 20

// BreakError names the first record where the chain is broken.
type BreakError struct {
	Line   int    // 1-based line number
	Seq    uint64 // the record's seq as written (0 when unreadable)
	Reason string
}

func (e *BreakError) Error() string {
	return fmt.Sprintf("audit chain broken at line %d (seq %d): %s", e.Line, e.Seq, e.Reason)
}

// ErrBroken is what every *BreakError unwraps to.
var ErrBroken = errors.New("audit: chain broken")

func (e *BreakError) Unwrap() error { return ErrBroken }

// Verify reads a log without its key and checks every record: its hash,
// that it names the hash of the one before, and that seq counts up from 1
// by one. A keyed record cannot be checked without the key: it is a break.
// It returns the number of good records, and a *BreakError for the first
// broken one. VerifyLog checks keyed logs.
func Verify(r io.Reader) (int, error) {
	s, err := VerifyLog(r, VerifyOptions{})
	return s.Records, err
}

// VerifyOptions are what VerifyLog checks a log against.
type VerifyOptions struct {
	// Key checks the records' MACs (format 2), and that none at or after
	// Key.From is unkeyed. Without it a keyed record is a break.
	Key *Key
	// Checkpoints are chain heads known from elsewhere (sent to the
	// collector, forward.go): the log must hold each, unchanged.
	Checkpoints []Checkpoint
}

// Checkpoint is a record's seq and hash as sent outside the machine.
type Checkpoint struct {
	Seq  uint64
	Hash string
	// Node is the node the checkpoint names ("" when none: a single
	// Ward, or one from before nodes were named).
	Node string
}

// Summary is what VerifyLog read.
type Summary struct {
	// Records is the number of good records (before the break, if any).
	Records int
	// Keyed is how many of them are keyed.
	Keyed int
	// Last is the last good record's seq, LastHash its hash.
	Last     uint64
	LastHash string
	// Outages are the records that close a time when the log could not
	// be written, in order.
	Outages []Record
	// Checkpoints is how many of the given checkpoints were found.
	Checkpoints int
}

// VerifyLog reads a log and checks every record: its hash (the MAC under
// o.Key for a keyed record), that it names the hash of the one before,
// that seq counts up from 1 by one, that the format never goes back from
// keyed to unkeyed and agrees with the key's first seq, and that every
// checkpoint is in the log. It returns what it read up to the first
// broken record, and a *BreakError for that record.
func VerifyLog(r io.Reader, o VerifyOptions) (*Summary, error) {
	s := &Summary{LastHash: ZeroHash}
	cps := map[uint64]string{}
	var maxCP uint64
	for _, c := range o.Checkpoints {
		cps[c.Seq] = c.Hash
		maxCP = max(maxCP, c.Seq)
	}
	lines := 0
	err := scan(r, func(line []byte, lineNo int) error {
		lines = lineNo
		var rec Record
		if err := json.Unmarshal(line, &rec); err != nil {
			return &BreakError{Line: lineNo, Reason: "not a record: " + err.Error()}
		}
		var key *Key
		switch {
		case rec.V == formatMAC && o.Key == nil:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: "the record is signed with the log's key: give the key to check it"}
		case rec.V == formatMAC && rec.Seq < o.Key.From:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: fmt.Sprintf("a keyed record before the key's first (seq %d): not this log's key, or the log was rewritten", o.Key.From)}
		case rec.V == formatMAC:
			key = o.Key
		case rec.V != formatHash:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: fmt.Sprintf("unknown record format %d", rec.V)}
		case s.Keyed > 0:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: "an unkeyed record after keyed ones (rewritten without the key)"}
		case o.Key != nil && rec.Seq >= o.Key.From:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: fmt.Sprintf("an unkeyed record where the key signs every record from seq %d on (rewritten without the key)", o.Key.From)}
		}
		got, claimed, ok := lineHash(line, key)
		switch {
		case !ok:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: "the line does not end with its hash"}
		case got != claimed && key != nil:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: "the record was altered (its MAC does not match its content under the key)"}
		case got != claimed:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: "the record was altered (its hash does not match its content)"}
		case rec.Seq != s.Last+1:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: fmt.Sprintf("seq %d follows seq %d (a record was removed, inserted or moved)", rec.Seq, s.Last)}
		case rec.Prev != s.LastHash:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: "prev is not the hash of the record before"}
		}
		if h, ok := cps[rec.Seq]; ok {
			if h != claimed {
				return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: "the record differs from its checkpoint sent outside the machine"}
			}
			s.Checkpoints++
		}
		s.LastHash, s.Last = claimed, rec.Seq
		s.Records++
		if key != nil {
			s.Keyed++
		}
		if rec.Outage != nil {
			rec.XML = ""
			s.Outages = append(s.Outages, rec)
		}
		return nil
	})
	if err == nil && o.Key != nil && s.Last+1 < o.Key.From {
		// The key was made when the log held From-1 records.
		err = &BreakError{Line: lines + 1, Reason: fmt.Sprintf("the log ends at seq %d, before seq %d-1 where it ended when its key was made: records were cut from its end", s.Last, o.Key.From)}
	}
	if err == nil && maxCP > s.Last {
		err = &BreakError{Line: lines + 1, Reason: fmt.Sprintf("the log ends at seq %d but a checkpoint sent outside the machine names seq %d: records were cut from its end", s.Last, maxCP)}
	}
	return s, err
}

// Each calls fn for every record of a log in order. It stops at the first
// line that is not a record.
func Each(r io.Reader, fn func(*Record) error) error {
	return scan(r, func(line []byte, lineNo int) error {
		var rec Record
		if err := json.Unmarshal(line, &rec); err != nil {
			return fmt.Errorf("audit: line %d: %w", lineNo, err)
		}
		return fn(&rec)
	})
}

func scan(r io.Reader, fn func(line []byte, lineNo int) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		if err := fn(sc.Bytes(), lineNo); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return &BreakError{Line: lineNo + 1, Reason: err.Error()}
	}
	return nil
}
