package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/termsafe"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

// keyList collects repeated -k flags.
type keyList []string

func (k *keyList) String() string     { return strings.Join(*k, " ") }
func (k *keyList) Set(v string) error { *k = append(*k, v); return nil }

// qrFlags are the flags find, move and get share: addressing, the
// information model, the level and the keys (as DCMTK's findscu takes
// them).
type qrFlags struct {
	pf             peerFlags
	patient, study *bool
	level          *string
	keys           keyList
}

func addQRFlags(fs *flag.FlagSet) *qrFlags {
	q := &qrFlags{pf: addPeerFlags(fs)}
	q.patient = fs.Bool("P", false, "patient root information model")
	q.study = fs.Bool("S", false, "study root information model (the default)")
	q.level = fs.String("level", "STUDY", "query/retrieve level: PATIENT, STUDY, SERIES or IMAGE")
	fs.Var(&q.keys, "k", "key: Keyword=Value or gggg,eeee=Value (matching), Keyword (return key); repeatable")
	return q
}

// sopClass returns the SOP class of the model for a service
// ("find", "move", "get").
func (q *qrFlags) sopClass(service string) (string, error) {
	if *q.patient && *q.study {
		return "", errors.New("give -P or -S, not both")
	}
	m := map[string][2]string{
		"find": {dimse.StudyRootFind, dimse.PatientRootFind},
		"move": {dimse.StudyRootMove, dimse.PatientRootMove},
		"get":  {dimse.StudyRootGet, dimse.PatientRootGet},
	}[service]
	if *q.patient {
		return m[1], nil
	}
	return m[0], nil
}

// parseTag reads a keyword or gggg,eeee (optionally in parentheses).
func parseTag(s string) (dicom.Tag, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, ",") {
		g, e, _ := strings.Cut(strings.Trim(s, "()"), ",")
		gv, err1 := strconv.ParseUint(strings.TrimSpace(g), 16, 16)
		ev, err2 := strconv.ParseUint(strings.TrimSpace(e), 16, 16)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("key %q: a tag is gggg,eeee in hexadecimal", s)
		}
		return dicom.NewTag(uint16(gv), uint16(ev)), nil
	}
	t, ok := dicom.TagByKeyword(s)
	if !ok {
		return 0, fmt.Errorf("key %q: unknown keyword", s)
	}
	return t, nil
}

var binaryVRs = map[string]bool{"US": true, "SS": true, "UL": true, "SL": true, "FL": true, "FD": true, "AT": true, "OB": true, "OW": true, "OF": true, "OD": true, "OL": true, "OV": true, "UV": true, "SV": true, "UN": true}

// identifier builds the request identifier and returns the requested keys
// (table columns) in the order given.
func (q *qrFlags) identifier() (*dicom.DataSet, []dicom.Tag, error) {
	type kv struct {
		tag      dicom.Tag
		value    string
		hasValue bool
	}
	level := strings.ToUpper(strings.TrimSpace(*q.level))
	var kvs []kv
	var cols []dicom.Tag
	seen := map[dicom.Tag]bool{}
	nonASCII := false
	for _, k := range q.keys {
		name, value, has := strings.Cut(k, "=")
		t, err := parseTag(name)
		if err != nil {
			return nil, nil, err
		}
		if t == dicom.QueryRetrieveLevel {
			level = strings.ToUpper(strings.TrimSpace(value))
			continue
		}
		for _, r := range value {
			if r > 0x7e {
				nonASCII = true
			}
		}
		kvs = append(kvs, kv{t, value, has && value != ""})
		if !seen[t] {
			seen[t] = true
			cols = append(cols, t)
		}
	}
	unique := map[string]dicom.Tag{"PATIENT": dicom.PatientID, "STUDY": dicom.StudyInstanceUID, "SERIES": dicom.SeriesInstanceUID, "IMAGE": dicom.SOPInstanceUID}
	u, ok := unique[level]
	if !ok {
		return nil, nil, fmt.Errorf("level %q: use PATIENT, STUDY, SERIES or IMAGE", level)
	}
	ds := &dicom.DataSet{}
	if nonASCII {
		ds.Set(dicom.SpecificCharacterSet, "ISO_IR 192")
	}
	ds.Set(dicom.QueryRetrieveLevel, level)
	if !seen[u] {
		kvs = append(kvs, kv{tag: u})
		cols = append(cols, u)
	}
	for _, k := range kvs {
		vr := dicom.VROf(k.tag)
		switch {
		case !k.hasValue && vr == "SQ":
			ds.Put(&dicom.Element{Tag: k.tag, VR: vr, Items: []*dicom.DataSet{}})
		case !k.hasValue:
			ds.Put(&dicom.Element{Tag: k.tag, VR: vr})
		case binaryVRs[vr] || vr == "SQ":
			return nil, nil, fmt.Errorf("key %s: matching on VR %s is not supported", k.tag, vr)
		default:
			ds.Set(k.tag, k.value)
		}
	}
	return ds, cols, nil
}

