package web

import (
	"slices"
	"testing"
)

func TestOIDCRoles(t *testing.T) {
	claims := map[string]any{
		"roles":        []any{"viewer", "admin", 7},
		"group":        "uploader, viewer",
		"realm_access": map[string]any{"roles": []any{"radiologist"}},
	}
	for _, c := range []struct {
		path string
		m    map[string]string
		want []string
	}{
		{"roles", nil, []string{"viewer", "admin"}},
		{"group", nil, []string{"viewer", "uploader"}},
		{"realm_access.roles", map[string]string{"radiologist": "viewer"}, []string{"viewer"}},
		{"realm_access.roles", nil, nil},
		{"missing.path", nil, nil},
		{"roles", map[string]string{"viewer": "uploader"}, []string{"uploader"}},
	} {
		o := newOIDC(&OIDCConfig{RoleMap: c.m})
		if got := o.mapRoles(claimPath(claims, c.path)); !slices.Equal(got, c.want) {
			t.Errorf("%s %v: %v, want %v", c.path, c.m, got, c.want)
		}
	}
}
