package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/store"
)

// Admin is Ward's archive opened by an administration command (ward study
// delete) while ward serve is stopped. The audit log is opened first: its
// lock is held by a running ward serve, so an Admin never works on a data
// directory a server is using.
type Admin struct {
	Config  *config.Config
	Archive *archive.Archive
	log     *audit.Log
	logger  *slog.Logger
	node    string       // this node's ID
	backup  BackupFolder // what a backup folder is made of
}

// ErrServing: ward serve is running on the data directory.
var ErrServing = errors.New("ward serve is running on this data directory: stop it first")

// OpenOptions is what the composition root knows of a data directory
// (internal/server.OpenAdmin checks the directory and fills them in).
type OpenOptions struct {
	Node   string       // this node's ID
	Store  store.Spec   // the store of the data directory
	Backup BackupFolder // what a backup folder of it is made of
	Logger *slog.Logger // nil: no log
}

// Open opens c's audit log and stores for an administration command, and
// audits the study deletions a stop cut short.
func Open(ctx context.Context, c *config.Config, o OpenOptions) (*Admin, error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &Admin{Config: c, logger: logger, node: o.Node, backup: o.Backup}
	if c.AuditEnabled() {
		l, err := audit.Open(c.AuditDir(), logger, audit.WithKeyFile(c.AuditKeyFile()), audit.WithSource(a.Node()))
		if errors.Is(err, audit.ErrLocked) {
			return nil, fmt.Errorf("%w (%v)", ErrServing, err)
		}
		if err != nil {
			return nil, err
		}
		a.log = l
	}
	st, err := store.Open(ctx, o.Store)
	if err != nil {
		a.closeAudit()
		return nil, err
	}
	idx, blobs := st.Index, st.Blobs
	a.Archive = &archive.Archive{Index: idx, Blobs: blobs, Caps: &st.Caps, Node: a.node, Logger: logger, AETitle: c.AETitle}
	if err := a.Archive.Open(ctx); err != nil {
		blobs.Close()
		idx.Close()
		a.closeAudit()
		return nil, err
	}
	var rerr error
	err = FinishDeletions(ctx, a.Archive, a.Trail(func(err error) { rerr = errors.Join(rerr, err) }), a.Node())
	if err = errors.Join(err, rerr); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// Trail is the admin's audit log as a trail; fail gets each error.
func (a *Admin) Trail(fail func(error)) Trail {
	return Trail{
		Record: func(m *audit.Message) {
			if err := a.Record(m); err != nil {
				fail(fmt.Errorf("audit record: %w", err))
			}
		},
		Sync: func() error {
			if a.log == nil {
				return nil
			}
			return a.log.Sync()
		},
	}
}

// Record writes an audit message (nothing when the trail is off).
func (a *Admin) Record(m *audit.Message) error {
	if a.log == nil {
		return nil
	}
	return a.log.Write(m)
}

// Node is Ward as an audit participant.
func (a *Admin) Node() audit.Node { return audit.Node{AETitle: a.Config.AETitle, ID: a.node} }

func (a *Admin) closeAudit() error {
	if a.log == nil {
		return nil
	}
	err := a.log.Close()
	a.log = nil
	return err
}

// Close closes the archive and its stores, then the audit log (flushing
// it).
func (a *Admin) Close() error {
	a.Archive.Close()
	errs := []error{a.Archive.Blobs.Close(), a.Archive.Index.Close()}
	errs = append(errs, a.closeAudit())
	return errors.Join(errs...)
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
	tr := a.Trail(func(err error) { rerr = errors.Join(rerr, err) })
	res := RunStudyOp(ctx, a.Archive, tr, a.Node(), operator, r)
	return res, rerr
}

// Verify checks the stored objects of the stopped Ward against its index
// (archive.Verify).
func (a *Admin) Verify(ctx context.Context, o archive.VerifyOptions) (*VerifyResult, error) {
	return RunVerify(ctx, a.Archive, o)
}

// Status reports on the stopped Ward.
func (a *Admin) Status(ctx context.Context) (*Status, error) {
	return ReadStatus(ctx, a.Archive, a.Config)
}

// Backup backs the stopped Ward up into dir (see RunBackup), for
// operator.
func (a *Admin) Backup(ctx context.Context, operator, dir string, o archive.CopyOptions) (*BackupResult, error) {
	var rerr error
	res, err := RunBackup(ctx, a.Archive, a.Config, a.backup, dir, o, func(m *audit.Message) {
		if err := a.Record(m); err != nil {
			rerr = errors.Join(rerr, fmt.Errorf("audit record: %w", err))
		}
	}, a.Node(), operator)
	return res, errors.Join(err, rerr)
}

// Retention plans or runs the retention rules on the stopped Ward.
func (a *Admin) Retention(ctx context.Context, operator string, r *StudyRequest) (*RetentionResult, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	var rerr error
	tr := a.Trail(func(err error) { rerr = errors.Join(rerr, err) })
	res, err := RunRetention(ctx, a.Archive, tr, a.Node(), a.Config, operator, r.Op == "retention-run", r.Force, r.MaxDeletions)
	return res, errors.Join(err, rerr)
}

// Patient lists or erases a patient's studies on the stopped Ward.
func (a *Admin) Patient(ctx context.Context, operator string, r *StudyRequest) (*PatientResult, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	var rerr error
	tr := a.Trail(func(err error) { rerr = errors.Join(rerr, err) })
	res, err := RunPatient(ctx, a.Archive, tr, a.Node(), operator, r)
	return res, errors.Join(err, rerr)
}
