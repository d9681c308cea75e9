package server

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/internal/config"
	webviewer "github.com/ward-pacs/ward/web/viewer"
)

// TestViewerBundleWritableByOthers: a [web] viewer bundle that other
// local users may change is not served (its scripts would run with the
// signed-in user's access); closed, it is.
func TestViewerBundleWritableByOthers(t *testing.T) {
	dir := t.TempDir()
	index := filepath.Join(dir, "index.html")
	if err := os.WriteFile(index, []byte(`<script src="/app-config.js"></script>`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(index, 0o666); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	s := &Server{Config: &config.Config{DataDir: t.TempDir(), Web: config.Web{Viewer: dir}}, Logger: slog.New(slog.NewTextHandler(&log, nil))}
	v := webviewer.New("")
	if s.setupViewer(v) || v.Installed() {
		t.Fatal("a bundle others may write to is served")
	}
	if !strings.Contains(log.String(), "other local users may change it") {
		t.Errorf("the log does not say why:\n%s", log.String())
	}
	if err := os.Chmod(index, 0o644); err != nil {
		t.Fatal(err)
	}
	if s.setupViewer(v); !v.Installed() {
		t.Fatalf("a closed bundle is not served:\n%s", log.String())
	}
}
