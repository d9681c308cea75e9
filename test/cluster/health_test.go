package cluster

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/test/harness"
)

// TestHAProxyHealth: HAProxy checks each node's /readyz. A node whose
// /readyz fails (node B draining after SIGTERM, [metrics] drain) is taken
// out of both backends, read on HAProxy's stats socket, while it still
// answers directly; new associations and requests through HAProxy then
// all go to node A. A killed node is taken out too, and a restarted one
// put back.
func TestHAProxyHealth(t *testing.T) {
	c := newCluster(t, clusterOpts{config: "[metrics]\ndrain = \"60s\""})
	a, b := c.nodes[0], c.nodes[1]
	if st := c.lb.States(t)[harness.HAProxyDIMSE+"/node-b"]; st.Check != "L7OK" {
		t.Fatalf("node B's check is %q, want L7OK (an HTTP check of /readyz)", st.Check)
	}
	if err := b.Proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c.lb.WaitState(t, harness.HAProxyDIMSE, "node-b", "DOWN", 10*time.Second)
	c.lb.WaitState(t, harness.HAProxyWeb, "node-b", "DOWN", 10*time.Second)
	resp, err := http.Get(b.WebURL("/readyz"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("node B's /readyz while draining: %s, want 503", resp.Status)
	}
	if err := echo(b.Addr()); err != nil {
		t.Errorf("node B stopped serving while draining: %v", err)
	}
	before := c.lb.States(t)
	for range 10 {
		if err := echo(c.lbAddr()); err != nil {
			t.Fatalf("C-ECHO through HAProxy with node B out: %v", err)
		}
	}
	after := c.lb.States(t)
	if d := after[harness.HAProxyDIMSE+"/node-b"].Total - before[harness.HAProxyDIMSE+"/node-b"].Total; d != 0 {
		t.Errorf("%d associations through HAProxy went to node B, which is out", d)
	}
	if d := after[harness.HAProxyDIMSE+"/node-a"].Total - before[harness.HAProxyDIMSE+"/node-a"].Total; d != 10 {
		t.Errorf("%d of 10 associations through HAProxy went to node A", d)
	}

	b.Kill()
	b.Start(t)
	c.lb.WaitState(t, harness.HAProxyDIMSE, "node-b", "UP", 20*time.Second)
	a.Kill()
	c.lb.WaitState(t, harness.HAProxyDIMSE, "node-a", "DOWN", 10*time.Second)
	c.lb.WaitState(t, harness.HAProxyWeb, "node-a", "DOWN", 10*time.Second)
	if err := echo(c.lbAddr()); err != nil {
		t.Fatalf("C-ECHO through HAProxy with node A killed: %v", err)
	}
}
