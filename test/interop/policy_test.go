package interop

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/policy"
	"github.com/ward-pacs/ward/policy/identity"

	"github.com/golang-jwt/jwt/v5"
)

// policySite is a Ward in its secure configuration (no loopback any-AE,
// a TLS listener requiring client certificates of the site's CA) with one
// registered peer per case of the authorization matrix.
type policySite struct {
	w              *ward
	tlsPort        string
	pki, stranger  *sitePKI
	ct, study      string // a stored object and its study
	destDir        string // the C-MOVE destination's folder
	auditThrough   int    // audit records seen so far
	identityPeer   string // requires a user identity ("" until identity lands)
	extraPeerEdits []func(*config.Config)
}

func certFingerprint(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return policy.Fingerprint(c)
}

func startPolicySite(t *testing.T, edits ...func(*config.Config)) *policySite {
	t.Helper()
	requireTool(t, "echoscu", "storescu", "findscu", "movescu", "getscu", "storescp")
	requireDir(t, pydicomTestFiles)
	s := &policySite{pki: makePKI(t, "PINNED"), stranger: makePKI(t, "STRANGER")}
	destPort, destDir := startStorescp(t)
	s.destDir = destDir
	all := config.Services
	fp := certFingerprint(t, s.pki.peerCert)
	s.w = startWard(t, func(c *config.Config) {
		c.DICOM.LoopbackAnyAE = false
		c.DICOM.TLSListen = "127.0.0.1:0"
		c.DICOM.TLSCert, c.DICOM.TLSKey, c.DICOM.TLSClientCA = s.pki.srvCert, s.pki.srvKey, s.pki.ca
		c.Peers = []config.Peer{
			{AETitle: "FULL", Host: "127.0.0.1", Allow: all},
			{AETitle: "PINNED", CertFingerprint: fp, Allow: all},
			{AETitle: "NONE", Host: "127.0.0.1"},
			{AETitle: "ELSEWHERE", Networks: []string{"10.9.0.0/16"}, Allow: all},
			{AETitle: "DEST", Host: "127.0.0.1", Port: destPort, Allow: []string{config.MoveDestination}},
		}
		for _, e := range edits {
			e(c)
		}
	})
	_, s.tlsPort, _ = strings.Cut(s.w.srv.TLSAddr().String(), "127.0.0.1:")
	s.ct = filepath.Join(pydicomTestFiles, "CT_small.dcm")
	s.study = studyOf(t, s.ct)
	if out, err := dcmtk("storescu", "-aet", "FULL", "-aec", "WARD", s.w.host, s.w.port, s.ct).CombinedOutput(); err != nil {
		t.Fatalf("storing the test object: %v\n%s", err, out)
	}
	return s
}

// dimseCall builds the DCMTK command line that uses service as calling
// AE title aet, called AE title aec, on the plain or the TLS port (tls is
// the +tls arguments, nil for plain).
func (s *policySite) dimseCall(t *testing.T, service, aet, aec string, tls []string) []string {
	port := s.w.port
	if tls != nil {
		port = s.tlsPort
	}
	common := append(append([]string{"-to", "10"}, tls...), "-aet", aet, "-aec", aec)
	q := []string{"-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=" + s.study}
	switch service {
	case "echo":
		return append(append([]string{"echoscu"}, common...), "127.0.0.1", port)
	case "store":
		return append(append([]string{"storescu"}, common...), "127.0.0.1", port, s.ct)
	case "find":
		return append(append(append([]string{"findscu", "-S"}, common...), q...), "127.0.0.1", port)
	case "move":
		return append(append(append([]string{"movescu", "-S", "-aem", "DEST"}, common...), q...), "127.0.0.1", port)
	case "get":
		return append(append(append([]string{"getscu", "-S", "-od", t.TempDir()}, common...), q...), "127.0.0.1", port)
	}
	t.Fatalf("no service %s", service)
	return nil
}

// newAudit waits for the audit records written since the last call and
// returns them.
func (s *policySite) newAudit(t *testing.T, want func([]audit.Record) bool) []audit.Record {
	t.Helper()
	from := s.auditThrough
	recs := readAudit(t, s.w.dir, func(r []audit.Record) bool { return len(r) > from && want(r[from:]) })
	s.auditThrough = len(recs)
	return recs[from:]
}

