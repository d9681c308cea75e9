package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
)

// AdminSocket is the name, in the data directory, of the Unix socket on
// which a running ward serve takes administration requests (ward study
// delete/export/verify, ward backup, ward status, and the reload that
// ward peer and ward user ask for) from the user it runs as (or root). The data directory is
// 0700 and the socket 0600.
const AdminSocket = "admin.sock"

// StudyRequest asks to delete, export or verify studies (verify: every
// study when none is named), or to back the archive up (into Out).
type StudyRequest struct {
	Op      string   `json:"op"` // "delete", "export", "verify", "backup", "status" or "reload"
	Studies []string `json:"studies"`
	Reason  string   `json:"reason,omitempty"`   // delete: required
	Out     string   `json:"out,omitempty"`      // export, backup: absolute folder
	Media   string   `json:"media,omitempty"`    // export: usb, cd, dvd, email, uri
	MaxRate int64    `json:"max_rate,omitempty"` // verify, backup: bytes per second (0: no cap)
}

// StudyResult is the outcome for one study.
type StudyResult struct {
	Study     string `json:"study"`
	Instances int    `json:"instances"`
	Error     string `json:"error,omitempty"`
}

// MediaTypes are the export media a StudyRequest may name (PS3.16 CID 405).
var MediaTypes = map[string]*audit.Code{"usb": audit.MediaUSB, "cd": audit.MediaCD, "dvd": audit.MediaDVD, "email": audit.MediaEmail, "uri": audit.MediaURI}

// Check validates a request.
func (r *StudyRequest) Check() error {
	switch {
	case r.Op != "delete" && r.Op != "export" && r.Op != "verify" && r.Op != "backup" && r.Op != "status" && r.Op != "reload":
		return fmt.Errorf("unknown operation %q", r.Op)
	case r.Op == "status", r.Op == "reload":
		return nil
	case r.Op == "backup" && len(r.Studies) > 0:
		return errors.New("a backup is of the whole archive")
	case r.Op == "backup" && !filepath.IsAbs(r.Out):
		return errors.New("a backup needs an absolute folder")
	case len(r.Studies) == 0 && r.Op != "verify" && r.Op != "backup":
		return errors.New("no study given")
	case r.Op == "delete" && r.Reason == "":
		return errors.New("a deletion needs a reason (it is recorded in the audit trail)")
	case r.Op == "export" && !filepath.IsAbs(r.Out):
		return errors.New("an export needs an absolute folder")
	case r.MaxRate < 0:
		return errors.New("a negative rate")
	case r.Op == "export" && MediaTypes[r.Media] == nil:
		return fmt.Errorf("media %q: use usb, cd, dvd, email or uri", r.Media)
	}
	return nil
}

// trail is where a study operation records its audit messages: record
// queues one, sync returns once those queued are on disk (nil: nothing
// to wait for).
type trail struct {
	record func(*audit.Message)
	sync   func() error
}

// runStudyOp deletes or exports each study with ar and records the audit
// message of each (operator names who asked).
func runStudyOp(ctx context.Context, ar *archive.Archive, tr trail, ward audit.Node, operator string, r *StudyRequest) []StudyResult {
	who := audit.Node{AETitle: "ward study " + r.Op, ID: operator}
	out := make([]StudyResult, 0, len(r.Studies))
	for _, uid := range r.Studies {
		res := StudyResult{Study: uid}
		var err error
		if r.Op == "delete" {
			var d *archive.Deletion
			d, err = ar.DeleteStudy(ctx, uid, r.Reason, operator)
			if d != nil {
				// Deleted from the index: recorded as done (objects a
				// failure left are removed at the next start).
				res.Instances = auditDeletions(ctx, ar, tr, ward, []*archive.Deletion{d})
			}
		} else {
			var d *archive.StudySummary
			d, err = ar.ExportStudy(ctx, uid, r.Out)
			if d != nil && len(d.Classes) > 0 {
				st := &audit.Study{UID: d.UID, PatientID: d.PatientID, Classes: d.Classes}
				res.Instances = st.Instances()
				outcome := audit.OutcomeSuccess
				if err != nil {
					outcome = audit.OutcomeSeriousFail
				}
				tr.record(audit.Export(ward, who, audit.Media{ID: r.Out, Type: MediaTypes[r.Media]}, outcome, []*audit.Study{st}, time.Now()))
			}
		}
		if err != nil {
			res.Error = err.Error()
		}
		out = append(out, res)
	}
	return out
}

