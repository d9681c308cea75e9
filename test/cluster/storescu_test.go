package cluster

import (
	"bytes"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-pacs/ward/test/harness"
)

// storescu is DCMTK storescu -v sending files, its output followed as it
// is written: which files were acknowledged (a success response), and a
// callback at each.
type storescu struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu      sync.Mutex
	out     bytes.Buffer
	partial []byte
	current string
	acked   []string
	onAck   func(n int) // called with the count so far, without mu
}

// startStorescu runs storescu -v from scuAET to Ward at port with files.
func startStorescu(t *testing.T, port string, files []string, onAck func(n int)) *storescu {
	t.Helper()
	args := append([]string{"-v", "-aet", scuAET, "-aec", "WARD", "127.0.0.1", port}, files...)
	s := &storescu{cmd: harness.DCMTK("storescu", args...), done: make(chan struct{}), onAck: onAck}
	s.cmd.Stdout, s.cmd.Stderr = s, s
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

func (s *storescu) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.out.Write(p)
	s.partial = append(s.partial, p...)
	var counts []int
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(s.partial[:i]))
		s.partial = s.partial[i+1:]
		switch {
		case strings.HasPrefix(line, "I: Sending file: "):
			s.current = strings.TrimPrefix(line, "I: Sending file: ")
		case line == "I: Received Store Response (Success)":
			s.acked = append(s.acked, s.current)
			counts = append(counts, len(s.acked))
		}
	}
	on := s.onAck
	s.mu.Unlock()
	for _, n := range counts {
		if on != nil {
			on(n)
		}
	}
	return len(p), nil
}

// wait waits up to limit for storescu to exit and returns its error.
func (s *storescu) wait(t *testing.T, limit time.Duration) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(limit):
		_ = s.cmd.Process.Kill()
		<-s.done
		t.Fatalf("storescu still running after %s:\n%s", limit, s.String())
		return nil
	}
}

func (s *storescu) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// ackedObjects are the objects of objs whose files were acknowledged.
func (s *storescu) ackedObjects(objs []*object) []*object {
	s.mu.Lock()
	defer s.mu.Unlock()
	byPath := map[string]*object{}
	for _, o := range objs {
		byPath[o.path] = o
	}
	var out []*object
	for _, p := range s.acked {
		if o := byPath[p]; o != nil {
			out = append(out, o)
		}
	}
	return out
}

func paths(objs []*object) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.path
	}
	return out
}
