package config

import (
	"errors"
	"strings"
	"testing"
)

func TestStorageBackendsByURL(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		st                   Storage
		index, blobs, errHas string
		secret               bool
	}{
		{name: "default", st: Storage{}},
		{name: "names", st: Storage{Index: "sqlite", IndexDSN: "/x/index.db", Blobs: "fs", BlobsDSN: "/x"}, index: "sqlite", blobs: "fs"},
		{name: "postgres url", st: Storage{Index: "postgres://ward@db.example.org/ward?sslmode=verify-full"}, index: "postgres"},
		{name: "postgresql url", st: Storage{Index: "postgresql:///ward?host=/run/postgresql"}, index: "postgres"},
		{name: "old form", st: Storage{Index: "postgres", IndexDSN: "host=/tmp dbname=ward"}, index: "postgres"},
		{name: "s3 url", st: Storage{Blobs: "s3://bucket/prefix?endpoint=http://127.0.0.1:7070&region=us-east-1"}, blobs: "s3"},
		{name: "unknown scheme", st: Storage{Index: "mysql://ward@db/ward"}, errHas: `unknown scheme "mysql"`},
		{name: "blobs scheme on index", st: Storage{Index: "s3://bucket"}, errHas: `unknown scheme "s3"`},
		{name: "url and dsn", st: Storage{Index: "postgres://db/ward", IndexDSN: "host=x"}, errHas: "remove index_dsn"},
		{name: "dsn alone", st: Storage{BlobsDSN: "/x"}, errHas: "without blobs"},
		{name: "pg password", st: Storage{Index: "postgres://ward:hunter2@db/ward"}, secret: true},
		{name: "pg password param", st: Storage{Index: "postgres://ward@db/ward?password=hunter2"}, secret: true},
		{name: "pg password dsn", st: Storage{Index: "postgres", IndexDSN: "host=db password=hunter2"}, secret: true},
		{name: "s3 keys", st: Storage{Blobs: "s3://AKIA:hunter2@bucket/p"}, secret: true},
		{name: "s3 key user", st: Storage{Blobs: "s3://AKIA@bucket/p"}, secret: true},
		{name: "s3 key param", st: Storage{Blobs: "s3://bucket/p?secret_key=hunter2"}, secret: true},
		{name: "s3 no bucket", st: Storage{Blobs: "s3:///p"}, errHas: "no bucket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Storage = tc.st
			c.Storage.OnDuplicate = "replace"
			err := c.Validate()
			switch {
			case tc.secret:
				if !errors.Is(err, ErrSecretInURL) {
					t.Fatalf("Validate = %v, want ErrSecretInURL", err)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("the error shows the secret: %v", err)
				}
				return
			case tc.errHas != "":
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("Validate = %v, want %q", err, tc.errHas)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			ib, _ := c.Storage.IndexBackend()
			bb, _ := c.Storage.BlobsBackend()
			if ib.Name != tc.index || bb.Name != tc.blobs {
				t.Fatalf("backends %q %q, want %q %q", ib.Name, bb.Name, tc.index, tc.blobs)
			}
			if strings.Contains(tc.st.Index, "://") && ib.DSN != tc.st.Index {
				t.Fatalf("index DSN %q, want the whole URL", ib.DSN)
			}
			if c.Cluster() != (tc.index == "postgres") {
				t.Fatalf("Cluster() = %v", c.Cluster())
			}
		})
	}
}

// TestClusterRefusesLocalPeers: in cluster mode [[peers]] and [[users]]
// in ward.toml are refused, saying where they live.
func TestClusterRefusesLocalPeers(t *testing.T) {
	c := Default()
	c.Storage.Index = "postgres://ward@127.0.0.1/ward"
	c.Peers = []Peer{{AETitle: "MOD", Host: "127.0.0.1", Allow: []string{"echo"}}}
	err := c.Validate()
	if !errors.Is(err, ErrClusterLocal) || !strings.Contains(err.Error(), "ward peer import") {
		t.Fatalf("Validate = %v", err)
	}
	if len(Refused(c.Check())) == 0 {
		t.Fatal("config check does not refuse [[peers]] in cluster mode")
	}
	c.Peers = nil
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	var info bool
	for _, f := range c.Check() {
		info = info || strings.Contains(f.Problem, "cluster mode")
	}
	if !info {
		t.Fatal("config check does not note cluster mode")
	}
}

func TestCheckStorageTransport(t *testing.T) {
	c := Default()
	c.Storage.Index = "postgres://ward@db.example.org/ward"
	c.Storage.Blobs = "s3://b/p?endpoint=http://s3.example.org"
	var pg, s3 bool
	for _, f := range c.Check() {
		pg = pg || strings.Contains(f.Setting, "sslmode")
		s3 = s3 || strings.Contains(f.Setting, "endpoint")
	}
	if !pg || !s3 {
		t.Fatalf("unverified PostgreSQL %v, clear-text S3 %v not reported", pg, s3)
	}
}
