// Package layering holds the test that keeps Ward's floors apart: each
// package may import only the floors docs/architecture.md (and the design's
// ARCHITECTURE.md) allow below it, directly or through another package.
package layering

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/ward-pacs/ward"

// rules: a package (by its path in the module, matched by the longest
// prefix) may import only the module packages under the prefixes listed,
// and its own floor. Each list holds what the floors it names may import in
// turn, so the rule holds transitively too.
var rules = map[string][]string{
	"cmd":      {"internal"},
	"internal": {""}, // wiring: anything
	"test":     {""}, // tests and their shared harness (test/harness): anything
	"dicom":    {},
	"audit":    {"tlsprofile", "durable"},
	"store":    {"durable"},
	// A cluster's shared state (peers, users, tokens, sessions) in its
	// PostgreSQL index: beside the backends, on store alone.
	"store/pgshared": {"store"},
	// What the SQL index backends share (key matching, paged reads).
	"store/sqlmatch": {"store"},
	"policy":         {"dicom"},
	"archive":        {"store", "dicom", "durable"},
	"network":        {"dicom", "archive", "policy", "store", "durable"},
	"web":            {"dicom", "archive", "policy", "store", "durable"},
	"scan":           {"network", "dicom", "archive", "policy", "store", "durable", "internal/termsafe"},
	// Leaves that any floor may print through: no module imports.
	"internal/termsafe": {},
	// Ward's one TLS profile: a leaf, for every floor that speaks TLS;
	// and the CA of `ward pki`, which prints fingerprints by it.
	"tlsprofile": {},
	"pki":        {"tlsprofile", "durable"},
	// fsync of files and directories, and a MkdirAll that fsyncs: a leaf
	// for every floor that writes files.
	"durable": {},
	// The administration (the admin socket, its client, the operator's
	// operations and the backup) works on the archive and the audit
	// trail, beside the network front ends: neither them nor the
	// composition root (internal/server), which serves it.
	"internal/admin": {"archive", "store", "dicom", "audit", "durable", "internal/config", "internal/datadir"},
	// The data directory's permission checks: the standard library only.
	"internal/datadir": {},
	// The viewer's npm package files and their fetch: a leaf beside the
	// floors (internal/server and internal/cli call it).
	"viewer": {"durable"},
}

// debts are imports that break the rules today, each with why (none
// now: issue #15 paid the last, policy reading config's types and naming
// DIMSE). Each entry must still be true: fix the import, then delete the
// line.
var debts = map[[2]string]bool{}

// TestLayering parses every non-test Go file of the module and checks the
// imports of each package against rules.
func TestLayering(t *testing.T) {
	root := repoRoot(t)
	direct := map[string]map[string]bool{} // package -> module packages it imports
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		if direct[pkg] == nil {
			direct[pkg] = map[string]bool{}
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if p == module || strings.HasPrefix(p, module+"/") {
				direct[pkg][strings.TrimPrefix(strings.TrimPrefix(p, module), "/")] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(direct) < 20 {
		t.Fatalf("found only %d packages under %s", len(direct), root)
	}
	// Direct imports suffice: every floor a package may import obeys its
	// own rule, so what a package reaches transitively is allowed too. A
	// debt is the one way through, and it is listed where it stands.
	used := map[[2]string]bool{}
	var pkgs []string
	for p := range direct {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	for _, pkg := range pkgs {
		floor, allowed, ok := ruleFor(pkg)
		if !ok {
			t.Errorf("%s: no layering rule covers it; add one to rules", pkg)
			continue
		}
		for imp := range direct[pkg] {
			if under(imp, "test") && !under(pkg, "test") {
				// Whatever a floor may import, test/ (the shared harness)
				// is for tests only.
				t.Errorf("%s imports %s: only tests may import the test floor", pkg, imp)
				continue
			}
			if under(imp, floor) || allowedBy(imp, allowed) {
				continue
			}
			if d := [2]string{pkg, imp}; debts[d] {
				used[d] = true
				continue
			}
			t.Errorf("%s imports %s: the %s floor may import only %q (docs/architecture.md)", pkg, imp, floor, allowed)
		}
	}
	for d := range debts {
		if !used[d] {
			t.Errorf("debt %s -> %s is paid: delete it from debts", d[0], d[1])
		}
	}
}

func ruleFor(pkg string) (floor string, allowed []string, ok bool) {
	best := -1
	for prefix, a := range rules {
		if under(pkg, prefix) && len(prefix) > best {
			floor, allowed, best, ok = prefix, a, len(prefix), true
		}
	}
	return floor, allowed, ok
}

func allowedBy(imp string, allowed []string) bool {
	for _, a := range allowed {
		if a == "" || under(imp, a) {
			return true
		}
	}
	return false
}

// under reports whether pkg is prefix or inside it.
func under(pkg, prefix string) bool {
	return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test")
		}
		dir = parent
	}
}
