package interop

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/test/harness"
)

// TestREADMECommands runs the commands the README gives for running Ward
// and sending images to it, as a new user would type them: Ward on its
// default address, then each DCMTK and ward command of the "Send images"
// section with its placeholder paths replaced by real files.
func TestREADMECommands(t *testing.T) {
	requireTool(t, "echoscu", "storescu", "go")
	requireDir(t, pydicomTestFiles)
	root := repoRoot()
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	for _, must := range []string{"go run ./cmd/ward serve", "./scripts/test.sh"} {
		if !strings.Contains(text, must) {
			t.Fatalf("README lost the command %q", must)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, ".ci", "run")); err != nil || !strings.Contains(string(b), "./scripts/test.sh") {
		t.Fatalf(".ci/run does not run the README's test command (%v)", err)
	}
	// The default address must be free for this test to run Ward as the
	// README says.
	ln, err := net.Listen("tcp", "127.0.0.1:11112")
	if err != nil {
		testci.SkipOrFail(t, "127.0.0.1:11112 is busy: %v", err)
	}
	ln.Close()

	bin := harness.WardBinary(t)
	work := t.TempDir()
	// The README's run command, from the checkout: the default data
	// directory ./ward-data is relative to where it runs.
	// The test machine's disk may be fuller than the default free-space
	// reserve (1 GiB) allows: a smaller one in the default data
	// directory's configuration, which the README's commands then edit.
	if err := os.MkdirAll(filepath.Join(work, "ward-data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "ward-data", "ward.toml"), []byte("[storage]\nmin_free = \"16MiB\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	serve := exec.Command(bin, "serve")
	serve.Dir = work
	harness.Start(t, serve, true)
	waitListen(t, 11112)

	dir := t.TempDir()
	for _, f := range []string{"CT_small.dcm", "MR_small.dcm", "rtplan.dcm"} {
		b, _ := os.ReadFile(filepath.Join(pydicomTestFiles, f))
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	subst := strings.NewReplacer("image.dcm", filepath.Join(pydicomTestFiles, "CT_small.dcm"), "/path/to/dir", dir, "./ward ", bin+" ")
	// The peer registration first, then the commands that use it: the
	// running ward serve has it at once (no SIGHUP, as the README says).
	peerFirst := func(section string) (before, after string) {
		var b, a strings.Builder
		for _, l := range strings.Split(section, "\n") {
			if strings.HasPrefix(l, "./ward peer") {
				b.WriteString(l + "\n")
			} else {
				a.WriteString(l + "\n")
			}
		}
		return "## A\n" + b.String() + "## B\n", "## A\n" + a.String() + "## B\n"
	}
	send := text[strings.Index(text, "## Send images to it"):strings.Index(text, "## Query and retrieve")]
	before, after := peerFirst(send)
	n := runREADMESection(t, before, "## A", "## B", work, subst)
	n += runREADMESection(t, after, "## A", "## B", work, subst)
	if n < 7 {
		t.Fatalf("found only %d README commands to run in the send section", n)
	}

	// The query/retrieve section: its study UID becomes CT_small's, its
	// workstation a storescp on a free port, registered while Ward runs.
	requireTool(t, "findscu", "getscu", "storescp")
	studyUID := studyOf(t, filepath.Join(pydicomTestFiles, "CT_small.dcm"))
	sport, sdir := startStorescp(t)
	out := t.TempDir()
	qr := strings.NewReplacer("1.2.3", studyUID, "--port 11113", "--port "+strconv.Itoa(sport), "/tmp/retrieved", out, "./ward ", bin+" ")
	before, after = peerFirst(text[strings.Index(text, "## Query and retrieve"):strings.Index(text, "## Look after the archive")])
	n = runREADMESection(t, before, "## A", "## B", work, qr)
	n += runREADMESection(t, after, "## A", "## B", work, qr)
	if n < 8 {
		t.Fatalf("found only %d README commands to run in the query/retrieve section", n)
	}
	if files, _ := filepath.Glob(filepath.Join(out, "*")); len(files) == 0 {
		t.Fatal("nothing retrieved by the README's get commands")
	}
	if files, _ := filepath.Glob(filepath.Join(sdir, "*")); len(files) == 0 {
		t.Fatal("the README's move command delivered nothing to the workstation")
	}

	// The archive care section: verify, export and delete CT_small's
	// study on the running Ward.
	exported := t.TempDir()
	backup := filepath.Join(t.TempDir(), "backup")
	care := strings.NewReplacer("1.2.3", studyUID, "/media/usb0/case-12", exported, "/mnt/backup/ward", backup, "./ward ", bin+" ")
	if n := runREADMESection(t, text, "## Look after the archive", "## Users and API tokens", work, care); n != 6 {
		t.Fatalf("ran %d README commands in the archive care section, want 6", n)
	}
	// The users and tokens section, on the running Ward.
	if n := runREADMESection(t, text, "## Users and API tokens", "## Run the tests", work, strings.NewReplacer("./ward ", bin+" ")); n != 5 {
		t.Fatalf("ran %d README commands in the users and tokens section, want 5", n)
	}
	if b, err := os.ReadFile(filepath.Join(work, "ward-data", "tokens.json")); err != nil || !strings.Contains(string(b), `"revoked"`) {
		t.Fatalf("the README's token commands: %v\n%s", err, b)
	}
	if _, err := os.Stat(filepath.Join(backup, "index.db")); err != nil {
		t.Fatalf("the README's backup command: %v", err)
	}
	if files, _ := filepath.Glob(filepath.Join(exported, studyUID, "*", "*.dcm")); len(files) != 1 {
		t.Fatalf("the README's export command exported %v", files)
	}

	// Everything sent is in the default data directory.
	if _, err := os.Stat(filepath.Join(work, "ward-data", "index.db")); err != nil {
		t.Fatalf("default data directory: %v", err)
	}
}

// readmeCmdRE matches the README lines that are commands to run.
var readmeCmdRE = regexp.MustCompile(`^(echoscu|storescu|findscu|getscu|\./ward (echo|store|version|find|get|move|peer|study|retention|backup|status|user|token))\b`)

// runREADMESection runs every command line of the README between two
// headings, with subst applied, in dir; it returns how many it ran.
func runREADMESection(t *testing.T, text, from, to, dir string, subst *strings.Replacer) int {
	t.Helper()
	section := text[strings.Index(text, from):strings.Index(text, to)]
	n := 0
	sc := bufio.NewScanner(strings.NewReader(section))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, " #"); i > 0 {
			line = strings.TrimSpace(line[:i])
		}
		if !readmeCmdRE.MatchString(line) {
			continue
		}
		line = subst.Replace(line)
		cmd := dcmtk("bash", "-c", line) // DCMTK tools, with Nagle off
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("README command %q: %v\n%s", line, err, out)
		}
		n++
	}
	return n
}

func studyOf(t *testing.T, path string) string {
	t.Helper()
	meta, rc, err := dicom.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	a, err := dicom.Scan(rc, dicom.LookupTransferSyntax(meta.TransferSyntaxUID), func(tg dicom.Tag) bool { return tg == dicom.StudyInstanceUID }, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return a.String(dicom.StudyInstanceUID)
}