func hasEvent(recs []audit.Record, event string, outcome int, text string) bool {
	for _, r := range recs {
		if r.Event == event && (outcome < 0 || r.Outcome == outcome) && strings.Contains(r.XML, text) {
			return true
		}
	}
	return false
}

// TestAuthorizationMatrix drives every DIMSE service with DCMTK tools
// against every way of being refused, and checks the refusal (reject
// reason or status as DCMTK reports it) and its audit record; then the
// positive path of each service, plain and over TLS with a pinned client
// certificate.
func TestAuthorizationMatrix(t *testing.T) {
	s := startPolicySite(t)
	s.newAudit(t, func(r []audit.Record) bool { return hasEvent(r, "instances-transferred", -1, "") })
	tlsGood := []string{"+tls", s.pki.peerKey, s.pki.peerCert, "+cf", s.pki.ca}
	tlsStranger := []string{"+tls", s.stranger.peerKey, s.stranger.peerCert, "+cf", s.pki.ca}
	type column struct {
		name      string
		aet, aec  string
		tls       []string
		dcmtkSays string // in DCMTK's output
		audit     string // audit event recorded
		alertText string // in the security alert (or authentication failure)
	}
	columns := []column{
		{"unknown calling AE", "NOBODY", "WARD", nil, "Calling AE Title Not Recognized", "security-alert", "NOBODY"},
		{"wrong called AE", "FULL", "NOTWARD", nil, "Called AE Title Not Recognized", "security-alert", "NOTWARD"},
		{"wrong source", "ELSEWHERE", "WARD", nil, "Calling AE Title Not Recognized", "security-alert", "outside the source it is bound to"},
		{"plain where TLS is required", "PINNED", "WARD", nil, "Calling AE Title Not Recognized", "security-alert", "must call over TLS"},
		{"unknown calling AE over TLS", "NOBODY", "WARD", tlsGood, "Calling AE Title Not Recognized", "security-alert", "NOBODY"},
		{"client certificate from another CA", "PINNED", "WARD", tlsStranger, "", "security-alert", "TLS handshake failed"},
		{"missing permission", "NONE", "WARD", nil, "", "security-alert", "for want of a permission"},
	}
	services := []string{"echo", "store", "find", "move", "get"}
	for _, svc := range services {
		for _, col := range columns {
			t.Run(svc+"/"+col.name, func(t *testing.T) {
				var text string
				var err error
				if col.tls != nil && (svc == "move" || svc == "get") {
					// DCMTK 3.6.7's movescu and getscu have no TLS: Ward's
					// own client makes these calls.
					text, err = s.goRetrieve(t, svc, col.aet, col.aec, col.tls)
				} else {
					args := s.dimseCall(t, svc, col.aet, col.aec, col.tls)
					var out []byte
					out, err = dcmtk(args[0], args[1:]...).CombinedOutput()
					text = string(out)
				}
				refused := err != nil || (svc == "find" || svc == "move" || svc == "get") && strings.Contains(text, "No Acceptable Presentation Contexts")
				if !refused || strings.Contains(text, "(Success)") {
					t.Fatalf("%s as %s succeeded: %v\n%s", svc, col.aet, err, text)
				}
				if col.dcmtkSays != "" && !strings.Contains(text, col.dcmtkSays) && !strings.Contains(strings.ToLower(text), strings.ToLower(col.dcmtkSays)) {
					// getscu says only "DUL Association Rejected": the
					// reason is then read from Ward's log.
					if !strings.Contains(text, "Association Rejected") || !strings.Contains(strings.ToLower(s.w.log.String()), strings.ToLower(col.dcmtkSays)) {
						t.Fatalf("refusal lacks %q:\n%s", col.dcmtkSays, text)
					}
				}
				recs := s.newAudit(t, func(r []audit.Record) bool { return hasEvent(r, col.audit, -1, col.alertText) })
				if col.name != "missing permission" && col.name != "client certificate from another CA" && !hasEvent(recs, "authentication", audit.OutcomeMinorFailure, "") {
					t.Errorf("no failed authentication record")
				}
				t.Logf("refused: %s", lastLines([]byte(text), 1))
			})
		}
	}
	// The positive path of every service, plain and over TLS.
	for _, svc := range services {
		for _, mode := range []struct {
			name, aet string
			tls       []string
		}{{"plain", "FULL", nil}, {"TLS with the pinned certificate", "PINNED", tlsGood}} {
			t.Run(svc+"/allowed/"+mode.name, func(t *testing.T) {
				if mode.tls != nil && (svc == "move" || svc == "get") {
					if text, err := s.goRetrieve(t, svc, mode.aet, "WARD", mode.tls); err != nil {
						t.Fatalf("%s as %s over TLS: %v %s", svc, mode.aet, err, text)
					}
					s.newAudit(t, func(r []audit.Record) bool { return hasEvent(r, "authentication", audit.OutcomeSuccess, mode.aet) })
					return
				}
				args := s.dimseCall(t, svc, mode.aet, "WARD", mode.tls)
				out, err := dcmtk(args[0], append([]string{"-v"}, args[1:]...)...).CombinedOutput()
				if err != nil || !strings.Contains(string(out), "(Success)") && !strings.Contains(string(out), "Final Find Response") {
					t.Fatalf("%s as %s: %v\n%s", svc, mode.aet, err, out)
				}
				if svc == "find" && !strings.Contains(string(out), s.study) {
					t.Fatalf("C-FIND did not return the study:\n%s", out)
				}
				s.newAudit(t, func(r []audit.Record) bool {
					return hasEvent(r, "authentication", audit.OutcomeSuccess, mode.aet)
				})
			})
		}
	}
	if files, _ := filepath.Glob(filepath.Join(s.destDir, "*")); len(files) == 0 {
		t.Error("C-MOVE delivered nothing to the registered destination")
	}
}

