package server

import (
	"context"
	"errors"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/store"
)

// Status is what ward status reports: no patient data, only counts.
type Status struct {
	Serving bool         `json:"serving"`
	DataDir string       `json:"data_dir"`
	Counts  store.Counts `json:"counts"`
	// Node is the ID of the node reporting (backends.go), Capabilities
	// those its store resolved (store.Caps.Names).
	Node         string   `json:"node"`
	Capabilities []string `json:"capabilities"`
	// DeletionsHeld: a backup (of any node sharing the index) holds the
	// deletion of objects.
	DeletionsHeld bool `json:"deletions_held,omitempty"`
	// Disk of the objects: free and total bytes, the reserve below which
	// C-STOREs are refused, and whether they are (-1 where unknown).
	DiskFree      int64 `json:"disk_free"`
	DiskTotal     int64 `json:"disk_total"`
	DiskReserve   int64 `json:"disk_reserve"`
	StoresRefused bool  `json:"stores_refused"`
	// AwaitingDeletion counts objects of deleted or replaced instances not
	// yet removed (up to 1000: more reads as 1000).
	AwaitingDeletion int `json:"awaiting_deletion"`
	// AuditFailing is set while a running Ward cannot write its audit log
	// (why), and AuditRefusing when it refuses patient-data services
	// meanwhile ([audit] on_failure).
	AuditFailing  string `json:"audit_failing,omitempty"`
	AuditRefusing bool   `json:"audit_refusing,omitempty"`
}

// status reads the archive's counts and its disk's space.
func status(ctx context.Context, ar *archive.Archive, c *config.Config) (*Status, error) {
	caps := ar.Capabilities()
	st := &Status{DataDir: c.DataDir, Node: ar.Node, Capabilities: caps.Names(), DiskFree: -1, DiskTotal: -1, DiskReserve: -1}
	if caps.DeleteHolder != nil {
		held, err := caps.DeleteHolder.DeletesHeld(ctx)
		if err != nil {
			return nil, err
		}
		st.DeletionsHeld = held
	}
	if cn := caps.Counter; cn != nil {
		counts, err := cn.Counts(ctx)
		if err != nil {
			return nil, err
		}
		st.Counts = counts
	} else {
		n, err := ar.Index.CountInstances(ctx)
		if err != nil {
			return nil, err
		}
		st.Counts.Instances = n
	}
	pending, err := ar.Index.PendingBlobDeletes(ctx, 1000)
	if err != nil {
		return nil, err
	}
	st.AwaitingDeletion = len(pending)
	if sr := caps.SpaceReporter; sr != nil {
		free, total, err := sr.Space(ctx)
		if err != nil {
			return nil, err
		}
		st.DiskFree, st.DiskTotal = free, total
		minFree, share, err := c.Storage.MinFreeBytes()
		if err != nil {
			return nil, err
		}
		st.DiskReserve = archive.Reserve(minFree, share, total)
		st.StoresRefused = free < st.DiskReserve
	}
	return st, nil
}

// Status reports on the stopped Ward.
func (a *Admin) Status(ctx context.Context) (*Status, error) {
	return status(ctx, a.Archive, a.Config)
}

// RemoteStatus asks the ward serve running on dataDir for its status.
func RemoteStatus(ctx context.Context, dataDir string) (*Status, error) {
	var resp struct {
		Error string `json:"error,omitempty"`
		Status
	}
	if err := adminCall(ctx, dataDir, &StudyRequest{Op: "status"}, &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return nil, errors.New(resp.Error)
	}
	resp.Status.Serving = true
	return &resp.Status, nil
}
