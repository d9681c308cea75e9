package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var build struct {
	once sync.Once
	bin  string
	err  error
}

// WardBinary builds ./cmd/ward once per test process and returns its
// path (removed by Main).
func WardBinary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		dir, err := processTempDir("ward-test-bin")
		if err != nil {
			build.err = err
			return
		}
		build.bin = filepath.Join(dir, "ward")
		cmd := exec.Command("go", "build", "-o", build.bin, "./cmd/ward")
		cmd.Dir = RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/ward: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

// Proc is a child process (`ward serve`, usually) whose output is kept.
type Proc struct {
	Cmd  *exec.Cmd
	Port string // the DICOM port it was told to listen on, when the caller sets it
	Log  *Buffer
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// Start starts cmd with its output in p.Log and reaps it when it exits.
// When the test ends the process is killed (SIGKILL), or, with clean,
// interrupted (SIGINT) and waited for; its output goes to the test log if
// the test failed.
func Start(t testing.TB, cmd *exec.Cmd, clean bool) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, Log: &Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Log, p.Log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if clean {
			_ = cmd.Process.Signal(os.Interrupt)
			<-p.done
		} else {
			p.Kill()
		}
		if t.Failed() {
			t.Logf("%s log (pid %d):\n%s", filepath.Base(cmd.Args[0]), cmd.Process.Pid, p.Log.String())
		}
	})
	return p
}

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error (Wait's result), once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL and reaps the process.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends sig and waits up to limit for the exit; it returns the exit
// error and how long the exit took.
func (p *Proc) Stop(t testing.TB, sig os.Signal, limit time.Duration) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.err, time.Since(start)
	case <-time.After(limit):
		t.Fatalf("%s did not exit within %s of %s", filepath.Base(p.Cmd.Args[0]), limit, sig)
		return nil, 0
	}
}

// WaitLog waits up to limit until the process's output contains what. It
// fails the test if the process exits first or the time runs out.
func (p *Proc) WaitLog(t testing.TB, what string, limit time.Duration) {
	t.Helper()
	deadline := time.After(limit)
	for !strings.Contains(p.Log.String(), what) {
		select {
		case <-p.done:
			if strings.Contains(p.Log.String(), what) {
				return
			}
			t.Fatalf("%s exited before logging %q: %v\n%s", filepath.Base(p.Cmd.Args[0]), what, p.err, p.Log.String())
		case <-deadline:
			t.Fatalf("%s never logged %q in %s:\n%s", filepath.Base(p.Cmd.Args[0]), what, limit, p.Log.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// WaitServing waits up to 20 s until a `ward serve` process says it
// serves (it listens then).
func (p *Proc) WaitServing(t testing.TB) {
	t.Helper()
	p.WaitLog(t, "ward serving", 20*time.Second)
}

// DataDir makes an empty data directory for `ward serve`, mode 0700 (Ward
// refuses one that other users may enter, as t.TempDir's own are).
func DataDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}
