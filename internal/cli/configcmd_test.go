package cli

import (
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The defaults are clean.
	out, _, code := runCLI(t, "config", "check", "--data", filepath.Join(dir, "empty"))
	if code != 0 || !strings.Contains(out, "no risky settings") {
		t.Fatalf("defaults: %d %s", code, out)
	}
	// The loopback opt-in is a warning, not a refusal.
	out, _, code = runCLI(t, "config", "check", "--data", filepath.Join(dir, "empty"), "--loopback-any-ae")
	if code != 0 || !strings.Contains(out, "MEDIUM") || !strings.Contains(out, "loopback_any_ae") || !strings.Contains(out, "Fix:") {
		t.Fatalf("any-AE: %d %s", code, out)
	}
	// serve's flags apply, as they would for ward serve.
	out, _, code = runCLI(t, "config", "check", "--data", filepath.Join(dir, "empty"), "--dicom-listen", "0.0.0.0:11112")
	if code != 1 || !strings.Contains(out, "to any source") {
		t.Fatalf("--dicom-listen beyond loopback: %d %s", code, out)
	}
	for _, tc := range []struct {
		name, toml, want string
		refused          bool
	}{
		{"plaintext acknowledged", "[dicom]\nlisten = \"0.0.0.0:11112\"\nplaintext_networks = [\"10.20.0.0/16\"]\n", "DIMSE in clear text", false},
		{"plaintext everywhere", "[dicom]\nlisten = \"0.0.0.0:11112\"\nplaintext_networks = [\"0.0.0.0/0\"]\n", "every address", true},
		{"plaintext on the halves", "[dicom]\nlisten = \"0.0.0.0:11112\"\nplaintext_networks = [\"0.0.0.0/1\",\"128.0.0.0/1\",\"::/1\",\"8000::/1\"]\n", "every address", true},
		{"plaintext on a public range", "[dicom]\nlisten = \"0.0.0.0:11112\"\nplaintext_networks = [\"10.20.0.0/16\",\"198.51.100.0/24\"]\n", "public addresses", false},
		{"peer on the halves", "[dicom]\ntls_listen = \"127.0.0.1:2762\"\ntls_cert = \"c\"\ntls_key = \"k\"\n[[peers]]\naet = \"CT\"\nnetworks = [\"0.0.0.0/1\",\"128.0.0.0/1\",\"::/1\",\"8000::/1\"]\nallow = [\"store\"]\n", "from any address", true},
		{"peer on a public 8 bits", "[[peers]]\naet = \"CT\"\nnetworks = [\"11.0.0.0/9\",\"11.128.0.0/9\"]\nallow = [\"store\"]\n", "large part of the internet", true},
		{"plain open without acknowledgement", "[dicom]\nlisten = \"0.0.0.0:11112\"\n", "to any source", true},
		{"web open in clear", "[web]\nlisten = \"0.0.0.0:8080\"\n", "plain HTTP open beyond loopback", true},
		{"web origins", "[web]\nallow_origins = [\"https://viewer.example.org\"]\n", "may call DICOMweb", false},
		{"metrics open in clear", "[metrics]\nlisten = \"0.0.0.0:9464\"\n", "plain HTTP metrics beyond loopback", true},
		{"metrics drain nobody sees", "[web]\nlisten = \"off\"\n[metrics]\ndrain = \"10s\"\n", "nothing answers /readyz", false},
		{"any AE beside an open listener", "[dicom]\nloopback_any_ae = true\ntls_listen = \"0.0.0.0:2762\"\ntls_cert = \"c\"\ntls_key = \"k\"\n", "every service while a listener is not on loopback", true},
		{"peer from anywhere", "[[peers]]\naet = \"CT\"\nnetworks = [\"0.0.0.0/0\"]\nallow = [\"store\"]\n", "from any address", true},
		{"no result cap", "[query]\nmax_results = -1\n", "not capped", false},
		{"audit off", "[audit]\nenabled = false\n", "not recorded", false},
		{"no disk reserve", "[storage]\nmin_free = \"0\"\n", "no free space is kept in reserve", false},
		{"no lockout", "[dicom]\nlockout_after = -1\n", "guessed", false},
		{"passcode in clear", "[[users]]\nname = \"alice\"\nhash = \"hunter2\"\n", "[[users]]", true},
		{"C-MOVE destination in clear", "[[peers]]\naet = \"WS\"\nhost = \"10.1.2.3\"\nport = 104\nallow = [\"move-destination\"]\n", "images in clear text", false},
		{"port without move-destination", "[[peers]]\naet = \"WS\"\nhost = \"10.1.2.3\"\nport = 104\n", "no move-destination permission", false},
		{"move-destination without address", "[[peers]]\naet = \"WS\"\nnetworks = [\"10.1.2.3/32\"]\nallow = [\"move-destination\"]\n", "no host and port", false},
		{"no revocation list", "[dicom]\ntls_listen = \"0.0.0.0:2762\"\ntls_cert = \"c\"\ntls_key = \"k\"\ntls_client_ca = \"ca\"\n", "no certificate revocation list", false},
		{"identity over plain", "[[peers]]\naet = \"CT\"\nhost = \"127.0.0.1\"\nrequire_identity = true\nallow = [\"store\"]\n", "in clear", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write(strings.ReplaceAll(tc.name, " ", "_")+".toml", tc.toml)
			out, _, code := runCLI(t, "config", "check", "--config", path)
			if !strings.Contains(out, tc.want) || !strings.Contains(out, "Fix:") {
				t.Fatalf("output lacks %q:\n%s", tc.want, out)
			}
			if (code != 0) != tc.refused {
				t.Fatalf("exit %d, refused=%v:\n%s", code, tc.refused, out)
			}
			if !tc.refused {
				return
			}
			// ward serve refuses the same settings, and says why, before
			// binding anything.
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			ln.Close()
			_, errs, code := runCLI(t, "serve", "--config", path, "--data", filepath.Join(dir, "data-"+strings.ReplaceAll(tc.name, " ", "_")))
			if code == 0 || !strings.Contains(errs, "not starting") {
				t.Fatalf("serve started: %d %s", code, errs)
			}
			t.Logf("serve: %s", strings.TrimSpace(errs))
		})
	}
}

