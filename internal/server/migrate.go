package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/store"
)

// MigrationTarget is the store a ward.toml configures, opened as the
// destination of ward migrate.
type MigrationTarget struct {
	Archive *archive.Archive
	// Describe names the index and the blobs, without credentials (for
	// the audit trail and the summary).
	Describe string
	st       *store.Store
}

// Close finishes the work queued after the copies (publishing them),
// then closes the stores.
func (t *MigrationTarget) Close() error {
	t.Archive.Close()
	return t.st.Close()
}

// OpenMigrationTarget opens the store dst configures, with dst's node ID,
// as the destination of a migration from src's archive: its recovery runs
// first (what an interrupted migration left half-written is removed, as
// after a crash). It refuses a destination that shares an index or blobs
// with src, and one whose data directory a ward serve runs on (that node
// would be recovered under its feet; other nodes of a cluster may serve).
func OpenMigrationTarget(ctx context.Context, src, dst *config.Config, logger *slog.Logger) (*MigrationTarget, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := dst.Validate(); err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	srcSpec, dstSpec := storeSpec(src, ""), storeSpec(dst, "")
	if sameDSN(srcSpec.Index, srcSpec.IndexDSN, dstSpec.Index, dstSpec.IndexDSN) ||
		sameDSN(srcSpec.Blobs, srcSpec.BlobsDSN, dstSpec.Blobs, dstSpec.BlobsDSN) {
		return nil, errors.New("the destination's configuration names the source's own index or objects: give the ward.toml of the new store (its data directory elsewhere)")
	}
	if sd, dd := absPath(src.DataDir), absPath(dst.DataDir); sd == dd {
		return nil, fmt.Errorf("the destination's data directory is the source's (%s): set data in the destination's ward.toml", sd)
	}
	if _, err := admin.RemoteStatus(ctx, dst.DataDir); err == nil {
		return nil, fmt.Errorf("ward serve is running on the destination's data directory %s: stop it first", dst.DataDir)
	} else if !errors.Is(err, admin.ErrNoServer) {
		return nil, fmt.Errorf("destination: %w", err)
	}
	if err := os.MkdirAll(dst.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("destination data directory: %w", err)
	}
	if err := dataLayout.Check(dst.DataDir); err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	node, err := nodeID(dst)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	st, err := store.Open(ctx, storeSpec(dst, node))
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	ar := &archive.Archive{Index: st.Index, Blobs: st.Blobs, Caps: &st.Caps, Node: node,
		Logger: logger.With("node", node), AETitle: dst.AETitle}
	if err := ar.Open(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("destination: %w", err)
	}
	return &MigrationTarget{Archive: ar, Describe: describeSpec(dstSpec), st: st}, nil
}

// sameDSN: two backends name the same data (a file path compared as an
// absolute path, a URL or other DSN as given).
func sameDSN(a, aDSN, b, bDSN string) bool {
	if a != b {
		return false
	}
	if strings.Contains(aDSN, "://") || strings.Contains(bDSN, "://") {
		return aDSN == bDSN
	}
	return absPath(aDSN) == absPath(bDSN)
}

func absPath(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	return a
}

// describeSpec names a store's index and blobs for the audit trail and
// the operator: a URL without its user, password and query (an endpoint
// may be there, never a secret), a path as it is.
func describeSpec(sp store.Spec) string {
	return sp.Index + " " + redactDSN(sp.IndexDSN) + ", " + sp.Blobs + " " + redactDSN(sp.BlobsDSN)
}

func redactDSN(dsn string) string {
	if !strings.Contains(dsn, "://") {
		return absPath(dsn)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "(a URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
