package archive

import (
	"context"
	"errors"
	"testing"
)

// TestRetrieveProfile: the profile a retrieve leaves under is that of
// whoever requests or receives it; a C-MOVE whose requester and
// destination have different profiles is refused (ErrProcessing, with
// ErrDeidentifyConflict as its cause), and one to a destination the
// registry no longer has is an unknown destination. A user's profile
// (DIMSE user identity) counts as its peer's.
func TestRetrieveProfile(t *testing.T) {
	dests := map[string]string{"PLAIN": "", "RESEARCH": "basic,modified-dates", "OTHER": "basic"}
	ar := &Archive{DestinationDeidentify: func(aet string) (string, error) {
		p, ok := dests[aet]
		if !ok {
			return "", Failf(ErrUnknownDestination, "%q is not a registered peer", aet)
		}
		return p, nil
	}}
	for _, tc := range []struct {
		requester, dest, want string
		err                   error
	}{
		{"", "", "", nil},                                                 // C-GET, no profile
		{"basic", "", "basic", nil},                                       // C-GET: the requester's
		{"", "PLAIN", "", nil},                                            // neither
		{"basic", "PLAIN", "basic", nil},                                  // the requester's
		{"", "RESEARCH", "basic,modified-dates", nil},                     // the destination's
		{"basic,modified-dates", "RESEARCH", "basic,modified-dates", nil}, // the same
		{"basic, modified-dates", "RESEARCH", "basic,modified-dates", nil},
		{"basic,modified-dates", "OTHER", "", ErrDeidentifyConflict}, // different
		{"basic", "RESEARCH", "", ErrDeidentifyConflict},
		{"", "GONE", "", ErrUnknownDestination},
	} {
		ctx := WithPrincipal(context.Background(), &Principal{Kind: Peer, Name: "REQ", Deidentify: tc.requester})
		got, err := ar.retrieveProfile(ctx, &RetrieveRequest{Destination: tc.dest})
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("requester %q, destination %q: %q, %v; want %q, %v", tc.requester, tc.dest, got, err, tc.want, tc.err)
		}
		if errors.Is(tc.err, ErrDeidentifyConflict) && KindOf(err) != ErrProcessing {
			t.Errorf("a conflict is %v, not ErrProcessing", KindOf(err))
		}
	}
	// A peer's association with a user identity: the user's profile
	// joins the peer's under the same rule.
	for _, tc := range []struct {
		peer, user, dest, want string
		err                    error
	}{
		{"", "basic", "", "basic", nil},
		{"basic", "basic", "", "basic", nil},
		{"basic,modified-dates", "basic", "", "", ErrDeidentifyConflict},
		{"", "basic", "PLAIN", "basic", nil},
		{"", "basic", "OTHER", "basic", nil},
		{"", "basic", "RESEARCH", "", ErrDeidentifyConflict},
	} {
		ctx := WithPrincipal(context.Background(), &Principal{Kind: Peer, Name: "REQ", User: "u", Deidentify: tc.peer, UserDeidentify: tc.user})
		got, err := ar.retrieveProfile(ctx, &RetrieveRequest{Destination: tc.dest})
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("peer %q, user %q, destination %q: %q, %v; want %q, %v", tc.peer, tc.user, tc.dest, got, err, tc.want, tc.err)
		}
	}
	if err := (&Archive{}).Query(WithPrincipal(context.Background(), &Principal{Kind: Peer, UserDeidentify: "basic"}), &Query{}, nil); KindOf(err) != ErrNotAuthorized {
		t.Errorf("a query for a user with a profile: %v", err)
	}
	// Without a principal (an internal retrieve): the destination's.
	if got, err := ar.retrieveProfile(context.Background(), &RetrieveRequest{Destination: "RESEARCH"}); got != "basic,modified-dates" || err != nil {
		t.Errorf("no principal: %q %v", got, err)
	}
}