// TestServeBackendFlags: --index and --blobs name the backends by URL as
// [storage] does (config check applies serve's flags): a password in a
// URL or an unknown scheme is refused without printing the password; a
// PostgreSQL index is noted as cluster mode.
func TestServeBackendFlags(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty")
	out, _, code := runCLI(t, "config", "check", "--data", empty, "--index", "postgres://ward:s3cret-pw@db.example.org/ward")
	if code != 1 || !strings.Contains(out, "PGPASSWORD") || strings.Contains(out, "s3cret-pw") {
		t.Fatalf("password in --index: %d %s", code, out)
	}
	out, _, code = runCLI(t, "config", "check", "--data", empty, "--blobs", "ftp://bucket/x")
	if code != 1 || !strings.Contains(out, `unknown scheme "ftp"`) {
		t.Fatalf("unknown scheme: %d %s", code, out)
	}
	out, _, code = runCLI(t, "config", "check", "--data", empty, "--index", "postgresql://ward@db.example.org/ward", "--blobs", "s3://archive/objects?endpoint=https://s3.example.org&region=eu-1")
	if code != 0 || !strings.Contains(out, "cluster mode") || !strings.Contains(out, "sslmode") {
		t.Fatalf("cluster: %d %s", code, out)
	}
	// A flag replaces the file's backend, DSN included.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ward.toml"), []byte("[storage]\nindex = \"sqlite\"\nindex_dsn = \"/x/index.db\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	load := serveFlags(fs)
	if err := fs.Parse([]string{"--data", dir, "--index", "postgres://ward@127.0.0.1/ward"}); err != nil {
		t.Fatal(err)
	}
	c, err := load()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := c.Storage.IndexBackend(); err != nil || b.Name != "postgres" || b.DSN != "postgres://ward@127.0.0.1/ward" {
		t.Fatalf("--index over the file: %+v %v", b, err)
	}
}
