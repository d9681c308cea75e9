package dicomweb

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/web"
)

// nothingStored is a service that finds no instance.
type nothingStored struct{ archive.Service }

func (nothingStored) Retrieve(context.Context, *archive.RetrieveRequest, func(*archive.Instance) error) error {
	return nil
}

func fuzzHandler() http.Handler {
	h := web.New(web.Config{Authenticator: allowAll{}})
	Register(h, nothingStored{}, Options{MaxResults: 10})
	return h
}

// FuzzWADOURIQuery: any query string gets a 4xx with a message, never a
// panic or a 5xx.
func FuzzWADOURIQuery(f *testing.F) {
	for _, s := range []string{
		"requestType=WADO&studyUID=1.2.3&seriesUID=1.2.3.4&objectUID=1.2.3.4.5&contentType=application%2Fdicom",
		"requestType=WADO&studyUID=1.2.3&seriesUID=1.2.3.4&objectUID=1.2.3.4.5&contentType=application/dicom&transferSyntax=*",
		"requestType=WADO&studyUID=1.2.3&seriesUID=1.2.3.4&objectUID=1.2.3.4.5&contentType=image/jpeg;q=0.5,application/dicom",
		"requestType=WADO&studyUID=1.2.3&seriesUID=1.2.3.4&objectUID=1.2.3.4.5&rows=64",
		"requestType=WADO&requestType=WADO",
		"%zz",
	} {
		f.Add(s)
	}
	h := fuzzHandler()
	f.Fuzz(func(t *testing.T, q string) {
		r := httptest.NewRequest(http.MethodGet, "/wado", nil)
		r.URL.RawQuery = q
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code < 400 || w.Code >= 500 || w.Body.Len() < 2 {
			t.Fatalf("%q: %d %q", q, w.Code, w.Body.String())
		}
	})
}

// FuzzRetrieveAccept: any Accept header gets 400, 404 (nothing stored)
// or 406, never a panic.
func FuzzRetrieveAccept(f *testing.F) {
	for _, s := range []string{
		`multipart/related; type="application/dicom"; transfer-syntax=*`,
		`multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.1`,
		`application/dicom, */*;q=0.1`,
		`multipart/related; type="application/octet-stream"`,
	} {
		f.Add(s)
	}
	h := fuzzHandler()
	f.Fuzz(func(t *testing.T, accept string) {
		r := httptest.NewRequest(http.MethodGet, "/dicom-web/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5", nil)
		r.Header.Set("Accept", accept)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case 400, 404, 406:
		default:
			t.Fatalf("%q: %d %q", accept, w.Code, w.Body.String())
		}
	})
}
