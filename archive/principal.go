package archive

import "context"

// The permissions a principal may hold: the names policy grants them by.
const (
	PermEcho      = "echo"
	PermStore     = "store"
	PermFind      = "find"
	PermMove      = "move"
	PermGet       = "get"
	PermBulkQuery = "bulk-query"
)

// PrincipalKind says who a principal is.
type PrincipalKind int

// The kinds.
const (
	// Peer: a registered DICOM peer (or, with the loopback any-AE opt-in,
	// an unregistered one on loopback), named by its AE title.
	Peer PrincipalKind = iota + 1
	// User: a signed-in user, named by the account.
	User
)

// Grant is what policy allows a principal; *policy.Grant implements it.
type Grant interface {
	Allows(permission string) bool
}

// Permissions is a Grant listing its permissions (for front ends and
// tests that decide without policy's grants).
type Permissions map[string]bool

// Allows implements Grant.
func (p Permissions) Allows(perm string) bool { return p[perm] }

// Principal is who a request acts for. It travels in the context
// (WithPrincipal); a request without one may do nothing that needs a
// permission.
type Principal struct {
	Kind PrincipalKind
	// Name is the peer's AE title or the user's account name.
	Name string
	// User is the verified user identity a peer's association carried
	// ("" without one).
	User string
	// Roles are a signed-in user's roles.
	Roles []string
	// Grant is what policy allows; nil allows nothing.
	Grant Grant
	// MaxResults caps this principal's queries (0: the archive's cap).
	MaxResults int
	// Deidentify, when set, is the de-identification profile
	// (deid.ParseProfile) of everything this principal retrieves; its
	// queries are refused (their answers would show identity).
	Deidentify string
	// UserDeidentify is the de-identification profile of the user a
	// peer's association authenticated as (User), when that user has
	// one: the peer retrieves for the user, so it applies as Deidentify
	// does (with a different Deidentify, retrieves are refused).
	UserDeidentify string
}

// deidentified reports whether p retrieves de-identified only, for the
// peer's or the user's profile (nil: no).
func (p *Principal) deidentified() bool {
	return p != nil && (p.Deidentify != "" || p.UserDeidentify != "")
}

// Allows reports whether p holds perm. A nil principal holds none.
func (p *Principal) Allows(perm string) bool {
	return p != nil && p.Grant != nil && p.Grant.Allows(perm)
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal ctx carries, nil without one.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}
