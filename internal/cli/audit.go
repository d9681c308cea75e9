package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/termsafe"
)

var auditCmd = &command{
	name: "audit", summary: "verify, tail and search the audit trail (PS3.15 A.5)",
	help: `The audit trail is Ward's hash-chained log of audit messages (PS3.15
A.5), DATA/audit/` + audit.FileName + ` unless the configuration or --file says
otherwise.`,
	subs: []*command{
		{
			name: "verify", summary: "check the audit log's chain and its records' MACs (with its key); exit 1 at the first broken record",
			args: "[--key FILE] [--checkpoint SEQ:HASH]... [--checkpoints FILE] [--file FILE | --config FILE | --data DIR]",
			help: `Checks that the records of the audit log form an unbroken hash chain, and
their MACs with the log's key (a log without a key is checked as a plain
chain), and that it holds the collector's checkpoints given. It prints
the outages the log records, and exits 1 at the first broken record.`,
			flags: auditVerifyFlags,
		},
		{
			name: "tail", summary: "print the last records (-n N)",
			args:  "[-n N] [--json] [--xml] [--file FILE | --config FILE | --data DIR]",
			help:  "Prints the last N records of the audit log, one line each.",
			flags: auditListFlags("tail"),
		},
		{
			name: "search", summary: "print the records matching --since, --until, --peer, --event, --patient",
			args:  "[--since T] [--until T] [--peer AET] [--event E] [--patient ID] [-n N] [--json] [--xml] [--file FILE | --config FILE | --data DIR]",
			help:  "Prints the records of the audit log that match every flag given, one\nline each, the first N of them (-n; 0: all).",
			flags: auditListFlags("search"),
		},
	},
}

// auditFlags are the flags that locate the log.
type auditFlags struct {
	dataFlags
	file *string
}

func addAuditFlags(fs *flag.FlagSet) auditFlags {
	return auditFlags{
		dataFlags: addDataFlags(fs),
		file:      fs.String("file", "", "the audit log file (default: from the configuration, DATA/audit/"+audit.FileName+")"),
	}
}

func (f auditFlags) path() (string, error) {
	if *f.file != "" {
		return *f.file, nil
	}
	c, err := f.load()
	if err != nil {
		return "", err
	}
	return filepath.Join(c.AuditDir(), audit.FileName), nil
}

// open opens the audit log the flags name; the caller closes it.
func (f auditFlags) open() (string, *os.File, error) {
	path, err := f.path()
	if err != nil {
		return "", nil, err
	}
	file, err := os.Open(path)
	return path, file, err
}

func auditVerifyFlags(fs *flag.FlagSet) runFunc {
	af := addAuditFlags(fs)
	keyFile := fs.String("key", "", "the log's key file (default: from the configuration, DATA/"+audit.KeyFileName+")")
	var cps []audit.Checkpoint
	fs.Func("checkpoint", "a checkpoint from the collector, SEQ:HASH (repeatable)", func(v string) error {
		seq, hash, ok := strings.Cut(v, ":")
		n, err := strconv.ParseUint(seq, 10, 64)
		if !ok || err != nil || n == 0 || len(hash) != 64 {
			return fmt.Errorf("%q: want SEQ:HASH (64 hex digits)", v)
		}
		cps = append(cps, audit.Checkpoint{Seq: n, Hash: hash})
		return nil
	})
	cpFile := fs.String("checkpoints", "", "a file of the collector's messages: every WARD-CHECKPOINT line in it is checked")
	return func(e *env, _ []string) error {
		return verifyAudit(e, af, *keyFile, *cpFile, cps)
	}
}

func verifyAudit(e *env, af auditFlags, keyFile, cpFile string, cps []audit.Checkpoint) error {
	if cpFile != "" {
		more, err := readCheckpoints(cpFile)
		if err != nil {
			return err
		}
		if len(more) == 0 {
			return fmt.Errorf("%s: no WARD-CHECKPOINT message in it", cpFile)
		}
		// A collector shared by a cluster's nodes holds every node's
		// checkpoints: only this node's (and those naming none) are of
		// this log.
		if node := localNode(af); node != "" {
			mine := more[:0]
			others := 0
			for _, c := range more {
				if c.Node == "" || c.Node == node {
					mine = append(mine, c)
				} else {
					others++
				}
			}
			if len(mine) == 0 {
				return fmt.Errorf("%s: no WARD-CHECKPOINT message of node %s in it (%d of other nodes)", cpFile, node, others)
			}
			if others > 0 {
				fmt.Fprintf(e.stdout, "%s: %d checkpoints of other nodes left aside\n", cpFile, others)
			}
			more = mine
		}
		cps = append(cps, more...)
	}
	kpath := keyFile
	if kpath == "" {
		if c, err := af.load(); err == nil {
			kpath = c.AuditKeyFile()
		}
	}
	var key *audit.Key
	if kpath != "" {
		k, err := audit.LoadKey(kpath)
		switch {
		case err == nil:
			key = k
		case errors.Is(err, iofs.ErrNotExist) && keyFile == "":
			// No key yet (a log written before keys): checked as a chain.
		default:
			return err
		}
	}
	path, f, err := af.open()
	if err != nil {
		return err
	}
	defer f.Close()
	sum, err := audit.VerifyLog(f, audit.VerifyOptions{Key: key, Checkpoints: cps})
	for _, o := range sum.Outages {
		fmt.Fprintf(e.stdout, "%s: seq %d records an outage: the log could not be written from %s to %s; %d records lost (%s)\n", path, o.Seq,
			o.Outage.From.Format(time.RFC3339), o.Outage.To.Format(time.RFC3339), o.Outage.Lost, termsafe.Text(o.Outage.Err, ""))
	}
	var be *audit.BreakError
	if errors.As(err, &be) {
		fmt.Fprintf(e.stdout, "%s: %d records verified before line %d\n", path, sum.Records, be.Line)
		return &exitError{code: 1, err: fmt.Errorf("%s: %w", path, err)}
	}
	if err != nil {
		return err
	}
	how := "no key: checked as a plain hash chain, which whoever can write the file can recompute"
	if key != nil {
		how = fmt.Sprintf("%d signed with the key %s", sum.Keyed, key.Path)
		if n := sum.Records - sum.Keyed; n > 0 {
			how += fmt.Sprintf(", %d written before it and sealed by the first signed one", n)
		}
	}
	if len(cps) > 0 {
		how += fmt.Sprintf("; %d of %d checkpoints found", sum.Checkpoints, len(cps))
	}
	outages := ""
	if n := len(sum.Outages); n > 0 {
		outages = fmt.Sprintf(", with %d outage(s) recorded (above)", n)
	}
	fmt.Fprintf(e.stdout, "%s: %d records (%s), chain intact%s\n", path, sum.Records, how, outages)
	return nil
}

