package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ward-pacs/ward/archive"
)

// Handler runs the requests taken on the admin socket, on a running ward
// serve's archive.
type Handler interface {
	// Status reports on the running Ward.
	Status(ctx context.Context) (*Status, error)
	// Reload reads the configuration again and puts its peers and users
	// in effect (operator names who asked).
	Reload(operator string) (*Reloaded, error)
	// AuditRefusal says why the audited operations (delete, export,
	// backup) are refused now ([audit] on_failure = "refuse" while the
	// trail cannot be written); nil when they are not.
	AuditRefusal() error
	// Backup backs the archive up into dir, for operator. Its result is
	// never nil, on error too (what was done).
	Backup(ctx context.Context, operator, dir string, o archive.CopyOptions) (*BackupResult, error)
	// Verify checks the stored objects against the index. Its result is
	// never nil.
	Verify(ctx context.Context, o archive.VerifyOptions) (*VerifyResult, error)
	// StudyOp deletes or exports studies, for operator, and audits it.
	StudyOp(ctx context.Context, operator string, r *StudyRequest) []StudyResult
	// Retention runs retention-plan and retention-run, Patient
	// patient-plan and patient-delete.
	Retention(ctx context.Context, operator string, r *StudyRequest) (*RetentionResult, error)
	Patient(ctx context.Context, operator string, r *StudyRequest) (*PatientResult, error)
}

// Server answers administration requests on the admin socket.
type Server struct {
	Handler Handler
	Logger  *slog.Logger // nil: no log
	// Accept takes the next connection from ln, waiting and trying again
	// on errors; nil once ctx is done or ln closed (ward serve's accept
	// with back-off).
	Accept func(ctx context.Context, ln net.Listener) net.Conn
	// WG counts the requests being answered (nil: none counted), so that
	// a shutdown can wait for them.
	WG *sync.WaitGroup
}

// Listen opens dataDir's admin socket; nil without error when the data
// directory's path is too long for one (the commands then need ward serve
// stopped). A socket file left by a Ward that did not stop cleanly is
// replaced: only one ward serve runs on a data directory (its audit log is
// locked, its listeners bound). Closing the listener removes the file.
func Listen(dataDir string, logger *slog.Logger) (net.Listener, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	path := filepath.Join(dataDir, Socket)
	addr, done, err := SocketAddr(dataDir)
	if errors.Is(err, errPathTooLong) {
		logger.Warn("no admin socket: the data directory's path is too long for one; ward study delete/export need ward serve stopped", "path", path)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	defer done()
	if c, err := net.Dial("unix", addr); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin socket %s: another ward serve answers on it", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", addr)
	if err != nil && len(path) > maxSocketPath {
		// The long-path route (/proc) is not there: serve without.
		logger.Warn("no admin socket: the data directory's path is too long for one; ward study delete/export need ward serve stopped", "path", path, "err", err)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// Closing removes the file by its own path (addr may be valid only
	// now).
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return &unlinkListener{Listener: ln, path: path}, nil
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

// maxConns bounds the admin requests served at once.
const maxConns = 16

// Serve answers administration requests until ln closes or ctx is done.
func (s *Server) Serve(ctx context.Context, ln net.Listener) {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	// An accept error (out of file descriptors) does not close the socket
	// for good; at most maxConns requests are served at once, the others
	// closed.
	busy := make(chan struct{}, maxConns)
	for {
		conn := s.Accept(ctx, ln)
		if conn == nil {
			return
		}
		select {
		case busy <- struct{}{}:
		default:
			s.Logger.Warn("admin request refused: too many at once", "max", maxConns)
			conn.Close()
			continue
		}
		if s.WG != nil {
			s.WG.Add(1)
		}
		go func() {
			if s.WG != nil {
				defer s.WG.Done()
			}
			defer func() { <-busy }()
			defer conn.Close()
			s.conn(ctx, conn.(*net.UnixConn))
		}()
	}
}

func (s *Server) conn(ctx context.Context, c *net.UnixConn) {
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
	h := s.Handler
	if r.Op == "status" {
		st, err := h.Status(ctx)
		if err != nil {
			reply(map[string]string{"error": err.Error()})
			return
		}
		reply(st)
		return
	}
	if r.Op == "reload" {
		res, err := h.Reload(op)
		if err != nil {
			reply(map[string]string{"error": err.Error()})
			return
		}
		reply(res)
		return
	}
	if r.Op == "backup" || r.Op == "delete" || r.Op == "export" || r.Op == "retention-run" || r.Op == "patient-delete" {
		// Audited operations wait for the audit trail, as DIMSE does.
		if h.AuditRefusal() != nil {
			fail("the audit trail cannot be written ([audit] on_failure = \"refuse\"): " + r.Op + " refused until it can (see ward serve's log)")
			return
		}
	}
	if r.Op == "backup" {
		// A stop interrupts it; the previous backup stays whole.
		res, err := h.Backup(callCtx, op, r.Out, archive.CopyOptions{MaxRate: r.MaxRate,
			Progress: func(p archive.BackupReport) {
				s.Logger.Info("backing up", "instances", p.Instances, "copied", p.Copied, "bytes", p.Bytes, "problems", p.Problems)
			}})
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
		res, err := h.Verify(callCtx, archive.VerifyOptions{Studies: r.Studies, MaxRate: r.MaxRate,
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
	if r.Op == "retention-plan" || r.Op == "retention-run" {
		// A pass once begun is finished (up to its cap) even if the
		// caller hangs up, as a deletion is.
		res, err := h.Retention(context.WithoutCancel(ctx), op, &r)
		if err != nil {
			fail(err.Error())
			return
		}
		reply(res)
		return
	}
	if r.Op == "patient-plan" || r.Op == "patient-delete" {
		res, err := h.Patient(context.WithoutCancel(ctx), op, &r)
		if err != nil {
			fail(err.Error())
			return
		}
		reply(res)
		return
	}
	res := h.StudyOp(context.WithoutCancel(ctx), op, &r)
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
