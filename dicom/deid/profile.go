// Package deid de-identifies DICOM objects by the Basic Application Level
// Confidentiality Profile of PS3.15 Annex E and its options, driven by
// Table E.1-1 as transcribed in table_gen.go (see Edition).
//
// Transform streams a Part 10 object to a de-identified Part 10 object:
// attributes are removed, emptied, replaced by dummy values, kept or
// cleaned as the table says; UIDs are remapped under a per-project secret
// (HMAC-SHA256, as 2.25. UIDs), the same input and secret always giving the
// same output; dates are shifted by a whole number of days per patient
// under the modified dates option; private attributes are removed (or,
// under Retain Safe Private, all but those of Table E.3.10-1); overlays and
// curves go; the object says what was done (Patient Identity Removed, De-
// identification Method and its code sequence, Longitudinal Temporal
// Information Modified). Objects likely to carry identity in their pixels
// are refused with ErrBurnedIn unless the caller accepts the risk.
package deid

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Option is an option of PS3.15 E.3, by the name Ward's command line uses.
type Option string

// The options Transform honours.
const (
	RetainFullDates        Option = "full-dates"              // E.3.6, Retain Longitudinal Temporal Information with Full Dates
	RetainModifiedDates    Option = "modified-dates"          // E.3.6, … with Modified Dates
	RetainPatientChars     Option = "patient-characteristics" // E.3.7
	RetainDeviceIdentity   Option = "device-identity"         // E.3.8
	RetainInstitutionID    Option = "institution-identity"    // E.3.9
	RetainUIDs             Option = "uids"                    // E.3.9
	RetainSafePrivate      Option = "safe-private"            // E.3.10
	CleanDescriptors       Option = "clean-descriptors"       // E.3.5
	CleanStructuredContent Option = "clean-structured-content"
)

// Options Transform refuses (ErrUnsupported): they need pixel or graphics
// processing Ward does not do.
const (
	CleanPixelData       Option = "clean-pixel-data"
	CleanVisualFeatures  Option = "clean-visual-features"
	CleanGraphics        Option = "clean-graphics"
	basicName                   = "basic"
	unsupportedPixelNote        = "Ward does not alter pixel data or graphics"
)

// ErrUnsupported is returned for an option Ward cannot honour.
var ErrUnsupported = errors.New("deid: option not supported")

// codes are the CID 7050 codes (PS3.16) of the profile and each option.
var codes = map[Option]struct{ value, meaning string }{
	basicName:              {"113100", "Basic Application Confidentiality Profile"},
	CleanPixelData:         {"113101", "Clean Pixel Data Option"},
	CleanVisualFeatures:    {"113102", "Clean Recognizable Visual Features Option"},
	CleanGraphics:          {"113103", "Clean Graphics Option"},
	CleanStructuredContent: {"113104", "Clean Structured Content Option"},
	CleanDescriptors:       {"113105", "Clean Descriptors Option"},
	RetainFullDates:        {"113106", "Retain Longitudinal Temporal Information Full Dates Option"},
	RetainModifiedDates:    {"113107", "Retain Longitudinal Temporal Information Modified Dates Option"},
	RetainPatientChars:     {"113108", "Retain Patient Characteristics Option"},
	RetainDeviceIdentity:   {"113109", "Retain Device Identity Option"},
	RetainUIDs:             {"113110", "Retain UIDs Option"},
	RetainSafePrivate:      {"113111", "Retain Safe Private Option"},
	RetainInstitutionID:    {"113112", "Retain Institution Identity Option"},
}

// Profile is the Basic Profile with a set of options.
type Profile struct {
	options map[Option]bool
}

// ParseProfile reads "basic[,OPTION…]" (the names of the Option
// constants). An unknown option, or one Ward cannot honour, is an error.
func ParseProfile(s string) (*Profile, error) {
	parts := strings.Split(s, ",")
	if strings.TrimSpace(parts[0]) != basicName {
		return nil, fmt.Errorf("deid: profile %q: it starts with %q (the Basic Application Level Confidentiality Profile), then options", s, basicName)
	}
	p := &Profile{options: map[Option]bool{}}
	for _, o := range parts[1:] {
		opt := Option(strings.TrimSpace(o))
		switch opt {
		case RetainFullDates, RetainModifiedDates, RetainPatientChars, RetainDeviceIdentity, RetainInstitutionID,
			RetainUIDs, RetainSafePrivate, CleanDescriptors, CleanStructuredContent:
			p.options[opt] = true
		case CleanPixelData, CleanVisualFeatures, CleanGraphics:
			return nil, fmt.Errorf("%w: %s (%s)", ErrUnsupported, opt, unsupportedPixelNote)
		default:
			return nil, fmt.Errorf("deid: unknown option %q; known: %s", opt, strings.Join(OptionNames(), ", "))
		}
	}
	if p.options[RetainFullDates] && p.options[RetainModifiedDates] {
		return nil, fmt.Errorf("deid: %s and %s exclude each other", RetainFullDates, RetainModifiedDates)
	}
	return p, nil
}

// OptionNames lists the options ParseProfile accepts.
func OptionNames() []string {
	return []string{string(RetainModifiedDates), string(RetainFullDates), string(RetainPatientChars), string(RetainDeviceIdentity),
		string(RetainInstitutionID), string(RetainUIDs), string(RetainSafePrivate), string(CleanDescriptors), string(CleanStructuredContent)}
}

// Has reports whether the profile includes o.
func (p *Profile) Has(o Option) bool { return p != nil && p.options[o] }

// String is the profile as ParseProfile reads it, options sorted.
func (p *Profile) String() string {
	opts := p.sorted()
	s := basicName
	for _, o := range opts {
		s += "," + string(o)
	}
	return s
}

func (p *Profile) sorted() []Option {
	var opts []Option
	for o := range p.options {
		opts = append(opts, o)
	}
	sort.Slice(opts, func(i, j int) bool { return codes[opts[i]].value < codes[opts[j]].value })
	return opts
}

// action is the effective action for one row under p: the Basic Profile's,
// overridden by the column of each option in the profile.
func (p *Profile) action(r *row) string {
	a := r.basic
	set := func(o Option, v string) {
		if p.options[o] && v != "" {
			a = v
		}
	}
	set(RetainSafePrivate, r.safePriv)
	set(RetainUIDs, r.uids)
	set(RetainDeviceIdentity, r.devID)
	set(RetainInstitutionID, r.instID)
	set(RetainPatientChars, r.patChars)
	set(RetainFullDates, r.fullDates)
	set(RetainModifiedDates, r.modifDates)
	set(CleanDescriptors, r.cleanDesc)
	set(CleanStructuredContent, r.cleanStruct)
	return a
}
