package dicom

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/internal/testci"
)

const (
	pydicomData = "/usr/lib/python3/dist-packages/pydicom/data"
	systemPy    = "/usr/bin/python3" // Debian's python3-pydicom lives here
)

func testFiles(t testing.TB) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(pydicomData, "test_files", "*.dcm"))
	if len(files) == 0 {
		testci.SkipOrFail(t, "pydicom test files missing under %s (apt-get install python3-pydicom)", pydicomData)
	}
	sort.Strings(files)
	return files
}

// oracle holds what pydicom reads from a test file.
type oracle struct {
	OK       bool   `json:"ok"`
	SOP      string `json:"sop"`
	Class    string `json:"cls"`
	Name     string `json:"name"`
	TS       string `json:"ts"`
	Complete bool   `json:"complete"`
}

var (
	oracleOnce sync.Once
	oracleData map[string]oracle
	oracleErr  error
)

const oracleScript = `
import json, sys, pydicom
out = {}
for f in sys.argv[1:]:
    r = {"ok": False}
    try:
        ds = pydicom.dcmread(f, force=True)
        ds.decode()
        r["ok"] = True
        r["sop"] = str(ds.get("SOPInstanceUID", "") or "")
        r["cls"] = str(ds.get("SOPClassUID", "") or "")
        pn = ds.get("PatientName", None)
        r["name"] = "" if pn is None else str(pn)
        r["ts"] = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        r["complete"] = True
    except Exception as e:
        r["err"] = str(e)
    out[f] = r
print(json.dumps(out))
`

// pydicomOracle runs Debian's pydicom once over all files.
func pydicomOracle(t testing.TB, _ []string) map[string]oracle {
	t.Helper()
	oracleOnce.Do(func() {
		files, _ := filepath.Glob(filepath.Join(pydicomData, "test_files", "*.dcm"))
		more, _ := filepath.Glob(filepath.Join(pydicomData, "charset_files", "*.dcm"))
		files = append(files, more...)
		if _, err := os.Stat(systemPy); err != nil {
			oracleErr = err
			return
		}
		cmd := exec.Command(systemPy, append([]string{"-c", oracleScript}, files...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			oracleErr = err
			return
		}
		oracleErr = json.Unmarshal(out, &oracleData)
	})
	if oracleErr != nil {
		testci.SkipOrFail(t, "pydicom oracle unavailable: %v", oracleErr)
	}
	return oracleData
}

// dcmdumpPath returns the dcmdump binary, skipping (or failing under CI)
// when it is missing.
func dcmdumpPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("dcmdump")
	if err != nil {
		testci.SkipOrFail(t, "dcmdump missing (apt-get install dcmtk)")
	}
	return p
}

// dcmdumpClean reports whether dcmdump reads path without errors.
func dcmdumpClean(t testing.TB, path string) (bool, string) {
	t.Helper()
	out, err := exec.Command(dcmdumpPath(t), "-q", "+E", path).CombinedOutput()
	s := string(out)
	if err != nil || strings.Contains(s, "E: ") {
		return false, s
	}
	return true, s
}