// auditDeletions records each deletion as Study Deleted (PS3.15 A.5.3.5)
// with its reason and operator and, once the records are on disk,
// forgets the index's notes of them. It returns the instances deleted.
// Should Ward stop before the notes are forgotten, the next start
// records the deletions again (see finishDeletions): a deletion may be
// recorded twice, never not at all.
func auditDeletions(ctx context.Context, ar *archive.Archive, tr trail, ward audit.Node, ds []*archive.Deletion) int {
	n := 0
	for _, d := range ds {
		st := &audit.Study{UID: d.Study.UID, PatientID: d.Study.PatientID, Classes: d.Study.Classes}
		n += st.Instances()
		who := audit.Node{AETitle: "ward study delete", ID: d.Operator}
		tr.record(audit.StudyDeleted(ward, who, audit.OutcomeSuccess, []*audit.Study{st}, d.Reason, d.At))
	}
	if tr.sync != nil {
		if err := tr.sync(); err != nil {
			ar.Logger.Error("the audit records of study deletions may not be on disk; they are recorded again at the next start", "err", err)
			return n
		}
	}
	for _, d := range ds {
		if err := ar.DeletionAudited(context.WithoutCancel(ctx), d); err != nil {
			ar.Logger.Error("forgetting an audited deletion failed; it is recorded again at the next start", "err", err)
		}
	}
	return n
}

// finishDeletions audits the study deletions the index kept a note of
// and the audit trail may lack: a crash came after the deletion was
// committed and before its record was safe. (The objects of such a
// deletion are removed by ar.Open, as any recorded for deletion.)
func finishDeletions(ctx context.Context, ar *archive.Archive, tr trail, ward audit.Node) error {
	ds, err := ar.RecordedDeletions(ctx)
	if err != nil {
		return fmt.Errorf("study deletions cut short: %w", err)
	}
	if len(ds) == 0 {
		return nil
	}
	ar.Logger.Warn("study deletions cut short by a stop were finished at start; recording them in the audit trail", "deletions", len(ds))
	auditDeletions(ctx, ar, tr, ward, ds)
	return nil
}

// StudyOp runs r on the stopped Ward of the admin's data directory.
func (a *Admin) StudyOp(ctx context.Context, operator string, r *StudyRequest) ([]StudyResult, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	if r.Op == "verify" || r.Op == "backup" || r.Op == "status" {
		return nil, fmt.Errorf("%s is a method of Admin of its own", r.Op)
	}
	var rerr error
	tr := a.trail(func(err error) { rerr = errors.Join(rerr, err) })
	res := runStudyOp(ctx, a.Archive, tr, a.Node(), operator, r)
	return res, rerr
}

// VerifyResult is the outcome of a verification: the counts and the
// first MaxVerifyProblems problems.
type VerifyResult struct {
	Report   archive.VerifyReport    `json:"report"`
	Problems []archive.VerifyProblem `json:"problems"`
}

// MaxVerifyProblems caps the problems a VerifyResult lists (the report
// counts them all).
const MaxVerifyProblems = 10000

// Verify checks the stored objects of the stopped Ward against its index
// (archive.Verify).
func (a *Admin) Verify(ctx context.Context, o archive.VerifyOptions) (*VerifyResult, error) {
	return runVerify(ctx, a.Archive, o)
}

func runVerify(ctx context.Context, ar *archive.Archive, o archive.VerifyOptions) (*VerifyResult, error) {
	res := &VerifyResult{Problems: []archive.VerifyProblem{}}
	rep, err := ar.Verify(ctx, o, func(p archive.VerifyProblem) {
		if len(res.Problems) < MaxVerifyProblems {
			res.Problems = append(res.Problems, p)
		}
	})
	res.Report = rep
	return res, err
}

// ErrNoServer: no ward serve answers on the data directory's admin socket.
var ErrNoServer = errors.New("no ward serve is running on this data directory")

// RemoteStudyOp sends r to the ward serve running on dataDir, which runs it
// and records it in its audit trail under the calling user's name.
func RemoteStudyOp(ctx context.Context, dataDir string, r *StudyRequest) ([]StudyResult, error) {
	var resp struct {
		Error   string        `json:"error,omitempty"`
		Results []StudyResult `json:"results"`
	}
	if err := adminCall(ctx, dataDir, r, &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return nil, errors.New(resp.Error)
	}
	return resp.Results, nil
}

