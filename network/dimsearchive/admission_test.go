package dimsearchive

import (
	"bytes"
	"testing"

	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/policy"
)

// TestReject: each policy refusal is answered with the A-ASSOCIATE-RJ
// Ward always gave it (PS3.8 Table 9-21: result 1 permanent, 2 transient;
// source 1 service user, 2 ACSE, 3 presentation; reasons numbered by
// source), transcribed here from the table.
func TestReject(t *testing.T) {
	for _, tc := range []struct {
		kind                   policy.RefusalKind
		result, source, reason byte
	}{
		{policy.RefusedNoReason, 1, 1, 1},
		{policy.RefusedCaller, 1, 1, 3},
		{policy.RefusedBusy, 2, 3, 2},
		{policy.RefusedInvalid, 1, 2, 1},
	} {
		rj := Reject(&policy.Refusal{Kind: tc.kind})
		if rj.Result != tc.result || rj.Source != tc.source || rj.Reason != tc.reason {
			t.Errorf("kind %d: %+v, want result %d source %d reason %d", tc.kind, rj, tc.result, tc.source, tc.reason)
		}
		if (rj.Result == pdu.RejectTransient) != (&policy.Refusal{Kind: tc.kind}).Transient() {
			t.Errorf("kind %d: transient disagrees with the RJ", tc.kind)
		}
	}
}

// TestRequestOf: the calling AE title (spaces trimmed) and the user
// identity sub-item reach policy unchanged, the type by its PS3.7 value.
func TestRequestOf(t *testing.T) {
	rq := &pdu.AssociateRQ{CallingAETitle: "  CT  ", CalledAETitle: "WARD"}
	if r := RequestOf(rq); r.CallingAETitle != "CT" || r.Credential != nil {
		t.Errorf("no identity: %+v", r)
	}
	for typ, want := range map[byte]policy.CredentialType{
		pdu.IdentityUsername: policy.Username, pdu.IdentityUsernamePasscode: policy.UsernamePasscode,
		pdu.IdentityKerberos: policy.Kerberos, pdu.IdentitySAML: policy.SAML, pdu.IdentityJWT: policy.JWT, 9: 9,
	} {
		rq.UserInfo.UserIdentity = &pdu.UserIdentity{Type: typ, PositiveResponse: true, Primary: []byte("alice"), Secondary: []byte("pw")}
		c := RequestOf(rq).Credential
		if c == nil || c.Type != want || !c.PositiveResponse || !bytes.Equal(c.Primary, []byte("alice")) || !bytes.Equal(c.Secondary, []byte("pw")) {
			t.Errorf("type %d: %+v", typ, c)
		}
	}
}

// TestPermissionOf: the permission each abstract syntax needs.
func TestPermissionOf(t *testing.T) {
	const ct = "1.2.840.10008.5.1.4.1.1.2"
	const private = "1.2.3.4.5"
	for _, tc := range []struct {
		abstract string
		want     policy.Permission
	}{
		{dimse.VerificationSOPClass, policy.Echo},
		{"1.2.840.10008.5.1.4.1.2.1.1", policy.Find}, // Patient Root FIND
		{"1.2.840.10008.5.1.4.1.2.2.2", policy.Move}, // Study Root MOVE
		{"1.2.840.10008.5.1.4.1.2.2.3", policy.Get},  // Study Root GET
		{ct, policy.Store},
		{private, policy.Store},
		{"1.2.3.4.6", ""},
	} {
		if got := PermissionOf(tc.abstract, func(uid string) bool { return uid == private }); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.abstract, got, tc.want)
		}
	}
}
