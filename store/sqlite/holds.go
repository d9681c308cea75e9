package sqlite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ward-pacs/ward/durable"
	"github.com/ward-pacs/ward/store"
)

var (
	_ store.DeleteHolder  = (*DB)(nil)
	_ store.SnapshotFiles = (*DB)(nil)
)

// HoldDeletes implements store.DeleteHolder: a row of delete_hold,
// committed durably.
func (db *DB) HoldDeletes(ctx context.Context, node string, ttl time.Duration) (int64, error) {
	var id int64
	err := db.w.do(ctx, func(w *writer) error {
		return w.conn.QueryRowContext(ctx, `INSERT INTO delete_hold (node, expires_at) VALUES (?, ?) RETURNING pk`,
			node, time.Now().Add(ttl).UnixNano()).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: hold deletes: %w", err)
	}
	return id, nil
}

// RenewHold implements store.DeleteHolder. A hold released or lapsed
// and dropped is store.ErrNotFound.
func (db *DB) RenewHold(ctx context.Context, id int64, ttl time.Duration) error {
	var n int64
	err := db.w.do(ctx, func(w *writer) error {
		r, err := w.conn.ExecContext(ctx, `UPDATE delete_hold SET expires_at = ? WHERE pk = ?`, time.Now().Add(ttl).UnixNano(), id)
		if err == nil {
			n, err = r.RowsAffected()
		}
		return err
	})
	if err == nil && n == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("sqlite: renew hold: %w", err)
	}
	return nil
}

// ReleaseHold implements store.DeleteHolder; releasing a hold twice is
// not an error.
func (db *DB) ReleaseHold(ctx context.Context, id int64) error {
	err := db.w.do(ctx, func(w *writer) error {
		_, err := w.conn.ExecContext(ctx, `DELETE FROM delete_hold WHERE pk = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: release hold: %w", err)
	}
	return nil
}

// ReleaseNodeHolds implements store.DeleteHolder.
func (db *DB) ReleaseNodeHolds(ctx context.Context, node string) error {
	err := db.w.do(ctx, func(w *writer) error {
		_, err := w.conn.ExecContext(ctx, `DELETE FROM delete_hold WHERE node = ?`, node)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: release holds: %w", err)
	}
	return nil
}

// DeletesHeld implements store.DeleteHolder.
func (db *DB) DeletesHeld(ctx context.Context) (bool, error) {
	var held bool
	err := db.rdb.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM delete_hold WHERE expires_at > ?)`, time.Now().UnixNano()).Scan(&held)
	if err != nil {
		return false, fmt.Errorf("sqlite: deletes held: %w", db.closedErr(err))
	}
	return held, nil
}

// snapshotSuffixes are the files of a database at path besides path: its
// write-ahead log and the log's shared-memory index.
var snapshotSuffixes = []string{"-wal", "-shm"}

// RemoveSnapshot implements store.SnapshotFiles: the database file and
// its write-ahead log files.
func (db *DB) RemoveSnapshot(path string) error {
	for _, sfx := range append([]string{""}, snapshotSuffixes...) {
		if err := os.Remove(path + sfx); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sqlite: removing a snapshot: %w", err)
		}
	}
	return nil
}

// InstallSnapshot implements store.SnapshotFiles. A snapshot closed is
// whole in its file (its write-ahead log checkpointed and removed); the
// index at to was closed cleanly and has no log either, and should one
// be left, it must not be applied to the new database: it is removed
// before the rename, which is atomic.
func (db *DB) InstallSnapshot(from, to string) error {
	if fi, err := os.Stat(from + "-wal"); err == nil && fi.Size() > 0 {
		return errors.New("sqlite: the snapshot's write-ahead log was not checkpointed")
	}
	for _, sfx := range snapshotSuffixes {
		if err := os.Remove(to + sfx); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sqlite: installing a snapshot: %w", err)
		}
	}
	if err := os.Rename(from, to); err != nil {
		return fmt.Errorf("sqlite: installing a snapshot: %w", err)
	}
	if err := durable.Sync(filepath.Dir(to)); err != nil {
		return fmt.Errorf("sqlite: installing a snapshot: %w", err)
	}
	return nil
}

var _ store.MetadataKeeper = (*DB)(nil)

// SetMetadata implements store.MetadataKeeper: a row of
// instance_metadata, committed without waiting for the disk (a crash
// loses it, never an instance's row; the archive computes it again).
func (db *DB) SetMetadata(ctx context.Context, uid, blobKey string, b []byte) error {
	if b == nil {
		b = []byte{}
	}
	err := db.w.send(ctx, func(w *writer) error {
		_, err := w.conn.ExecContext(ctx, `INSERT OR REPLACE INTO instance_metadata (instance_fk, metadata)
SELECT pk, ? FROM instance WHERE sop_instance_uid = ? AND blob_key = ?`, b, uid, blobKey)
		return err
	}, true)
	if err != nil {
		return fmt.Errorf("sqlite: set metadata: %w", err)
	}
	return nil
}
