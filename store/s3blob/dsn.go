package s3blob

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// config is what a data source name says, with the credentials found.
type config struct {
	bucket, prefix string
	endpoint       string // "" for AWS's own endpoints
	region         string
	access, secret string
	token          string
	credsFrom      string // where the credentials came from, for messages
}

// parseDSN reads s3://BUCKET/PREFIX?endpoint=URL&region=R[&credentials_file=F][&profile=P]
// and finds the credentials (see the package comment).
func parseDSN(dsn string) (*config, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		// url.Parse's error repeats the URL; say less.
		return nil, errors.New("s3blob: the data source name is not a URL (s3://BUCKET/PREFIX?endpoint=…&region=…)")
	}
	if u.User != nil {
		return nil, errors.New("s3blob: credentials do not go in the URL: give them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a credentials file")
	}
	if u.Scheme != "s3" || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("s3blob: want s3://BUCKET/PREFIX?endpoint=…&region=…, got %q", redact(u))
	}
	c := &config{bucket: u.Host, prefix: strings.Trim(u.Path, "/")}
	if c.prefix != "" {
		for _, seg := range strings.Split(c.prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return nil, fmt.Errorf("s3blob: prefix %q: empty, . or .. segment", c.prefix)
			}
		}
		c.prefix += "/"
	}
	q := u.Query()
	credFile, profile := "", ""
	for k, v := range q {
		if len(v) != 1 {
			return nil, fmt.Errorf("s3blob: parameter %s given %d times", k, len(v))
		}
		switch k {
		case "endpoint":
			c.endpoint = v[0]
		case "region":
			c.region = v[0]
		case "credentials_file":
			credFile = v[0]
		case "profile":
			profile = v[0]
		default:
			return nil, fmt.Errorf("s3blob: unknown parameter %q (known: endpoint, region, credentials_file, profile)", k)
		}
	}
	if c.endpoint != "" {
		e, err := url.Parse(c.endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
			return nil, fmt.Errorf("s3blob: endpoint %q is not an http(s) URL", c.endpoint)
		}
		if e.User != nil {
			return nil, errors.New("s3blob: credentials do not go in the endpoint URL")
		}
		c.endpoint = strings.TrimSuffix(e.String(), "/")
	}
	if c.region == "" {
		c.region = os.Getenv("AWS_REGION")
	}
	if c.region == "" {
		c.region = os.Getenv("AWS_DEFAULT_REGION")
	}
	if c.region == "" {
		c.region = "us-east-1"
	}
	if err := c.findCredentials(credFile, profile); err != nil {
		return nil, err
	}
	return c, nil
}

// redact is the URL without its query (which names files) for messages.
func redact(u *url.URL) string {
	v := *u
	v.RawQuery, v.User = "", nil
	return v.String()
}

// findCredentials takes the access key from the environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), else from
// a shared credentials file: file, else AWS_SHARED_CREDENTIALS_FILE, else
// ~/.aws/credentials when it exists. A credentials file that others than
// its owner may read is refused.
func (c *config) findCredentials(file, profile string) error {
	if file == "" {
		if id, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"); id != "" || secret != "" {
			if id == "" || secret == "" {
				return errors.New("s3blob: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together: one is set, the other empty")
			}
			c.access, c.secret, c.token, c.credsFrom = id, secret, os.Getenv("AWS_SESSION_TOKEN"), "the environment"
			return nil
		}
		file = os.Getenv("AWS_SHARED_CREDENTIALS_FILE")
		if file == "" {
			if home, err := os.UserHomeDir(); err == nil {
				p := filepath.Join(home, ".aws", "credentials")
				if _, err := os.Stat(p); err == nil {
					file = p
				}
			}
		}
	}
	if file == "" {
		return errors.New("s3blob: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a credentials file (AWS_SHARED_CREDENTIALS_FILE or ?credentials_file=)")
	}
	if profile == "" {
		profile = os.Getenv("AWS_PROFILE")
	}
	if profile == "" {
		profile = "default"
	}
	return c.readCredentialsFile(file, profile)
}

func (c *config) readCredentialsFile(file, profile string) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("s3blob: credentials file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("s3blob: credentials file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("s3blob: credentials file %s is not a regular file", file)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("s3blob: credentials file %s may be read by others (mode %04o): make it 0600", file, fi.Mode().Perm())
	}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' && line[len(line)-1] == ']' {
			section = strings.TrimSpace(line[1 : len(line)-1])
			section = strings.TrimSpace(strings.TrimPrefix(section, "profile "))
			continue
		}
		if section != profile {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "aws_access_key_id":
			c.access = strings.TrimSpace(v)
		case "aws_secret_access_key":
			c.secret = strings.TrimSpace(v)
		case "aws_session_token":
			c.token = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("s3blob: credentials file %s: %w", file, err)
	}
	if c.access == "" || c.secret == "" {
		return fmt.Errorf("s3blob: credentials file %s has no aws_access_key_id and aws_secret_access_key in profile %q", file, profile)
	}
	c.credsFrom = "credentials file " + file
	return nil
}

// signPayload says whether request bodies are signed with their SHA-256
// (SigV4): over plain HTTP to a host other than loopback. Over HTTPS
// (TLS protects the body) and on loopback the body is sent unsigned,
// its integrity checked by the server against the CRC-32C sent with it,
// which costs far less CPU on both sides.
func (c *config) signPayload() bool {
	if c.endpoint == "" {
		return false // AWS: https
	}
	e, _ := url.Parse(c.endpoint)
	if e.Scheme == "https" {
		return false
	}
	host := e.Hostname()
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}
