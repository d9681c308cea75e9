package harness

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// fakeNode stands for a Ward node: a TCP listener answering each
// connection with its name (the DIMSE port) and an HTTP listener whose
// /readyz answers 200 or 503 as ready says (the web port).
type fakeNode struct {
	name  string
	ready atomic.Bool
	dimse net.Listener
	web   net.Listener
}

func startFakeNode(t *testing.T, name string) *fakeNode {
	t.Helper()
	f := &fakeNode{name: name}
	f.ready.Store(true)
	var err error
	if f.dimse, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if f.web, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := f.dimse.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, name)
			_ = c.Close()
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !f.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	mux.HandleFunc("/who", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, name) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(f.web) }()
	t.Cleanup(func() { _ = f.dimse.Close(); _ = srv.Close() })
	return f
}

func (f *fakeNode) lb() LBServer {
	return LBServer{Name: f.name, DICOMPort: f.dimse.Addr().(*net.TCPAddr).Port, WebPort: f.web.Addr().(*net.TCPAddr).Port}
}

// whoTCP connects to the DIMSE frontend and reads which node answered.
func whoTCP(t *testing.T, port int) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func whoHTTP(t *testing.T, port int) string {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/who")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /who through haproxy: %s %s", resp.Status, b)
	}
	return string(b)
}

// TestHAProxy: both frontends balance over both nodes; a node whose
// /readyz fails is taken out of both backends (read on the stats socket)
// and gets no more connections, and comes back once ready; a node whose
// port closes is taken out by a TCP check; a reload with a server fewer
// takes effect.
func TestHAProxy(t *testing.T) {
	a, b := startFakeNode(t, "node-a"), startFakeNode(t, "node-b")
	servers := []LBServer{a.lb(), b.lb()}
	h := StartHAProxy(t, servers, HAProxyOptions{Balance: "roundrobin", HealthPath: "/readyz"})
	h.WaitAllUp(t, servers, 10*time.Second)
	if st := h.States(t)[HAProxyDIMSE+"/node-a"]; st.Check != "L7OK" {
		t.Errorf("node-a's check is %q, want L7OK (an HTTP check)", st.Check)
	}
	seen := map[string]int{}
	for range 4 {
		seen[whoTCP(t, h.DIMSEPort)]++
		seen[whoHTTP(t, h.HTTPPort)]++
	}
	if seen["node-a"] == 0 || seen["node-b"] == 0 {
		t.Fatalf("not balanced over both nodes: %v", seen)
	}

	b.ready.Store(false)
	h.WaitState(t, HAProxyDIMSE, "node-b", "DOWN", 10*time.Second)
	h.WaitState(t, HAProxyWeb, "node-b", "DOWN", 10*time.Second)
	for range 6 {
		if w := whoTCP(t, h.DIMSEPort); w != "node-a" {
			t.Fatalf("a DIMSE connection went to %s, which is down", w)
		}
		if w := whoHTTP(t, h.HTTPPort); w != "node-a" {
			t.Fatalf("an HTTP request went to %s, which is down", w)
		}
	}
	b.ready.Store(true)
	h.WaitState(t, HAProxyDIMSE, "node-b", "UP", 10*time.Second)

	// Without a health path the checks are TCP connects to the balanced
	// port.
	h2 := StartHAProxy(t, servers, HAProxyOptions{})
	h2.WaitAllUp(t, servers, 10*time.Second)
	if st := h2.States(t)[HAProxyDIMSE+"/node-a"]; st.Check != "L4OK" {
		t.Errorf("node-a's check is %q, want L4OK (a TCP check)", st.Check)
	}
	_ = a.dimse.Close()
	h2.WaitState(t, HAProxyDIMSE, "node-a", "DOWN", 10*time.Second)
	if w := whoTCP(t, h2.DIMSEPort); w != "node-b" {
		t.Fatalf("a DIMSE connection went to %s", w)
	}

	h2.Reload(t, servers[1:])
	if _, in := h2.States(t)[HAProxyDIMSE+"/node-a"]; in {
		t.Error("node-a still listed after a reload without it")
	}
	h2.WaitAllUp(t, servers[1:], 10*time.Second)
	h2.Stop(t)
}
