package s3blob_test

import (
	"context"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/s3blob"
	"github.com/ward-pacs/ward/store/storetest"
	"github.com/ward-pacs/ward/test/harness"
)

func open(t *testing.T, s *harness.S3) *s3blob.Store {
	t.Helper()
	s.SetEnv(t)
	st, err := s3blob.Open(context.Background(), s.URL(s.Bucket(t), "ward"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestConformance(t *testing.T) {
	s := harness.StartS3(t)
	storetest.TestBlobs(t, func(t *testing.T) store.Blobs { return open(t, s) })
}
