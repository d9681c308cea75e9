package scan

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Vuln is one row of the table of known-vulnerable releases: every
// release of Product before FixedIn carries CVEs.
//
// Maintenance: add a row when an advisory names a fixed release of a
// DICOM implementation whose version a scan can read (the A-ASSOCIATE-AC
// implementation version name, or Orthanc's /system). Keep the summary
// one line and cite the advisory's CVE ids only.
type Vuln struct {
	Product string
	FixedIn [3]int
	CVEs    []string
	Summary string
}

// Vulns is the maintained table.
var Vulns = []Vuln{
	{"DCMTK", [3]int{3, 6, 7}, []string{"CVE-2022-2119", "CVE-2022-2120", "CVE-2022-2121"},
		"DCMTK before 3.6.7: path traversal and denial of service in the network tools (CISA ICSMA-22-174-01)"},
	{"Orthanc", [3]int{1, 5, 8}, []string{"CVE-2025-0896"},
		"Orthanc before 1.5.8: remote access did not enable HTTP authentication (CISA ICSMA-25-037-02)"},
	{"Orthanc", [3]int{1, 12, 0}, []string{"CVE-2023-33466"},
		"Orthanc before 1.12.0: an API user can overwrite arbitrary files, leading to code execution"},
}

var (
	// DCMTK's implementation version name: OFFIS_DCMTK_367 for 3.6.7.
	dcmtkVersion = regexp.MustCompile(`^OFFIS_DCMTK_(\d)(\d)(\d)`)
	// Orthanc: a version as /system reports it (1.12.3), or a version
	// name like ORTHANC_1_12_3 / Orthanc1.12.3.
	orthancVersion = regexp.MustCompile(`(?i)^(?:orthanc[ _-]?v?)?(\d+)[._](\d+)[._](\d+)`)
)

// Product identifies an implementation from its version name (from an
// A-ASSOCIATE-AC) or, for Orthanc, its REST version. ok is false when the
// name is not recognised.
func Product(versionName string) (product string, version [3]int, ok bool) {
	v := strings.TrimSpace(versionName)
	if m := dcmtkVersion.FindStringSubmatch(v); m != nil {
		return "DCMTK", atoi3(m[1:]), true
	}
	if strings.HasPrefix(strings.ToUpper(v), "ORTHANC") {
		if m := orthancVersion.FindStringSubmatch(v); m != nil {
			return "Orthanc", atoi3(m[1:]), true
		}
		return "Orthanc", [3]int{}, false
	}
	return "", [3]int{}, false
}

func atoi3(s []string) [3]int {
	var v [3]int
	for i := range v {
		v[i], _ = strconv.Atoi(s[i])
	}
	return v
}

func less(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

func versionString(v [3]int) string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

// Lookup returns the rows that apply to product at version.
func Lookup(product string, version [3]int) []Vuln {
	var out []Vuln
	for _, v := range Vulns {
		if strings.EqualFold(v.Product, product) && less(version, v.FixedIn) {
			out = append(out, v)
		}
	}
	return out
}

// vulnFinding builds dicom.known-vulnerable for product/version, or
// reports false.
func vulnFinding(ep Endpoint, product string, version [3]int, sent, received string) (Finding, bool) {
	rows := Lookup(product, version)
	if len(rows) == 0 {
		return Finding{}, false
	}
	var cves, sums []string
	for _, r := range rows {
		cves = append(cves, r.CVEs...)
		sums = append(sums, r.Summary)
	}
	f := newFinding(IDKnownVulnerable, ep, Evidence{Sent: sent, Received: fmt.Sprintf("%s (%s %s): %s", received, product, versionString(version), strings.Join(sums, "; "))})
	f.CVEs = cves
	return f, true
}
