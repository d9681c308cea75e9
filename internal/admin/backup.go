package admin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/durable"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/datadir"
	"github.com/ward-pacs/ward/store"
)

// BackupFolder is what a backup folder is made of, as a data directory:
// the names of its index and blobs backends (store.RegisterIndex,
// store.RegisterBlobs; the index is named by the file path, the blobs by
// the folder) and what its permission checks know of it.
type BackupFolder struct {
	Index, Blobs string
	Layout       datadir.Layout
}

// backupIndexName is the index file in a backup folder, as in a data
// directory: the folder can be served as one (ward serve --data DIR).
const backupIndexName = "index.db"

// RunBackup backs ar (configured by c) up into dir, a folder f: a
// snapshot of the index, taken while deletions are held, then every
// object it names that dir lacks (copied as pending objects), then the
// new index put in place of the previous backup's, then the copies
// published and the objects no longer named removed. Until the new index
// is in place, dir holds the previous backup, whole (the pending copies
// are not part of it: serving the folder removes them, the next backup
// keeps them); an interrupted run leaves it so, and the next run removes
// what it left (an unfinished copy, the snapshot, a temporary file of the
// mark) and keeps its copies. DATA/ward.toml and DATA/tokens.json are copied too. The folder
// must be the user's Ward runs as and closed to others (claimBackupDir);
// one backup at a time runs into it.
//
// The objects copied are recorded as Export (PS3.15 A.5.3.7) to the folder
// (media type URI), one message per patient, operator naming who asked.
func RunBackup(ctx context.Context, ar *archive.Archive, c *config.Config, f BackupFolder, dir string, o archive.CopyOptions, record func(*audit.Message), ward audit.Node, operator string) (*BackupResult, error) {
	res := &BackupResult{Dir: dir, Problems: []archive.VerifyProblem{}}
	caps := ar.Capabilities()
	sn := caps.Snapshotter
	if sn == nil {
		return res, errors.New("the index backend cannot take a snapshot for a backup: ward backup copies an embedded archive; " +
			"back a shared (PostgreSQL) index up with the database's own tools (pg_dump, pgBackRest) and its objects with the bucket's versioning (docs/scale-out.md)")
	}
	if err := checkBackupDir(c.DataDir, dir); err != nil {
		return res, err
	}
	if err := claimBackupDir(dir, f.Layout); err != nil {
		return res, err
	}
	unlock, err := lockBackupDir(dir)
	if err != nil {
		return res, err
	}
	defer unlock()
	release, err := ar.HoldDeletes(ctx)
	if err != nil {
		return res, err
	}
	defer func() {
		if err := release(context.WithoutCancel(ctx)); err != nil {
			ar.Logger.Warn("deleting the objects held during the backup failed; retried at next start", "err", err)
		}
	}()
	files := snapshotFiles(caps)
	newIndex := filepath.Join(dir, backupIndexName+".new")
	if err := files.RemoveSnapshot(newIndex); err != nil {
		return res, fmt.Errorf("backup: removing an interrupted run's index: %w", err)
	}
	snap, err := sn.Snapshot(ctx, newIndex)
	if err != nil {
		return res, err
	}
	// The folder is a data directory.
	dst, err := store.OpenBlobs(ctx, f.Blobs, dir)
	if err != nil {
		snap.Close()
		return res, fmt.Errorf("backup folder: %w", err)
	}
	defer dst.Close()
	// A copy a killed run was writing: its key would stay in use, and
	// every later backup fail to copy that object.
	dstCaps := store.Resolve(nil, dst)
	if ur := dstCaps.UnfinishedRemover; ur != nil {
		if err := ur.RemoveUnfinished(ctx); err != nil {
			snap.Close()
			return res, fmt.Errorf("backup: %w", err)
		}
	}
	o.Problem = func(p archive.VerifyProblem) {
		if len(res.Problems) < MaxVerifyProblems {
			res.Problems = append(res.Problems, p)
		}
	}
	exports := &backupAudit{record: record, ward: ward, who: audit.Node{AETitle: "ward backup", ID: operator},
		media: audit.Media{ID: dir, Type: audit.MediaURI}, studies: map[string]*audit.Study{}}
	o.Copied = exports.copied
	// Copies an interrupted run left pending (it may have been killed
	// before it recorded them) are recorded as exported by this one: at
	// least once, twice if that run had recorded them.
	if bw := dstCaps.BlobWalker; bw != nil {
		left := map[string]bool{}
		err := bw.WalkBlobs(ctx, func(key string, published bool) error {
			if !published {
				left[key] = true
			}
			return nil
		})
		if err != nil {
			snap.Close()
			return res, fmt.Errorf("backup: %w", err)
		}
		o.Found = func(in *store.Instance) {
			if left[in.BlobKey] {
				exports.copied(in)
			}
		}
	}
	err = ar.CopyObjects(ctx, snap, dst, &res.Report, o)
	exports.flush() // copied is copied, whether or not the backup finishes
	if cerr := snap.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return res, err
	}
	if err := copyConfig(c.DataDir, dir); err != nil {
		return res, err
	}
	final := filepath.Join(dir, backupIndexName)
	if err := files.InstallSnapshot(newIndex, final); err != nil {
		return res, fmt.Errorf("backup: %w", err)
	}
	done, err := store.OpenIndex(ctx, f.Index, final)
	if err != nil {
		return res, fmt.Errorf("backup: reopening its index: %w", err)
	}
	err = archive.SettleObjects(ctx, done, dst, &res.Report)
	return res, errors.Join(err, done.Close())
}

