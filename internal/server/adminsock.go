package server

import (
	"context"
	"net"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/internal/admin"
)

// listenAdmin opens the admin socket (none when the data directory's path
// is too long for one).
func (s *Server) listenAdmin() error {
	ln, err := admin.Listen(s.Config.DataDir, s.Logger)
	if err != nil || ln == nil {
		return err
	}
	s.adminLn = ln
	return nil
}

// serveAdmin answers administration requests until the listener closes.
func (s *Server) serveAdmin(ctx context.Context) {
	if s.adminLn == nil {
		return
	}
	var backoff acceptBackoff
	as := &admin.Server{Handler: adminHandler{s}, Logger: s.Logger, WG: &s.wg,
		Accept: func(ctx context.Context, ln net.Listener) net.Conn { return s.acceptWithBackoff(ctx, ln, &backoff) }}
	as.Serve(ctx, s.adminLn)
}

// adminHandler runs the admin socket's requests on the server's archive.
type adminHandler struct{ s *Server }

func (h adminHandler) Status(ctx context.Context) (*admin.Status, error) {
	s := h.s
	st, err := admin.ReadStatus(ctx, s.archive, s.Config)
	if err != nil {
		return nil, err
	}
	if s.audit != nil {
		if aerr := s.audit.Err(); aerr != nil {
			st.AuditFailing, st.AuditRefusing = aerr.Error(), s.Config.AuditRefuses()
		}
	}
	return st, nil
}

func (h adminHandler) Reload(operator string) (*admin.Reloaded, error) {
	return h.s.reloadFromAdmin(operator)
}

func (h adminHandler) AuditRefusal() error { return h.s.auditRefusal() }

func (h adminHandler) Backup(ctx context.Context, operator, dir string, o archive.CopyOptions) (*admin.BackupResult, error) {
	s := h.s
	return admin.RunBackup(ctx, s.archive, s.Config, backupFolder(s.Config), dir, o, s.record, s.wardNode(), operator)
}

func (h adminHandler) Verify(ctx context.Context, o archive.VerifyOptions) (*admin.VerifyResult, error) {
	return admin.RunVerify(ctx, h.s.archive, o)
}

func (h adminHandler) StudyOp(ctx context.Context, operator string, r *admin.StudyRequest) []admin.StudyResult {
	s := h.s
	return admin.RunStudyOp(ctx, s.archive, s.trail(), s.wardNode(), operator, r)
}

func (h adminHandler) Retention(ctx context.Context, operator string, r *admin.StudyRequest) (*admin.RetentionResult, error) {
	return h.s.retentionPass(ctx, operator, r.Op == "retention-run", r.Force, r.MaxDeletions)
}

func (h adminHandler) Patient(ctx context.Context, operator string, r *admin.StudyRequest) (*admin.PatientResult, error) {
	s := h.s
	return admin.RunPatient(ctx, s.archive, s.trail(), s.wardNode(), operator, r)
}

// trail is the server's audit log as a trail.
func (s *Server) trail() admin.Trail {
	return admin.Trail{Record: s.record, Sync: func() error {
		if s.audit == nil {
			return nil
		}
		return s.audit.Sync()
	}}
}
