package admin_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/internal/admin"
)

// fakeHandler answers as a ward serve would, recording what it was asked.
type fakeHandler struct {
	mu      sync.Mutex
	refuse  error
	studyOp []string // operators of the study operations run
}

func (h *fakeHandler) Status(context.Context) (*admin.Status, error) {
	return &admin.Status{DataDir: "d", Node: "n1"}, nil
}
func (h *fakeHandler) Reload(string) (*admin.Reloaded, error) {
	return nil, errors.New("no configuration file")
}
func (h *fakeHandler) AuditRefusal() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refuse
}
func (h *fakeHandler) Backup(context.Context, string, string, archive.CopyOptions) (*admin.BackupResult, error) {
	return &admin.BackupResult{}, nil
}
func (h *fakeHandler) Verify(context.Context, archive.VerifyOptions) (*admin.VerifyResult, error) {
	return &admin.VerifyResult{Report: archive.VerifyReport{Instances: 3}}, nil
}
func (h *fakeHandler) StudyOp(_ context.Context, operator string, r *admin.StudyRequest) []admin.StudyResult {
	h.mu.Lock()
	h.studyOp = append(h.studyOp, operator)
	h.mu.Unlock()
	out := []admin.StudyResult{}
	for _, s := range r.Studies {
		out = append(out, admin.StudyResult{Study: s, Instances: 1})
	}
	return out
}

// TestSocket: the admin socket, served over a handler, answers the
// client's requests, refuses the audited ones while the handler says the
// audit trail is down, is 0600, and its file goes when it closes; with
// nothing listening the client says ErrNoServer.
func TestSocket(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	if _, err := admin.RemoteStatus(ctx, dir); !errors.Is(err, admin.ErrNoServer) {
		t.Fatalf("status with no server: %v", err)
	}
	ln, err := admin.Listen(dir, nil)
	if err != nil || ln == nil {
		t.Fatalf("listen: %v, %v", ln, err)
	}
	sock := filepath.Join(dir, admin.Socket)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v, %v", fi, err)
	}
	h := &fakeHandler{}
	var wg sync.WaitGroup
	s := &admin.Server{Handler: h, Logger: nil, WG: &wg, Accept: func(_ context.Context, ln net.Listener) net.Conn {
		c, err := ln.Accept()
		if err != nil {
			return nil
		}
		return c
	}}
	served := make(chan struct{})
	go func() { defer close(served); s.Serve(ctx, ln) }()

	st, err := admin.RemoteStatus(ctx, dir)
	if err != nil || !st.Serving || st.Node != "n1" {
		t.Errorf("status: %+v, %v", st, err)
	}
	if _, err := admin.RemoteReload(ctx, dir); err == nil || !strings.Contains(err.Error(), "no configuration file") {
		t.Errorf("reload: %v", err)
	}
	if res, err := admin.RemoteVerify(ctx, dir, archive.VerifyOptions{}); err != nil || res.Report.Instances != 3 {
		t.Errorf("verify: %+v, %v", res, err)
	}
	res, err := admin.RemoteStudyOp(ctx, dir, &admin.StudyRequest{Op: "delete", Studies: []string{"1.2.3"}, Reason: "test"})
	if err != nil || len(res) != 1 || res[0].Study != "1.2.3" {
		t.Errorf("delete: %+v, %v", res, err)
	}
	if _, err := admin.RemoteStudyOp(ctx, dir, &admin.StudyRequest{Op: "delete", Studies: []string{"1.2.3"}}); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Errorf("a deletion without a reason: %v", err)
	}
	h.mu.Lock()
	h.refuse = errors.New("audit down")
	h.mu.Unlock()
	if _, err := admin.RemoteStudyOp(ctx, dir, &admin.StudyRequest{Op: "export", Studies: []string{"1.2.3"}, Out: "/x", Media: "usb"}); err == nil || !strings.Contains(err.Error(), "audit trail cannot be written") {
		t.Errorf("an export while the audit trail is down: %v", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.studyOp) != 1 || h.studyOp[0] != admin.Operator() {
		t.Errorf("study operations run for %v, want one for %s", h.studyOp, admin.Operator())
	}
	ln.Close()
	<-served
	wg.Wait()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file after close: %v", err)
	}
}

func (h *fakeHandler) Retention(context.Context, string, *admin.StudyRequest) (*admin.RetentionResult, error) {
	return &admin.RetentionResult{}, nil
}

func (h *fakeHandler) Patient(context.Context, string, *admin.StudyRequest) (*admin.PatientResult, error) {
	return &admin.PatientResult{}, nil
}