// backupAudit gathers the objects a backup copied, by study, and records
// them as Export messages, at most backupAuditStudies studies at a time.
type backupAudit struct {
	record    func(*audit.Message)
	ward, who audit.Node
	media     audit.Media
	studies   map[string]*audit.Study
}

const backupAuditStudies = 10000

func (b *backupAudit) copied(in *store.Instance) {
	if len(b.studies) >= backupAuditStudies {
		b.flush()
	}
	key := in.StudyInstanceUID + "\x00" + in.PatientID
	st := b.studies[key]
	if st == nil {
		uid := in.StudyInstanceUID
		if uid == "" {
			uid = "unknown"
		}
		st = &audit.Study{UID: uid, PatientID: strings.TrimSpace(in.PatientID), Classes: map[string]int{}}
		b.studies[key] = st
	}
	st.Classes[in.SOPClassUID]++
}

func (b *backupAudit) flush() {
	if len(b.studies) == 0 {
		return
	}
	now := time.Now()
	for _, group := range audit.ByPatient(slices.Collect(maps.Values(b.studies))) {
		b.record(audit.Export(b.ward, b.who, b.media, audit.OutcomeSuccess, group, now))
	}
	clear(b.studies)
}

// checkBackupDir refuses a backup folder that is not absolute, or is the
// data directory or inside it.
func checkBackupDir(dataDir, dir string) error {
	if !filepath.IsAbs(dir) {
		return errors.New("a backup needs an absolute folder")
	}
	data, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	if rel, err := filepath.Rel(data, dir); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return fmt.Errorf("the backup folder %s is in the data directory %s: back up to another disk", dir, data)
	}
	return nil
}

// backupMarker names the file that marks a folder as a Ward backup.
const backupMarker = "WARD-BACKUP"