// goRetrieve runs a C-MOVE (to DEST) or C-GET of the test study over TLS
// with Ward's client, tls being the DCMTK-style +tls KEY CERT +cf CA
// arguments. It returns a description of the outcome and an error when
// the association or the retrieve failed.
func (s *policySite) goRetrieve(t *testing.T, svc, aet, aec string, tlsArgs []string) (string, error) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(tlsArgs[2], tlsArgs[1])
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", net.JoinHostPort("127.0.0.1", s.tlsPort),
		&tls.Config{RootCAs: s.pki.roots(t), ServerName: "localhost", Certificates: []tls.Certificate{pair}})
	if err != nil {
		return "", fmt.Errorf("TLS: %w", err)
	}
	abstract := dimse.StudyRootMove
	if svc == "get" {
		abstract = dimse.StudyRootGet
	}
	ts := []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}
	ctSOP := "1.2.840.10008.5.1.4.1.1.2"
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, ApplicationContext: pdu.ApplicationContextName, CallingAETitle: aet, CalledAETitle: aec,
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: abstract, TransferSyntaxes: ts}, {ID: 3, AbstractSyntax: ctSOP, TransferSyntaxes: ts}}}
	rq.UserInfo.Roles = []pdu.RoleSelection{{SOPClassUID: ctSOP, SCP: true}}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	a, err := assoc.Request(ctx, conn, assoc.Config{AETitle: aet}, rq)
	if err != nil {
		return err.Error(), err
	}
	defer a.Release()
	cl := dimse.NewClient(a)
	pc, ok := cl.FindContext(abstract, "")
	if !ok {
		return "No Acceptable Presentation Contexts", errors.New("no acceptable presentation context")
	}
	id := &dicom.DataSet{}
	id.Set(dicom.QueryRetrieveLevel, "STUDY")
	id.Set(dicom.StudyInstanceUID, s.study)
	var res *dimse.RetrieveResult
	if svc == "move" {
		res, err = cl.Move(ctx, pc.ID, "DEST", id, nil)
	} else {
		res, err = cl.Get(ctx, pc.ID, id, discardStorer{}, nil)
	}
	if err != nil {
		return err.Error(), err
	}
	if res.Failed() {
		return fmt.Sprintf("%+v", res), fmt.Errorf("retrieve failed: %+v", res)
	}
	return "(Success)", nil
}

type discardStorer struct{}

