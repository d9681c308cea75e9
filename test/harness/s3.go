package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ward-pacs/ward/internal/testci"
)

// versitygwBinary finds versitygw (built by scripts/test.sh from the tools
// module in test/tools: see test/tools/tools.md).
func versitygwBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	out, _ := exec.Command("go", "env", "GOPATH").Output()
	p := filepath.Join(strings.TrimSpace(string(out)), "bin", "versitygw")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	testci.SkipOrFail(t, "versitygw not installed (scripts/test.sh builds it: see test/tools/tools.md)")
	return ""
}

// S3 is a running versitygw, an S3-compatible object store, serving a
// directory (its posix back end: a bucket is a folder) on a loopback port,
// with a root access key and secret generated for it. Stop and Start
// take it away and bring it back on the same port with the same data (an
// "S3 unreachable" fault).
type S3 struct {
	// Endpoint is its URL, http://127.0.0.1:PORT.
	Endpoint string
	// Access and Secret are its root credentials; Region its region.
	Access, Secret, Region string
	// Dir holds its buckets, one folder each.
	Dir string

	t    testing.TB
	bin  string
	port int
	mu   sync.Mutex
	proc *Proc
}

// StartS3 starts versitygw for the test (stopped when it ends). Locally
// it skips the test when versitygw is not installed; under CI=true it
// fails it.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	return StartS3Dir(t, t.TempDir())
}

// StartS3Dir is StartS3 keeping the buckets in dir (a benchmark puts
// them on the disk it measures).
func StartS3Dir(t testing.TB, dir string) *S3 {
	t.Helper()
	bin := versitygwBinary(t)
	s := &S3{t: t, bin: bin, port: FreePort(t), Dir: dir, Region: "us-east-1",
		Access: "ward" + randHex(8), Secret: randHex(20)}
	s.Endpoint = "http://127.0.0.1:" + strconv.Itoa(s.port)
	s.Start()
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Start starts versitygw (again, after Stop) and waits until it answers.
func (s *S3) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && !s.proc.Exited() {
		return
	}
	// The credentials go by environment, not the command line (which
	// other local users can read in /proc).
	cmd := exec.Command(s.bin, "--port", "127.0.0.1:"+strconv.Itoa(s.port), "--region", s.Region,
		"--keep-alive", "--quiet", "posix", s.Dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.Access, "ROOT_SECRET_ACCESS_KEY="+s.Secret)
	s.proc = Start(s.t, cmd, false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if s.proc.Exited() {
			s.t.Fatalf("versitygw exited: %v\n%s", s.proc.Err(), s.proc.Log.String())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := s.Client().ListBuckets(ctx, &s3.ListBucketsInput{})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("versitygw did not start: %v\n%s", err, s.proc.Log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills versitygw (SIGKILL): from now on its port refuses
// connections, until Start.
func (s *S3) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Kill()
	}
}

// Client is an S3 client of the store, with its root credentials.
func (s *S3) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.Access, s.Secret, ""),
	})
}

// Bucket makes a new, empty bucket with a random name and returns it.
func (s *S3) Bucket(t testing.TB) string {
	t.Helper()
	name := "ward-" + randHex(6)
	s.MakeBucket(t, name)
	return name
}

// MakeBucket makes the bucket name.
func (s *S3) MakeBucket(t testing.TB, name string) {
	t.Helper()
	if err := s.makeBucket(name); err != nil {
		t.Fatal(err)
	}
}

// NewBucket makes a new, empty bucket with a random name, for callers
// without a testing.TB.
func (s *S3) NewBucket() (string, error) {
	name := "ward-" + randHex(6)
	return name, s.makeBucket(name)
}

func (s *S3) makeBucket(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return fmt.Errorf("creating bucket %s: %v", name, err)
	}
	return nil
}

// URL is the data source name of Ward's "s3" blobs backend for the
// objects under prefix (which may be empty) in bucket on this store:
// s3://BUCKET/PREFIX?endpoint=…&region=…. It holds no credentials; Env
// gives them.
func (s *S3) URL(bucket, prefix string) string {
	u := url.URL{Scheme: "s3", Host: bucket, Path: "/" + strings.TrimPrefix(prefix, "/"),
		RawQuery: url.Values{"endpoint": {s.Endpoint}, "region": {s.Region}}.Encode()}
	return u.String()
}

// Env is the environment that gives a client (ward serve) the store's
// credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
func (s *S3) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.Access, "AWS_SECRET_ACCESS_KEY=" + s.Secret}
}

// SetEnv sets the credentials in this process's environment for the
// rest of the test (for backends opened in the test process itself).
func (s *S3) SetEnv(t testing.TB) {
	t.Helper()
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// String names the store in logs.
func (s *S3) String() string { return fmt.Sprintf("versitygw at %s", s.Endpoint) }
