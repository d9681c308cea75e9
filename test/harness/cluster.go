package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ClusterSpec is what the nodes of a test cluster share: the index and
// blobs URLs ([storage] index and blobs, e.g. "postgres://…" and
// "s3://…"; empty: each node its own embedded default, shared with
// nobody) and the environment (e.g. the S3 credentials).
type ClusterSpec struct {
	Index, Blobs string
	Env          []string
	// Storage is TOML added to every node's [storage] table, e.g.
	// on_duplicate = "reject".
	Storage string
	// Config is TOML added to every node's ward.toml after the harness's
	// own sections; it must open its own tables ([query], …).
	Config string
	// AnyAE sets [dicom] loopback_any_ae, so that DCMTK tools with any
	// calling AE title may use every service (through HAProxy too, which
	// calls from 127.0.0.1).
	AnyAE bool
}

// Node is one `ward serve` process of a test cluster: a real binary (so
// that kill -9 is real) with its own data directory, node ID and
// loopback ports, which stay the same across restarts.
type Node struct {
	Name      string // node_id, and the server's name in HAProxy
	Dir       string // its data directory (audit log, node-id, ward.toml)
	DICOMPort int
	WebPort   int
	Proc      *Proc // the current process; a restart replaces it
	bin       string
	spec      ClusterSpec
	t         testing.TB
}

// StartCluster starts n nodes named node-a, node-b, … on spec and waits
// until each serves. Nodes start one after the other (the first applies
// the index's migrations; the others find them done).
func StartCluster(t testing.TB, n int, spec ClusterSpec) []*Node {
	t.Helper()
	nodes := make([]*Node, n)
	for i := range nodes {
		nodes[i] = NewNode(t, "node-"+string(rune('a'+i)), spec)
		nodes[i].Start(t)
	}
	return nodes
}

// NewNode prepares a node (data directory, ports, ward.toml) without
// starting it.
func NewNode(t testing.TB, name string, spec ClusterSpec) *Node {
	t.Helper()
	nd := &Node{Name: name, Dir: DataDir(t), DICOMPort: FreePort(t), WebPort: FreePort(t), bin: WardBinary(t), spec: spec, t: t}
	var b strings.Builder
	fmt.Fprintf(&b, "node_id = %q\naet = \"WARD\"\n\n[storage]\nmin_free = \"16MiB\"\n", name)
	if spec.Index != "" {
		fmt.Fprintf(&b, "index = %q\n", spec.Index)
	}
	if spec.Blobs != "" {
		fmt.Fprintf(&b, "blobs = %q\n", spec.Blobs)
	}
	if spec.Storage != "" {
		b.WriteString(spec.Storage + "\n")
	}
	fmt.Fprintf(&b, "\n[dicom]\nlisten = \"127.0.0.1:%d\"\n", nd.DICOMPort)
	if spec.AnyAE {
		b.WriteString("loopback_any_ae = true\n")
	}
	fmt.Fprintf(&b, "\n[web]\nlisten = \"127.0.0.1:%d\"\n", nd.WebPort)
	if spec.Config != "" {
		b.WriteString("\n" + spec.Config + "\n")
	}
	if err := os.WriteFile(filepath.Join(nd.Dir, "ward.toml"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return nd
}

// LB is the node as HAProxy's configuration names it.
func (nd *Node) LB() LBServer {
	return LBServer{Name: nd.Name, DICOMPort: nd.DICOMPort, WebPort: nd.WebPort}
}

// LBServers are the nodes as HAProxy's configuration names them.
func LBServers(nodes []*Node) []LBServer {
	out := make([]LBServer, len(nodes))
	for i, nd := range nodes {
		out[i] = nd.LB()
	}
	return out
}

// Addr is the node's DIMSE address.
func (nd *Node) Addr() string { return "127.0.0.1:" + strconv.Itoa(nd.DICOMPort) }

// WebURL is the address of path on the node's web listener.
func (nd *Node) WebURL(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(nd.WebPort) + path
}

// Start starts (or restarts, after Kill or Stop) `ward serve` on the
// node's data directory and waits until it serves and its web listener
// accepts connections. When the test ends the process is killed.
func (nd *Node) Start(t testing.TB) {
	t.Helper()
	if nd.Proc != nil && !nd.Proc.Exited() {
		t.Fatalf("node %s still running", nd.Name)
	}
	cmd := exec.Command(nd.bin, "serve", "--data", nd.Dir)
	cmd.Env = append(os.Environ(), nd.spec.Env...)
	nd.Proc = Start(t, cmd, false)
	nd.Proc.Port = strconv.Itoa(nd.DICOMPort)
	nd.Proc.WaitServing(t)
	WaitListen(t, nd.WebPort)
}

// Kill sends SIGKILL to the node and reaps it: no clean-up runs.
func (nd *Node) Kill() {
	if nd.Proc != nil {
		nd.Proc.Kill()
	}
}

// Stop interrupts the node (SIGINT, a clean stop) and waits up to 30 s.
func (nd *Node) Stop(t testing.TB) {
	t.Helper()
	if nd.Proc != nil && !nd.Proc.Exited() {
		_, _ = nd.Proc.Stop(t, syscall.SIGINT, 30*time.Second)
	}
}

// CLI runs the ward command with --data of the node (and its
// environment), stdin as its input, and returns its standard output; it
// fails the test when the command fails.
func (nd *Node) CLI(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, err := nd.TryCLI(stdin, args...)
	if err != nil {
		t.Fatalf("ward %s (node %s): %v", strings.Join(args, " "), nd.Name, err)
	}
	return out
}

// TryCLI is CLI returning the error (with the command's output in it)
// instead of failing the test.
func (nd *Node) TryCLI(stdin string, args ...string) (string, error) {
	cmd := exec.Command(nd.bin, append(args, "--data", nd.Dir)...)
	cmd.Env = append(os.Environ(), nd.spec.Env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%w\n%s%s", err, out.String(), errb.String())
	}
	return out.String(), nil
}