func (discardStorer) Store(_ context.Context, r *dimse.StoreRequest) error {
	_, err := io.Copy(io.Discard, r.Data)
	return err
}

// TestUniversalQueryNeedsBulkQuery: a STUDY-level C-FIND without any
// matching key is refused (0124, not authorized) for a peer without
// bulk-query, and answered for one with it; a peer's max_results caps its
// matches.
func TestUniversalQueryNeedsBulkQuery(t *testing.T) {
	s := startPolicySite(t, func(c *config.Config) {
		c.Peers = append(c.Peers,
			config.Peer{AETitle: "NOBULK", Host: "127.0.0.1", Allow: []string{"find"}},
			config.Peer{AETitle: "CAPPED", Host: "127.0.0.1", Allow: []string{"find", "bulk-query"}, MaxResults: 1})
	})
	// One more study, so that a cap of 1 cuts.
	if out, err := dcmtk("storescu", "-aet", "FULL", "-aec", "WARD", s.w.host, s.w.port, filepath.Join(pydicomTestFiles, "MR_small.dcm")).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	find := func(aet string, keys ...string) string {
		args := []string{"-S", "-v", "-aet", aet, "-aec", "WARD", "-k", "QueryRetrieveLevel=STUDY"}
		for _, k := range keys {
			args = append(args, "-k", k)
		}
		out, _ := dcmtk("findscu", append(args, s.w.host, s.w.port)...).CombinedOutput()
		return string(out)
	}
	if out := find("NOBULK", "StudyInstanceUID", "PatientName=*"); !strings.Contains(out, "Refused: Not Authorized") && !strings.Contains(out, "0x124") {
		t.Fatalf("universal query without bulk-query:\n%s", out)
	}
	if out := find("NOBULK", "StudyInstanceUID="+s.study); !strings.Contains(out, s.study) || !strings.Contains(out, "Final Find Response (Success)") {
		t.Fatalf("keyed query without bulk-query:\n%s", out)
	}
	out := find("FULL", "StudyInstanceUID")
	if n := strings.Count(out, "Find Response: "+strconv.Itoa(1)) + strings.Count(out, "Pending"); n == 0 {
		t.Fatalf("universal query with bulk-query:\n%s", out)
	}
	if out := find("CAPPED", "StudyInstanceUID"); !strings.Contains(out, "OutOfResources") {
		t.Fatalf("max_results 1 with two studies:\n%s", out)
	}
	s.newAudit(t, func(r []audit.Record) bool {
		return hasEvent(r, "query", audit.OutcomeMinorFailure, "bulk-query") && hasEvent(r, "security-alert", -1, "query refused") &&
			hasEvent(r, "query", audit.OutcomeSuccess, "NOBULK")
	})
}

