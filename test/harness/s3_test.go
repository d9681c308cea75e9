package harness

import (
	"bytes"
	"context"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestS3: versitygw starts with generated credentials, keeps an object,
// refuses connections once stopped, and serves the same object after it
// is started again; URL names bucket, prefix, endpoint and region and no
// credentials.
func TestS3(t *testing.T) {
	s := StartS3(t)
	bucket := s.Bucket(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.Client()
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("a/b"),
		Body: bytes.NewReader([]byte("hello"))}); err != nil {
		t.Fatal(err)
	}
	get := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := s.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("a/b")})
		if err != nil {
			return "", err
		}
		defer out.Body.Close()
		b, err := io.ReadAll(out.Body)
		return string(b), err
	}
	if got, err := get(); got != "hello" || err != nil {
		t.Fatalf("GetObject = %q, %v", got, err)
	}
	s.Stop()
	if _, err := get(); err == nil {
		t.Fatal("GetObject succeeded with versitygw stopped")
	}
	s.Start()
	if got, err := get(); got != "hello" || err != nil {
		t.Fatalf("GetObject after the restart = %q, %v", got, err)
	}

	u, err := url.Parse(s.URL(bucket, "p/q"))
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "s3" || u.Host != bucket || u.Path != "/p/q" || u.Query().Get("endpoint") != s.Endpoint ||
		u.Query().Get("region") != s.Region || u.User != nil || strings.Contains(u.String(), s.Secret) {
		t.Errorf("URL = %s", u)
	}
}
