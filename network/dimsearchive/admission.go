package dimsearchive

import (
	"strings"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/policy"
)

// The DIMSE side of admission: what policy decides on, read from the
// A-ASSOCIATE-RQ, and its refusals answered with A-ASSOCIATE-RJ.

// PermissionOf is the permission a presentation context for abstract
// needs, "" when Ward provides no service for it. Storage SOP classes
// (and the private ones private accepts) need store (the requestor sends)
// — or, with the requestor in the SCP role, get (what C-GET retrieves
// into; policy.Grant.AllowsContext).
func PermissionOf(abstract string, private func(string) bool) policy.Permission {
	switch qr := dimse.QRCommand(abstract); {
	case abstract == dimse.VerificationSOPClass:
		return policy.Echo
	case qr == dimse.CFindRQ:
		return policy.Find
	case qr == dimse.CMoveRQ:
		return policy.Move
	case qr == dimse.CGetRQ:
		return policy.Get
	case dicom.IsStorageSOPClass(abstract) || (private != nil && private(abstract)):
		return policy.Store
	}
	return ""
}

// RequestOf is what policy admits or refuses of rq: its calling AE title
// and its user identity sub-item as a credential.
func RequestOf(rq *pdu.AssociateRQ) policy.Request {
	return policy.Request{
		CallingAETitle: strings.TrimSpace(rq.CallingAETitle),
		Credential:     CredentialOf(rq.UserInfo.UserIdentity),
	}
}

// CredentialOf is the credential a user identity sub-item (PS3.7 D.3.3.7)
// carries, nil for none. policy's credential types take the sub-item's
// User-Identity-Type values unchanged, an unknown one included (refused
// by the verifier, which names it).
func CredentialOf(id *pdu.UserIdentity) *policy.Credential {
	if id == nil {
		return nil
	}
	return &policy.Credential{
		Type:             policy.CredentialType(id.Type),
		Primary:          id.Primary,
		Secondary:        id.Secondary,
		PositiveResponse: id.PositiveResponse,
	}
}

// Reject is the A-ASSOCIATE-RJ that answers a policy refusal (PS3.8
// 9.3.4, Table 9-21).
func Reject(r *policy.Refusal) *pdu.AssociateRJ {
	switch r.Kind {
	case policy.RefusedCaller:
		return &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceUser, Reason: pdu.RejectCallingAENotRecognized}
	case policy.RefusedBusy:
		return &pdu.AssociateRJ{Result: pdu.RejectTransient, Source: pdu.RejectSourcePresentation, Reason: pdu.RejectLocalLimitExceeded}
	case policy.RefusedInvalid:
		return &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceACSE, Reason: pdu.RejectACSENoReason}
	}
	return &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceUser, Reason: pdu.RejectNoReason}
}