// dial opens an association proposing the Q/R SOP class (and extra
// contexts, IDs from 3).
// request checks the model and level for a service and builds the
// identifier; cols are the keys in the order given.
func (q *qrFlags) request(service string) (sopClass string, id *dicom.DataSet, cols []dicom.Tag, err error) {
	if sopClass, err = q.sopClass(service); err != nil {
		return "", nil, nil, err
	}
	id, cols, err = q.identifier()
	return sopClass, id, cols, err
}

// connect opens the association and its DIMSE client.
func (q *qrFlags) connect(ctx context.Context, addr, sopClass string, extra []pdu.PresentationContext, roles []pdu.RoleSelection) (*dimse.Client, error) {
	a, err := q.dial(ctx, addr, sopClass, extra, roles)
	if err != nil {
		return nil, err
	}
	return dimse.NewClient(a), nil
}

func (q *qrFlags) dial(ctx context.Context, addr, sopClass string, extra []pdu.PresentationContext, roles []pdu.RoleSelection) (*assoc.Association, error) {
	pcs := append([]pdu.PresentationContext{{ID: 1, AbstractSyntax: sopClass, TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}}}, extra...)
	rq := q.pf.request(pcs)
	rq.UserInfo.Roles = roles
	a, err := q.pf.dial(ctx, addr, rq)
	if err != nil {
		return nil, err
	}
	if _, ok := a.Context(1); !ok {
		a.Abort()
		return nil, fmt.Errorf("the peer did not accept %s (%s)", dicom.UIDName(sopClass), sopClass)
	}
	return a, nil
}

func statusText(c *dimse.Command) string {
	s := fmt.Sprintf("0x%04X (%s)", c.Status, dimse.StatusName(c.Status))
	if c.ErrorComment != "" {
		s += ": " + termsafe.Quote(c.ErrorComment)
	}
	return s
}

var findCmd = &command{
	name: "find", summary: "query a DICOM peer with C-FIND",
	args: "[-P|-S] [--level L] [-k KEY[=VALUE]]... [--json] [--aec TITLE] [--aet TITLE] HOST:PORT", minArgs: 1, maxArgs: 1,
	help: `Queries the peer at HOST:PORT with C-FIND, in the Study Root (-S, the
default) or Patient Root (-P) information model at --level, and prints
the matches as a table of the keys, or in the DICOM JSON model with --json.
A key with a value (-k PatientID=123) matches; one without (-k
PatientName) is returned. ^C cancels the query with C-CANCEL. It exits 1
unless the query ends with Success.`,
	flags: findFlags,
}

func findFlags(fs *flag.FlagSet) runFunc {
	q := addQRFlags(fs)
	asJSON := fs.Bool("json", false, "print the matches in the DICOM JSON model (PS3.18 F.2)")
	return func(e *env, pos []string) error {
		class, id, cols, err := q.request("find")
		if err != nil {
			return err
		}
		ctx, stop := interruptContext()
		defer stop()
		cl, err := q.connect(ctx, pos[0], class, nil, nil)
		if err != nil {
			return err
		}
		a := cl.A
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		n := 0
		if *asJSON {
			fmt.Fprint(e.stdout, "[")
		} else {
			var hdr []string
			for _, c := range cols {
				if kw := dicom.Keyword(c); kw != "" {
					hdr = append(hdr, kw)
				} else {
					hdr = append(hdr, c.String())
				}
			}
			fmt.Fprintln(tw, strings.Join(hdr, "\t"))
		}
		rsp, err := cl.Find(ctx, 1, id, func(m *dicom.DataSet) error {
			n++
			if *asJSON {
				b, err := json.Marshal(m)
				if err != nil {
					return err
				}
				if n > 1 {
					fmt.Fprint(e.stdout, ",")
				}
				fmt.Fprintf(e.stdout, "\n%s", b)
				return nil
			}
			var row []string
			for _, c := range cols {
				el := m.Get(c)
				switch {
				case el == nil:
					row = append(row, "")
				case el.IsSequence():
					row = append(row, fmt.Sprintf("(%d items)", len(el.Items)))
				default:
					row = append(row, termsafe.Text(m.String(c), "")) // multiple values keep their backslashes
				}
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
			return nil
		})
		if *asJSON {
			fmt.Fprintln(e.stdout, "\n]")
		} else {
			tw.Flush()
		}
		if err != nil && rsp == nil {
			return err
		}
		_ = a.Release()
		fmt.Fprintf(e.stderr, "%d matches; final status %s\n", n, statusText(rsp))
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		if rsp.Status != dimse.StatusSuccess {
			return &exitError{code: 1, err: fmt.Errorf("C-FIND ended with status %s", statusText(rsp))}
		}
		return nil
	}
}

// interruptContext is cancelled on ^C: a running query is then cancelled
// with C-CANCEL.
func interruptContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt)
}
