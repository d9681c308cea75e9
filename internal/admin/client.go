package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/ward-pacs/ward/archive"
)

// ErrNoServer: no ward serve answers on the data directory's admin socket.
var ErrNoServer = errors.New("no ward serve is running on this data directory")

// RemoteStudyOp sends r to the ward serve running on dataDir, which runs it
// and records it in its audit trail under the calling user's name.
func RemoteStudyOp(ctx context.Context, dataDir string, r *StudyRequest) ([]StudyResult, error) {
	var resp struct {
		Error   string        `json:"error,omitempty"`
		Results []StudyResult `json:"results"`
	}
	if err := call(ctx, dataDir, r, &resp); err != nil {
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
	if err := call(ctx, dataDir, &StudyRequest{Op: "verify", Studies: o.Studies, MaxRate: o.MaxRate}, &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return &resp.VerifyResult, errors.New(resp.Error)
	}
	return &resp.VerifyResult, nil
}

// RemoteReload asks the ward serve running on dataDir to read its
// configuration again and put its peers and users in effect at once (what
// SIGHUP does), and returns what it then has in effect.
func RemoteReload(ctx context.Context, dataDir string) (*Reloaded, error) {
	var resp struct {
		Error string `json:"error,omitempty"`
		Reloaded
	}
	if err := call(ctx, dataDir, &StudyRequest{Op: "reload"}, &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return nil, errors.New(resp.Error)
	}
	return &resp.Reloaded, nil
}

// RemoteStatus asks the ward serve running on dataDir for its status.
func RemoteStatus(ctx context.Context, dataDir string) (*Status, error) {
	var resp struct {
		Error string `json:"error,omitempty"`
		Status
	}
	if err := call(ctx, dataDir, &StudyRequest{Op: "status"}, &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return nil, errors.New(resp.Error)
	}
	resp.Status.Serving = true
	return &resp.Status, nil
}

// RemoteBackup asks the ward serve running on dataDir to back itself up
// into dir, while it serves.
func RemoteBackup(ctx context.Context, dataDir, dir string, maxRate int64) (*BackupResult, error) {
	var resp struct {
		Error string `json:"error,omitempty"`
		BackupResult
	}
	if err := call(ctx, dataDir, &StudyRequest{Op: "backup", Out: dir, MaxRate: maxRate}, &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return &resp.BackupResult, errors.New(resp.Error)
	}
	return &resp.BackupResult, nil
}

// call sends req to the ward serve on dataDir's admin socket and decodes
// its one answer into resp.
func call(ctx context.Context, dataDir string, req, resp any) error {
	addr, done, err := SocketAddr(dataDir)
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

// RemoteRetention sends a retention-plan or retention-run request to the
// ward serve running on dataDir.
func RemoteRetention(ctx context.Context, dataDir string, r *StudyRequest) (*RetentionResult, error) {
	var resp struct {
		Error string `json:"error,omitempty"`
		RetentionResult
	}
	if err := call(ctx, dataDir, r, &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return nil, errors.New(resp.Error)
	}
	return &resp.RetentionResult, nil
}

// RemotePatient sends a patient-plan or patient-delete request to the
// ward serve running on dataDir.
func RemotePatient(ctx context.Context, dataDir string, r *StudyRequest) (*PatientResult, error) {
	var resp struct {
		Error string `json:"error,omitempty"`
		PatientResult
	}
	if err := call(ctx, dataDir, r, &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return nil, errors.New(resp.Error)
	}
	return &resp.PatientResult, nil
}
