package archive

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ward-pacs/ward/store"
)

// maxComment is the length of an Error Comment (0000,0902): VR LO.
const maxComment = 64

// storageCauses are the causes resourceError tells apart, and one it
// does not.
var storageCauses = []error{
	syscall.ENOSPC, syscall.EDQUOT, fs.ErrPermission, syscall.EIO,
	fmt.Errorf("postgres: %w", store.ErrUnavailable), errors.New("something else"),
}

// TestCommentsFit: every Error Comment the archive and the DIMSE front end
// write from fixed text fits in 64 characters: each comment literal
// (a Comment field, Fail, Failf, attrError, dimse.Errorf), its fixed
// part where values are formatted or added in, and every comment
// resourceError makes from each step it is called with and each cause.
// (Ward's "syncing the object to disk failed: the shared index or object
// store is unavailable; try again later" reached storescu as "...object
// st": the advice was cut off.) Values added in are cut by the encoder
// at a character boundary (network/dimse TestErrorCommentTruncated).
func TestCommentsFit(t *testing.T) {
	var steps []string
	for _, dir := range []string{".", "../network/dimse", "../network/dimsearchive", "../internal/server"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, file := range files {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, file, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			check := func(e ast.Expr) {
				if text := fixedText(e); len(text) > maxComment {
					t.Errorf("%s: a comment of %d characters (fixed part %q)", fset.Position(e.Pos()), len(text), text)
				}
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.KeyValueExpr:
					if id, ok := n.Key.(*ast.Ident); ok && (id.Name == "Comment" || id.Name == "ErrorComment") {
						check(n.Value)
					}
				case *ast.CallExpr:
					switch name := callName(n); name {
					case "Fail", "Failf":
						check(n.Args[1])
					case "attrError":
						check(n.Args[2])
					case "dimse.Errorf", "Errorf":
						if len(n.Args) > 1 {
							check(n.Args[1])
						}
					case "resourceError":
						if lit, ok := n.Args[0].(*ast.BasicLit); ok {
							s, _ := strconv.Unquote(lit.Value)
							steps = append(steps, s)
						} else {
							t.Errorf("%s: resourceError with a step that is not a literal", fset.Position(n.Pos()))
						}
					}
				}
				return true
			})
		}
	}
	if len(steps) == 0 {
		t.Fatal("no resourceError call found")
	}
	for _, step := range steps {
		for _, cause := range storageCauses {
			var e *Error
			if !errors.As(resourceError(step, cause), &e) {
				t.Fatalf("resourceError(%q, %v) is not an *Error", step, cause)
			}
			if len(e.Comment) > maxComment {
				t.Errorf("resourceError(%q, %v): %d characters: %q", step, cause, len(e.Comment), e.Comment)
			}
			if errors.Is(cause, store.ErrUnavailable) && !strings.HasPrefix(e.Comment, "store unavailable, try again later") {
				t.Errorf("resourceError(%q, %v) = %q: the advice does not come first", step, cause, e.Comment)
			}
			if strings.Contains(e.Comment, "disk") && !errors.Is(cause, syscall.EDQUOT) {
				t.Errorf("resourceError(%q, %v) = %q names a disk: the store may be S3", step, cause, e.Comment)
			}
		}
	}
	// The kinds' own texts stand in for a missing comment.
	for _, k := range Kinds {
		if len(k.Error()) > maxComment {
			t.Errorf("kind %q is longer than a comment", k)
		}
	}
}

// callName is "pkg.F" or "F" for a call of a named function.
func callName(c *ast.CallExpr) string {
	switch f := c.Fun.(type) {
	case *ast.Ident:
		return f.Name
	case *ast.SelectorExpr:
		if x, ok := f.X.(*ast.Ident); ok {
			return x.Name + "." + f.Sel.Name
		}
	}
	return ""
}

// fixedText is the fixed text of a comment expression: string literals,
// joined by +, and the format of fmt.Sprintf without its verbs; values
// computed at run time count as nothing.
func fixedText(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			s, _ := strconv.Unquote(e.Value)
			return s
		}
	case *ast.BinaryExpr:
		if e.Op == token.ADD {
			return fixedText(e.X) + fixedText(e.Y)
		}
	case *ast.ParenExpr:
		return fixedText(e.X)
	case *ast.CallExpr:
		if callName(e) == "fmt.Sprintf" && len(e.Args) > 0 {
			f := fixedText(e.Args[0])
			var sb strings.Builder
			for i := 0; i < len(f); i++ {
				if f[i] == '%' && i+1 < len(f) {
					i++
					if f[i] == '%' {
						sb.WriteByte('%')
					}
					continue
				}
				sb.WriteByte(f[i])
			}
			return sb.String()
		}
	}
	return ""
}