// RemoteVerify asks the ward serve running on dataDir to verify its
// stored objects.
func RemoteVerify(ctx context.Context, dataDir string, o archive.VerifyOptions) (*VerifyResult, error) {
	var resp struct {
		Error string `json:"error,omitempty"`
		VerifyResult
	}
	if err := adminCall(ctx, dataDir, &StudyRequest{Op: "verify", Studies: o.Studies, MaxRate: o.MaxRate}, &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return &resp.VerifyResult, errors.New(resp.Error)
	}
	return &resp.VerifyResult, nil
}

// Reloaded is what a running ward serve has in effect after a reload: the
// AE titles of its peers and the names of its users.
type Reloaded struct {
	Peers []string `json:"peers"`
	Users []string `json:"users"`
}

// RemoteReload asks the ward serve running on dataDir to read its
// configuration again and put its peers and users in effect at once (what
// SIGHUP does), and returns what it then has in effect.
func RemoteReload(ctx context.Context, dataDir string) (*Reloaded, error) {
	var resp struct {
		Error string `json:"error,omitempty"`
		Reloaded
	}
	if err := adminCall(ctx, dataDir, &StudyRequest{Op: "reload"}, &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return nil, errors.New(resp.Error)
	}
	return &resp.Reloaded, nil
}

// adminCall sends req to the ward serve on dataDir's admin socket and
// decodes its one answer into resp.
func adminCall(ctx context.Context, dataDir string, req, resp any) error {
	addr, done, err := socketAddr(dataDir)
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrNoServer, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", addr)
	done()
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrNoServer, err)
	}
	defer conn.Close()
	// Cancelling ctx hangs up, which ends a verification or a backup the
	// server was running for this call.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return err
	}
	if err := json.NewDecoder(io.LimitReader(conn, 64<<20)).Decode(resp); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("reading ward serve's answer: %w", err)
	}
	return nil
}

