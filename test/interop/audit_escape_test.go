package interop

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/audit"
)

// TestAuditTailEscapesNetworkText: calling AE titles sent by DCMTK's
// echoscu with an escape sequence ("\x1b]0;X\x07A" retitles an xterm) and
// with a newline and a tab ("A\nFAKE\tline" forged a record's line) are
// recorded as received, and `ward audit tail` and `ward audit search`
// print them escaped, as Ward's own log does: no control character
// reaches the terminal and every record stays one line.
func TestAuditTailEscapesNetworkText(t *testing.T) {
	requireTool(t, "echoscu")
	w := startWard(t)
	evil := []string{"\x1b]0;X\x07A", "A\nFAKE\tline"}
	for _, aet := range evil {
		// Accepted or refused, the association request is recorded.
		_, _ = dcmtk("echoscu", "-aet", aet, "-aec", "WARD", w.host, w.port).CombinedOutput()
	}
	readAudit(t, w.dir, func(recs []audit.Record) bool {
		n := 0
		for _, r := range recs {
			for _, e := range evil {
				if slices.Contains(r.Peers, e) {
					n++
				}
			}
		}
		return n >= len(evil)
	})
	file := filepath.Join(w.dir, "audit", audit.FileName)
	for _, args := range [][]string{
		{"audit", "tail", "--file", file},
		{"audit", "tail", "--xml", "--file", file},
		{"audit", "search", "--event", "authentication", "--file", file},
	} {
		out, code := wardCLI(t, args...)
		if code != 0 {
			t.Fatalf("ward %s: exit %d", strings.Join(args, " "), code)
		}
		if i := strings.IndexFunc(out, func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' || r == 0x7f }); i >= 0 {
			t.Errorf("ward %s printed a control character %q:\n%q", strings.Join(args, " "), out[i], out)
		}
		for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			if strings.HasPrefix(line, "FAKE") || strings.HasPrefix(line, "line") {
				t.Errorf("ward %s: a peer forged a line: %q", strings.Join(args, " "), line)
			}
		}
		if args[1] != "tail" || len(args) == 4 {
			for _, want := range []string{`peers="\x1b]0;X\aA"`, `peers="A\nFAKE\tline"`} {
				if !strings.Contains(out, want) {
					t.Errorf("ward %s: %s missing:\n%s", strings.Join(args, " "), want, out)
				}
			}
		}
	}
}
