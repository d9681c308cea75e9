package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/datadir"
)

// OpenAdmin opens c's data directory for an administration command while
// ward serve is stopped: the directory is checked as ward serve checks
// it, then opened with this node's ID and the configured store.
func OpenAdmin(ctx context.Context, c *config.Config, logger *slog.Logger) (*admin.Admin, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(c.DataDir); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if dirs, err := dataLayout.CloseOpenDirs(c.DataDir, datadir.Outside(c.DataDir, c.AuditDir())); err != nil {
		return nil, err
	} else if len(dirs) > 0 {
		logger.Warn("data directory closed to other local users: its directories were open, no file in it was", "dirs", dirs)
	}
	if err := dataLayout.Check(c.DataDir, datadir.Outside(c.DataDir, c.AuditDir())); err != nil {
		return nil, err
	}
	node, err := nodeID(c)
	if err != nil {
		return nil, err
	}
	logger = logger.With("node", node)
	return admin.Open(ctx, c, admin.OpenOptions{Node: node, Store: storeSpec(c, node), Backup: backupFolder(c), Logger: logger})
}