// listenAdmin opens the admin socket. A socket file left by a Ward that
// did not stop cleanly is replaced: only one ward serve runs on a data
// directory (its audit log is locked, its listeners bound).
func (s *Server) listenAdmin() error {
	path := filepath.Join(s.Config.DataDir, AdminSocket)
	addr, done, err := socketAddr(s.Config.DataDir)
	if errors.Is(err, errPathTooLong) {
		s.Logger.Warn("no admin socket: the data directory's path is too long for one; ward study delete/export need ward serve stopped", "path", path)
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	defer done()
	if c, err := net.Dial("unix", addr); err == nil {
		c.Close()
		return fmt.Errorf("admin socket %s: another ward serve answers on it", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", addr)
	if err != nil && len(path) > maxSocketPath {
		// The long-path route (/proc) is not there: serve without.
		s.Logger.Warn("no admin socket: the data directory's path is too long for one; ward study delete/export need ward serve stopped", "path", path, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	// Closing removes the file by its own path (addr may be valid only
	// now).
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return fmt.Errorf("admin socket: %w", err)
	}
	s.adminLn = &unlinkListener{Listener: ln, path: path}
	return nil
}

// unlinkListener removes the socket file when closed.
type unlinkListener struct {
	net.Listener
	path string
}

func (l *unlinkListener) Close() error {
	err := l.Listener.Close()
	os.Remove(l.path)
	return err
}

// errPathTooLong: the admin socket's path does not fit a Unix socket
// address, and this system offers no shorter name for it.
var errPathTooLong = errors.New("the admin socket's path is too long for a Unix socket address")

// maxSocketPath is the longest path used as a Unix socket address as is
// (108 bytes with the terminating NUL on Linux, 104 on the BSDs).
const maxSocketPath = 100

// maxAdminConns bounds the admin requests served at once.
const maxAdminConns = 16

// serveAdmin answers administration requests until the listener closes.
func (s *Server) serveAdmin(ctx context.Context) {
	if s.adminLn == nil {
		return
	}
	// An accept error (out of file descriptors) does not close the socket
	// for good; at most maxAdminConns requests are served at once, the
	// others closed.
	var backoff acceptBackoff
	busy := make(chan struct{}, maxAdminConns)
	for {
		conn := s.acceptWithBackoff(ctx, s.adminLn, &backoff)
		if conn == nil {
			return
		}
		select {
		case busy <- struct{}{}:
		default:
			s.Logger.Warn("admin request refused: too many at once", "max", maxAdminConns)
			conn.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-busy }()
			defer conn.Close()
			s.adminConn(ctx, conn.(*net.UnixConn))
		}()
	}
}

func (s *Server) adminConn(ctx context.Context, c *net.UnixConn) {
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	reply := func(v any) { _ = json.NewEncoder(c).Encode(v) }
	fail := func(msg string) { reply(map[string]string{"error": msg}) }
	uid, err := peerUID(c)
	if err != nil {
		fail("cannot tell who is asking: " + err.Error())
		return
	}
	if uid != 0 && uid != os.Getuid() {
		s.Logger.Warn("admin request refused", "uid", uid)
		fail("only the user ward serve runs as, or root, may ask")
		return
	}
	var r StudyRequest
	if err := json.NewDecoder(bufio.NewReader(io.LimitReader(c, 1<<20))).Decode(&r); err != nil {
		fail("bad request: " + err.Error())
		return
	}
	if err := r.Check(); err != nil {
		fail(err.Error())
		return
	}
	_ = c.SetDeadline(time.Time{}) // a large study takes its time
	op := userName(uid)
	s.Logger.Info("admin request", "op", r.Op, "studies", len(r.Studies), "operator", op)
	// A verification or a backup ends when the caller hangs up (an
	// interrupted ward study verify or ward backup): nothing but the
	// request's trailing newline comes on the connection, so reads end
	// only then.
	callCtx, hangUp := context.WithCancel(ctx)
	defer hangUp()
	go func() {
		defer hangUp()
		var b [64]byte
		for {
			if _, err := c.Read(b[:]); err != nil {
				return
			}
		}
	}()
	if r.Op == "status" {
		st, err := status(ctx, s.archive, s.Config)
		if err != nil {
			reply(map[string]string{"error": err.Error()})
			return
		}
		if s.audit != nil {
			if aerr := s.audit.Err(); aerr != nil {
				st.AuditFailing, st.AuditRefusing = aerr.Error(), s.Config.AuditRefuses()
			}
		}
		reply(st)
		return
	}
	if r.Op == "reload" {
		res, err := s.reloadFromAdmin(op)
		if err != nil {
			reply(map[string]string{"error": err.Error()})
			return
		}
		reply(res)
		return
	}
	if r.Op == "backup" || r.Op == "delete" || r.Op == "export" {
		// Audited operations wait for the audit trail, as DIMSE does.
		if s.auditRefusal() != nil {
			fail("the audit trail cannot be written ([audit] on_failure = \"refuse\"): " + r.Op + " refused until it can (see ward serve's log)")
			return
		}
	}
	if r.Op == "backup" {
		// A stop interrupts it; the previous backup stays whole.
		res, err := runBackup(callCtx, s.archive, s.Config, r.Out, archive.CopyOptions{MaxRate: r.MaxRate,
			Progress: func(p archive.BackupReport) {
				s.Logger.Info("backing up", "instances", p.Instances, "copied", p.Copied, "bytes", p.Bytes, "problems", p.Problems)
			}}, s.record, s.wardNode(), op)
		s.Logger.Info("backed up", "instances", res.Report.Instances, "copied", res.Report.Copied, "bytes", res.Report.Bytes,
			"removed", res.Report.Removed, "problems", res.Report.Problems, "err", err)
		if err != nil {
			reply(map[string]any{"error": err.Error(), "dir": res.Dir, "report": res.Report, "problems": res.Problems})
			return
		}
		reply(res)
		return
	}
	if r.Op == "verify" {
		// Reading only: a stop interrupts it.
		res, err := runVerify(callCtx, s.archive, archive.VerifyOptions{Studies: r.Studies, MaxRate: r.MaxRate,
			Progress: func(p archive.VerifyReport) {
				s.Logger.Info("verifying", "instances", p.Instances, "bytes", p.Bytes, "problems", p.Problems)
			}})
		s.Logger.Info("verified", "instances", res.Report.Instances, "bytes", res.Report.Bytes, "problems", res.Report.Problems, "err", err)
		if err != nil {
			reply(map[string]any{"error": err.Error(), "report": res.Report, "problems": res.Problems})
			return
		}
		reply(res)
		return
	}
	// A request that started finishes even when ward serve is asked to
	// stop (the shutdown waits for it): no half-deleted study.
	res := runStudyOp(context.WithoutCancel(ctx), s.archive, s.trail(), s.wardNode(), op, &r)
	reply(map[string]any{"results": res})
}

// userName names a local user (and the host) for the audit trail.
func userName(uid int) string {
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		name += "@" + h
	}
	return name
}

// Operator names the user running this process, for the audit trail.
func Operator() string { return userName(os.Getuid()) }

// trail is the server's audit log as a trail.
func (s *Server) trail() trail {
	return trail{record: s.record, sync: func() error {
		if s.audit == nil {
			return nil
		}
		return s.audit.Sync()
	}}
}