// readCheckpoints reads the checkpoints in a file of collector messages.
func readCheckpoints(path string) ([]audit.Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []audit.Checkpoint
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), audit.MaxLine)
	for sc.Scan() {
		if c, ok := audit.ParseCheckpoint(sc.Text()); ok {
			out = append(out, c)
		}
	}
	return out, sc.Err()
}

// auditListFlags is ward audit tail or search (name).
func auditListFlags(name string) func(*flag.FlagSet) runFunc {
	return func(fs *flag.FlagSet) runFunc {
		af := addAuditFlags(fs)
		defN := 20
		if name == "search" {
			defN = 0
		}
		n := fs.Int("n", defN, "how many records (tail: the last N; search: the first N; 0: all)")
		asJSON := fs.Bool("json", false, "print the records as stored (JSON lines with the XML message)")
		withXML := fs.Bool("xml", false, "print each record's AuditMessage after its summary")
		var since, until, peer, event, patient *string
		if name == "search" {
			since = fs.String("since", "", "records at or after this time (RFC 3339, YYYY-MM-DD, or a duration ago such as 24h)")
			until = fs.String("until", "", "records before this time (same forms)")
			peer = fs.String("peer", "", "records with this AE title as a participant")
			event = fs.String("event", "", "event: application-activity, authentication, security-alert, query, begin-transferring, instances-transferred, instances-accessed, study-deleted, export")
			patient = fs.String("patient", "", "records about this patient ID")
		}
		return func(e *env, _ []string) error {
			match := func(*audit.Record) bool { return true }
			if name == "search" {
				var from, to time.Time
				var err error
				if from, err = parseWhen(*since); err != nil {
					return fmt.Errorf("--since: %w", err)
				}
				if to, err = parseWhen(*until); err != nil {
					return fmt.Errorf("--until: %w", err)
				}
				match = func(r *audit.Record) bool {
					switch {
					case !from.IsZero() && r.Time.Before(from),
						!to.IsZero() && !r.Time.Before(to),
						*peer != "" && !slices.Contains(r.Peers, *peer),
						*event != "" && r.Event != *event,
						*patient != "" && !slices.Contains(r.Patients, *patient):
						return false
					}
					return true
				}
			}
			_, f, err := af.open()
			if err != nil {
				return err
			}
			defer f.Close()
			var out []audit.Record
			err = audit.Each(f, func(r *audit.Record) error {
				if !match(r) {
					return nil
				}
				if name == "search" && *n > 0 && len(out) >= *n {
					return io.EOF
				}
				out = append(out, *r)
				if name == "tail" && *n > 0 && len(out) > *n {
					out = out[1:]
				}
				return nil
			})
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			for i := range out {
				printRecord(e.stdout, &out[i], *asJSON, *withXML)
			}
			return nil
		}
	}
}

func printRecord(w io.Writer, r *audit.Record, asJSON, withXML bool) {
	if asJSON {
		b, _ := json.Marshal(r)
		fmt.Fprintln(w, string(b))
		return
	}
	// Peers and patient IDs came from the network: escaped (termsafe),
	// as is every other field a person editing the file could have set.
	fmt.Fprintf(w, "%d\t%s\t%s\toutcome=%d\tpeers=%s\tpatients=%s\n", r.Seq, r.Time.Format(time.RFC3339Nano), termsafe.Quote(r.Event), r.Outcome,
		termsafe.List(r.Peers, ","), termsafe.List(r.Patients, ","))
	if withXML {
		fmt.Fprintln(w, termsafe.Text(r.XML, ""))
	}
}

// parseWhen reads RFC 3339, a date (UTC midnight), or a duration ago.
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q: use RFC 3339, YYYY-MM-DD or a duration such as 24h", s)
}

// localNode is the node ID of the data directory the flags name: node_id,
// else DATA/node-id; "" when none is known (the file is only read).
func localNode(af auditFlags) string {
	c, err := af.load()
	if err != nil {
		return ""
	}
	if c.NodeID != "" {
		return c.NodeID
	}
	b, err := os.ReadFile(filepath.Join(c.DataDir, "node-id"))
	if err != nil {
		return ""
	}
	if id := strings.TrimSpace(string(b)); config.ValidNodeID(id) {
		return id
	}
	return ""
}
