package interop

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
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
		if ci() {
			t.Fatalf("127.0.0.1:11112 is busy: %v", err)
		}
		t.Skipf("127.0.0.1:11112 is busy: %v", err)
	}
	ln.Close()

	bin := filepath.Join(t.TempDir(), "ward")
	if out, err := exec.Command("go", "build", "-o", bin, filepath.Join(root, "cmd", "ward")).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	work := t.TempDir()
	// The README's run command, from the checkout: the default data
	// directory ./ward-data is relative to where it runs.
	serve := exec.Command(bin, "serve")
	serve.Dir = work
	logf, _ := os.Create(filepath.Join(work, "serve.log"))
	serve.Stdout, serve.Stderr = logf, logf
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		serve.Process.Signal(os.Interrupt)
		serve.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("ward log:\n%s", b)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", "127.0.0.1:11112"); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ward serve did not listen on 127.0.0.1:11112")
		}
		time.Sleep(50 * time.Millisecond)
	}

	dir := t.TempDir()
	for _, f := range []string{"CT_small.dcm", "MR_small.dcm", "rtplan.dcm"} {
		b, _ := os.ReadFile(filepath.Join(pydicomTestFiles, f))
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	subst := strings.NewReplacer("image.dcm", filepath.Join(pydicomTestFiles, "CT_small.dcm"), "/path/to/dir", dir, "./ward ", bin+" ")
	// Commands of the "Send images to it" section, comments dropped.
	section := text[strings.Index(text, "## Send images to it"):strings.Index(text, "## Run the tests")]
	cmdRE := regexp.MustCompile(`^(echoscu|storescu|\./ward (echo|store|version))\b`)
	n := 0
	sc := bufio.NewScanner(strings.NewReader(section))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, "#"); i > 0 {
			line = strings.TrimSpace(line[:i])
		}
		if !cmdRE.MatchString(line) {
			continue
		}
		line = subst.Replace(line)
		cmd := exec.Command("bash", "-c", line)
		cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("README command %q: %v\n%s", line, err, out)
		}
		n++
	}
	if n < 6 {
		t.Fatalf("found only %d README commands to run", n)
	}
	// Everything sent is in the default data directory.
	if _, err := os.Stat(filepath.Join(work, "ward-data", "index.db")); err != nil {
		t.Fatalf("default data directory: %v", err)
	}
}