// claimBackupDir makes dir a backup folder, or checks that it is one: a
// backup replaces a folder's index and removes the objects the new one
// does not name, so it refuses a folder that holds anything else (another
// archive's data directory, say). A backup holds patient data: the folder
// must be the user's Ward runs as, and closed to others (an empty one is
// closed here; one that holds a backup is refused if open).
func claimBackupDir(dir string, layout datadir.Layout) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("backup folder: %w", err)
		}
		if fi, err = os.Stat(dir); err != nil {
			return fmt.Errorf("backup folder: %w", err)
		}
	case err != nil:
		return fmt.Errorf("backup folder: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("the backup folder %s is not a folder", dir)
	}
	if o := datadir.ForeignOwner(fi); o != "" {
		return fmt.Errorf("the backup folder %s is %s, who could read the backup (patient data): choose a folder of your own", dir, o)
	}
	ents, err := backupEntries(dir)
	if err != nil {
		return err
	}
	marker := filepath.Join(dir, backupMarker)
	if len(ents) > 0 {
		if _, err := os.Stat(marker); err != nil {
			return fmt.Errorf("the backup folder %s is not empty and holds no backup: choose an empty or new folder", dir)
		}
		bad, err := layout.OpenToOthers(dir)
		if err != nil {
			return fmt.Errorf("backup folder: %w", err)
		}
		if bad != "" {
			return fmt.Errorf("the backup folder %s is open to other local users:\n  %s\nFix: chown -R %s %s && chmod -R go-rwx %s",
				dir, bad, datadir.CurrentUser(), datadir.Quote(dir), datadir.Quote(dir))
		}
		return nil
	}
	// An empty folder given is closed as a new one would be, then looked
	// at again: nothing another user put in it before may stay.
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("backup folder: %w", err)
	}
	if ents, err = backupEntries(dir); err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("the backup folder %s is not empty and holds no backup: choose an empty or new folder", dir)
	}
	text := "This folder holds a backup made by ward backup: index.db and objects/ as in a data directory.\n" +
		"ward backup into it again copies what is new; ward serve --data on it serves it.\n"
	if err := config.WriteFileAtomic(marker, []byte(text), 0o600); err != nil {
		return fmt.Errorf("backup folder: %w", err)
	}
	return nil
}

// backupEntries lists dir, less (and removing) the temporary files an
// interrupted config.WriteFileAtomic left there (the marker's or the
// configuration's): a crash while the marker was written must not make
// the folder look like another's.
func backupEntries(dir string) ([]os.DirEntry, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("backup folder: %w", err)
	}
	out := ents[:0]
	for _, e := range ents {
		if isAtomicLeftover(e.Name()) && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("backup folder: removing an interrupted run's file: %w", err)
			}
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// isAtomicLeftover: name is a temporary file of config.WriteFileAtomic
// for the backup's marker or one of configFiles.
func isAtomicLeftover(name string) bool {
	for _, f := range append([]string{backupMarker}, configFiles...) {
		if strings.HasPrefix(name, "."+f+".tmp") {
			return true
		}
	}
	return false
}

// lockBackupDir keeps two backups from running into one folder at once
// (each removes what the other is writing).
func lockBackupDir(dir string) (func(), error) {
	unlock, busy, err := datadir.LockFile(filepath.Join(dir, backupMarker))
	if busy {
		return nil, fmt.Errorf("another backup into %s is running", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("backup folder: %w", err)
	}
	return unlock, nil
}

// snapshotFiles is the index's store.SnapshotFiles, or the fallback: a
// snapshot is one file.
func snapshotFiles(caps store.Caps) store.SnapshotFiles {
	if sf := caps.SnapshotFiles; sf != nil {
		return sf
	}
	return oneFileSnapshot{}
}

type oneFileSnapshot struct{}

func (oneFileSnapshot) RemoveSnapshot(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (oneFileSnapshot) InstallSnapshot(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	return durable.Sync(filepath.Dir(to))
}

// configFiles are the data directory's files a backup carries beside the
// index and the objects: the configuration (peers, users and their
// passcode hashes) and the API tokens (their hashes, and which are
// revoked), so that a restored backup admits the same callers.
var configFiles = []string{config.ConfigFileName, config.TokenFileName}

// copyConfig copies each of configFiles that DATA holds into the backup
// (0600: they hold hashes of secrets). A token file the data directory no
// longer has is removed from the backup, so that no token comes back.
func copyConfig(dataDir, dir string) error {
	for _, name := range configFiles {
		b, err := os.ReadFile(filepath.Join(dataDir, name))
		if errors.Is(err, os.ErrNotExist) {
			if name == config.TokenFileName {
				if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("backup: removing the old copy of %s: %w", name, err)
				}
			}
			continue
		}
		if err == nil {
			err = config.WriteFileAtomic(filepath.Join(dir, name), b, 0o600)
		}
		if err != nil {
			return fmt.Errorf("backup: copying %s: %w", name, err)
		}
	}
	return nil
}