// TestLockout: a source whose associations keep being refused is locked
// out with a growing back-off; the lockout is audited; a registered peer
// from that source is refused while it lasts.
func TestLockout(t *testing.T) {
	requireTool(t, "echoscu")
	w := startWard(t, func(c *config.Config) {
		c.DICOM.LoopbackAnyAE = false
		c.DICOM.LockoutAfter = 3
		c.DICOM.LockoutBase.Duration = 60e9
		c.DICOM.LockoutMax.Duration = 600e9
		c.Peers = []config.Peer{{AETitle: "FULL", Host: "127.0.0.1", Allow: []string{"echo"}}}
	})
	echo := func(aet string) (string, error) {
		out, err := dcmtk("echoscu", "-to", "5", "-aet", aet, "-aec", "WARD", w.host, w.port).CombinedOutput()
		return string(out), err
	}
	if out, err := echo("FULL"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for i := range 3 {
		if out, err := echo(fmt.Sprintf("GUESS%d", i)); err == nil || !strings.Contains(out, "Calling AE Title Not Recognized") {
			t.Fatalf("guess %d: %v\n%s", i, err, out)
		}
	}
	out, err := echo("FULL")
	if err == nil || !strings.Contains(out, "Local Limit Exceeded") {
		t.Fatalf("a locked-out source got through: %v\n%s", err, out)
	}
	readAudit(t, w.dir, func(r []audit.Record) bool { return hasEvent(r, "security-alert", -1, "locked out") })
}

// identitySite adds to the policy site a peer that must present a user
// identity, a user with a passcode and a JWT issuer whose key set is a
// file; it returns tokens: good, expired, and signed by a key not in the
// set.
func identitySite(t *testing.T) (s *policySite, passcode string, good, expired, badSig string) {
	t.Helper()
	passcode = "correct horse battery staple"
	hash, err := identity.HashPasscode(passcode)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	pub, _ := key.PublicKey.ECDH()
	raw := pub.Bytes() // 0x04 || X || Y
	b64 := base64.RawURLEncoding.EncodeToString
	doc := fmt.Sprintf(`{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","use":"sig","x":%q,"y":%q}]}`, b64(raw[1:33]), b64(raw[33:]))
	if err := os.WriteFile(jwks, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	sign := func(k *ecdsa.PrivateKey, exp time.Time) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": "https://idp.test", "aud": "ward", "sub": "reader1",
			"iat": time.Now().Add(-time.Hour).Unix(), "exp": exp.Unix()})
		tok.Header["kid"] = "k1"
		str, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return str
	}
	good, expired, badSig = sign(key, time.Now().Add(time.Hour)), sign(key, time.Now().Add(-10*time.Minute)), sign(stranger, time.Now().Add(time.Hour))
	s = startPolicySite(t, func(c *config.Config) {
		c.Users = []config.User{{Name: "alice", Hash: hash}}
		c.Identity.JWKS, c.Identity.JWTIssuer, c.Identity.JWTAudience = jwks, "https://idp.test", "ward"
		c.Peers = append(c.Peers, config.Peer{AETitle: "IDUSER", Host: "127.0.0.1", Allow: config.Services, RequireIdentity: true})
	})
	return s, passcode, good, expired, badSig
}

// goAssociate opens an association for service as IDUSER with the given
// user identity (Ward's own client: DCMTK 3.6.7 sends identities from
// storescu only) and runs the service's simplest request.
func (s *policySite) goAssociate(t *testing.T, service string, id *pdu.UserIdentity) error {
	t.Helper()
	abstract := map[string]string{"echo": dimse.VerificationSOPClass, "store": "1.2.840.10008.5.1.4.1.1.2",
		"find": dimse.StudyRootFind, "move": dimse.StudyRootMove, "get": dimse.StudyRootGet}[service]
	ts := []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, ApplicationContext: pdu.ApplicationContextName, CallingAETitle: "IDUSER", CalledAETitle: "WARD",
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: abstract, TransferSyntaxes: ts}}}
	rq.UserInfo.UserIdentity = id
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	a, err := assoc.Dial(ctx, "tcp", s.w.addr, assoc.Config{AETitle: "IDUSER"}, rq)
	if err != nil {
		return err
	}
	defer a.Release()
	if id != nil && id.PositiveResponse && !a.Accept().UserInfo.HasIdentityResponse {
		return errors.New("no positive identity response")
	}
	cl := dimse.NewClient(a)
	if service == "echo" {
		return cl.Echo(ctx)
	}
	if _, ok := cl.FindContext(abstract, ""); !ok {
		return errors.New("context refused")
	}
	return nil
}

