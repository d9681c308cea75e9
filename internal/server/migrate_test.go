package server

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/store"
)

// TestMigrationTargetRefusesTheSource: ward migrate refuses a destination
// that is the source's data directory, index or objects.
func TestMigrationTargetRefusesTheSource(t *testing.T) {
	ctx := context.Background()
	src := config.Default()
	src.DataDir = filepath.Join(t.TempDir(), "data")
	for name, edit := range map[string]func(*config.Config){
		"same data directory": func(c *config.Config) { c.DataDir = src.DataDir },
		"same index":          func(c *config.Config) { c.Storage.Index, c.Storage.IndexDSN = "sqlite", src.IndexPath() },
		"same objects":        func(c *config.Config) { c.Storage.Blobs, c.Storage.BlobsDSN = "fs", src.DataDir+"/." },
	} {
		dst := config.Default()
		dst.DataDir = filepath.Join(t.TempDir(), "new")
		edit(dst)
		if tgt, err := OpenMigrationTarget(ctx, src, dst, nil); err == nil {
			tgt.Close()
			t.Errorf("%s: a migration into the source was not refused", name)
		}
	}
	dst := config.Default()
	dst.DataDir = filepath.Join(t.TempDir(), "new")
	tgt, err := OpenMigrationTarget(ctx, src, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tgt.Describe, dst.DataDir) {
		t.Errorf("Describe = %q", tgt.Describe)
	}
	if err := tgt.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDescribeSpecNoSecrets: the destination named in the audit trail and
// the summary carries no user, password or query string.
func TestDescribeSpecNoSecrets(t *testing.T) {
	d := describeSpec(store.Spec{Index: "postgres", IndexDSN: "postgres://ward:s3cret@db1.example:5432/ward?sslmode=verify-full&password=other",
		Blobs: "s3", BlobsDSN: "s3://pacs/ward?endpoint=http://127.0.0.1:7070&region=x"})
	if strings.Contains(d, "s3cret") || strings.Contains(d, "other") || strings.Contains(d, "ward@") || strings.Contains(d, "?") {
		t.Fatalf("describeSpec = %q", d)
	}
	if d != "postgres postgres://db1.example:5432/ward, s3 s3://pacs/ward" {
		t.Fatalf("describeSpec = %q", d)
	}
}