// TestIdentityMatrix: a peer that requires a user identity, driven by
// storescu (--user/--password, --jwt) and, for the services whose DCMTK
// 3.6.7 tools send no identity, by Ward's client: no identity, a wrong
// passcode, an unknown user, an expired JWT and a JWT signed by another key
// are each refused (A-ASSOCIATE-RJ, audited); a right passcode and a good
// JWT get in, with the positive response asked for.
func TestIdentityMatrix(t *testing.T) {
	s, passcode, good, expired, badSig := identitySite(t)
	tokenFile := func(tok string) string {
		f := filepath.Join(t.TempDir(), "token.jwt")
		os.WriteFile(f, []byte(tok+"\n"), 0o600)
		return f
	}
	store := func(extra ...string) (string, error) {
		args := append([]string{"-to", "10", "-aet", "IDUSER", "-aec", "WARD"}, extra...)
		out, err := dcmtk("storescu", append(args, "127.0.0.1", s.w.port, s.ct)...).CombinedOutput()
		return string(out), err
	}
	for _, tc := range []struct {
		name string
		args []string
		id   *pdu.UserIdentity
		text string // in the audit record
	}{
		{"no identity", nil, nil, "must present a user identity"},
		{"wrong passcode", []string{"--user", "alice", "--password", "wrong"}, &pdu.UserIdentity{Type: 2, Primary: []byte("alice"), Secondary: []byte("wrong")}, "user identity refused"},
		{"unknown user", []string{"--user", "mallory", "--password", passcode}, &pdu.UserIdentity{Type: 2, Primary: []byte("mallory"), Secondary: []byte(passcode)}, "user identity refused"},
		{"username only", []string{"--user", "alice"}, &pdu.UserIdentity{Type: 1, Primary: []byte("alice")}, "user identity refused"},
		{"expired JWT", []string{"--jwt", tokenFile(expired)}, &pdu.UserIdentity{Type: 5, Primary: []byte(expired)}, "user identity refused"},
		{"JWT signed by another key", []string{"--jwt", tokenFile(badSig)}, &pdu.UserIdentity{Type: 5, Primary: []byte(badSig)}, "user identity refused"},
	} {
		t.Run("store/"+tc.name, func(t *testing.T) {
			out, err := store(tc.args...)
			if err == nil || strings.Contains(out, "(Success)") || !strings.Contains(out, "Association Rejected") {
				t.Fatalf("storescu: %v\n%s", err, out)
			}
			s.newAudit(t, func(r []audit.Record) bool { return hasEvent(r, "security-alert", -1, tc.text) })
		})
		for _, svc := range []string{"echo", "find", "move", "get"} {
			t.Run(svc+"/"+tc.name, func(t *testing.T) {
				err := s.goAssociate(t, svc, tc.id)
				var rj *assoc.RejectError
				if !errors.As(err, &rj) || rj.RJ.Result != pdu.RejectPermanent || rj.RJ.Source != pdu.RejectSourceUser {
					t.Fatalf("want a permanent rejection by the service user, got %v", err)
				}
				s.newAudit(t, func(r []audit.Record) bool { return hasEvent(r, "security-alert", -1, tc.text) })
			})
		}
	}
	// The positive path: passcode and JWT, positive response requested.
	for _, tc := range []struct {
		name string
		args []string
		id   *pdu.UserIdentity
		user string
	}{
		{"passcode", []string{"--user", "alice", "--password", passcode, "--pos-response"}, &pdu.UserIdentity{Type: 2, Primary: []byte("alice"), Secondary: []byte(passcode), PositiveResponse: true}, "alice"},
		{"JWT", []string{"--jwt", tokenFile(good), "--pos-response"}, &pdu.UserIdentity{Type: 5, Primary: []byte(good), PositiveResponse: true}, "reader1"},
	} {
		t.Run("store/allowed/"+tc.name, func(t *testing.T) {
			if out, err := store(append([]string{"-v"}, tc.args...)...); err != nil || !strings.Contains(out, "(Success)") {
				t.Fatalf("storescu: %v\n%s", err, out)
			}
			s.newAudit(t, func(r []audit.Record) bool { return hasEvent(r, "authentication", audit.OutcomeSuccess, tc.user) })
		})
		for _, svc := range []string{"echo", "find", "move", "get"} {
			t.Run(svc+"/allowed/"+tc.name, func(t *testing.T) {
				if err := s.goAssociate(t, svc, tc.id); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	// Ward's own client sends identities too (--user with $WARD_PASSCODE,
	// --jwt FILE) and insists on the positive response.
	t.Run("ward client", func(t *testing.T) {
		call := func(args ...string) int {
			_, code := wardCLI(t, append(append([]string{"echo", "--aet", "IDUSER", "--aec", "WARD"}, args...), s.w.addr)...)
			return code
		}
		t.Setenv("WARD_PASSCODE", passcode)
		if call("--user", "alice") != 0 {
			t.Error("ward echo --user alice with the right passcode refused")
		}
		if call("--jwt", tokenFile(good)) != 0 {
			t.Error("ward echo --jwt with a good token refused")
		}
		if call("--jwt", tokenFile(expired)) == 0 {
			t.Error("ward echo --jwt with an expired token accepted")
		}
		t.Setenv("WARD_PASSCODE", "wrong")
		if call("--user", "alice") == 0 {
			t.Error("ward echo --user alice with a wrong passcode accepted")
		}
		if out, code := wardCLI(t, "find", "--aet", "IDUSER", "--aec", "WARD", "--user", "alice", "--level", "STUDY", "-k", "StudyInstanceUID", s.w.addr); code == 0 {
			t.Errorf("ward find with a wrong passcode: %s", out)
		}
	})
}

// TestPerPeerAssociationLimit: a peer at its max_associations gets
// rejected-transient (local limit exceeded) from DCMTK until one of its
// associations ends; other peers are not affected.
func TestPerPeerAssociationLimit(t *testing.T) {
	requireTool(t, "echoscu")
	w := startWard(t, func(c *config.Config) {
		c.DICOM.LoopbackAnyAE = false
		c.Peers = []config.Peer{
			{AETitle: "ONE", Host: "127.0.0.1", Allow: []string{"echo"}, MaxAssociations: 1},
			{AETitle: "OTHER", Host: "127.0.0.1", Allow: []string{"echo"}},
		}
	})
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, ApplicationContext: pdu.ApplicationContextName, CallingAETitle: "ONE", CalledAETitle: "WARD",
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian.UID}}}}
	held, err := assoc.Dial(t.Context(), "tcp", w.addr, assoc.Config{AETitle: "ONE"}, rq)
	if err != nil {
		t.Fatal(err)
	}
	echo := func(aet string) (string, error) {
		out, err := dcmtk("echoscu", "-to", "5", "-aet", aet, "-aec", "WARD", w.host, w.port).CombinedOutput()
		return string(out), err
	}
	if out, err := echo("ONE"); err == nil || !strings.Contains(out, "Local Limit Exceeded") {
		t.Fatalf("second association of ONE: %v\n%s", err, out)
	}
	if out, err := echo("OTHER"); err != nil {
		t.Fatalf("OTHER: %v\n%s", err, out)
	}
	held.Release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := echo("ONE")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ONE still refused after its association ended: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWardClientTLS: Ward's own SCU commands over TLS with a client
// certificate (--tls, --tls-ca, --tls-cert, --tls-key) against Ward's TLS
// listener, as the pinned peer: echo, store, find, get and move work; the
// same without the client certificate is refused.
func TestWardClientTLS(t *testing.T) {
	s := startPolicySite(t)
	addr := "127.0.0.1:" + s.tlsPort
	tlsArgs := []string{"--tls", "--tls-ca", s.pki.ca, "--tls-cert", s.pki.peerCert, "--tls-key", s.pki.peerKey, "--aet", "PINNED", "--aec", "WARD"}
	run := func(args ...string) (string, int) {
		return wardCLI(t, append(args, append(tlsArgs, addr)...)...)
	}
	if out, code := run("echo"); code != 0 {
		t.Fatalf("ward echo --tls: %s", out)
	}
	if out, code := wardCLI(t, append(append([]string{"store", "--quiet"}, tlsArgs...), addr, filepath.Join(pydicomTestFiles, "MR_small.dcm"))...); code != 0 {
		t.Fatalf("ward store --tls: %s", out)
	}
	if out, code := run("find", "--level", "STUDY", "-k", "StudyInstanceUID="+s.study); code != 0 || !strings.Contains(out, s.study) {
		t.Fatalf("ward find --tls: %d %s", code, out)
	}
	dir := t.TempDir()
	if out, code := run("get", "--out", dir, "--level", "STUDY", "-k", "StudyInstanceUID="+s.study); code != 0 {
		t.Fatalf("ward get --tls: %s", out)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*")); len(files) == 0 {
		t.Fatal("ward get --tls retrieved nothing")
	}
	if out, code := run("move", "--dest", "DEST", "--level", "STUDY", "-k", "StudyInstanceUID="+s.study); code != 0 {
		t.Fatalf("ward move --tls: %s", out)
	}
	// Without the client certificate the TLS listener refuses.
	if out, code := wardCLI(t, "echo", "--tls", "--tls-ca", s.pki.ca, "--aet", "PINNED", "--aec", "WARD", addr); code == 0 {
		t.Fatalf("ward echo --tls without a client certificate succeeded: %s", out)
	}
}
