package scan

import (
	"bytes"
	"context"
	"net"
)

// probe examines one endpoint within its budget; it returns nil when the
// port is closed (or the scan is over).
func (s *scanner) probe(ctx context.Context, ep Endpoint) *result {
	if ctx.Err() != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opt.EndpointBudget)
	defer cancel()
	log := s.opt.Logger.With("endpoint", ep.String())
	plain := func(ctx context.Context) (net.Conn, error) { return s.dial(ctx, ep) }
	calling, called := randomAE(), randomAE()
	o := s.associate(ctx, plain, calling, called, verificationOnly(), nil)
	if !o.connected {
		log.Debug("closed", "err", o.err)
		return nil
	}
	r := &result{svc: &Service{Host: ep.Addr.String(), Name: ep.Name, Port: ep.Port, Protocol: "unknown"}}
	log.Debug("open", "answer", o.received())
	if o.dicom() {
		s.probeDICOM(ctx, ep, plain, o, calling, called, false, r)
		return r
	}
	switch {
	case o.silent():
		// Accepted, then silent: a web server waiting for the end of a
		// request line, a tarpit, or a service that speaks only after a
		// request of its own kind. One HTTP request more, so that such a
		// host costs at most two timeouts.
		// The web checks' notes stay (a DICOMweb that asks for
		// credentials is worth saying); a failed GET's note goes.
		s.probeHTTP(ctx, ep, false, r)
		if r.svc.Protocol != "unknown" {
			return r
		}
		r.svc.Notes = nil
		r.note("connection accepted but nothing answered the A-ASSOCIATE-RQ within %s", s.opt.Timeout)
		return r
	case bytes.HasPrefix(o.head, []byte("HTTP/")) && !bytes.Contains(o.head, []byte("HTTPS")):
		s.probeHTTP(ctx, ep, false, r)
		return r
	case len(o.head) == 0 || o.head[0] == 0x15 || o.head[0] == 0x16 || bytes.HasPrefix(o.head, []byte("HTTP/")):
		// Closed without a word, a TLS record, or "HTTP request to an
		// HTTPS server": try TLS.
		tdial := s.tlsDialer(plain, ep)
		c, err := tdial(ctx)
		if err != nil {
			if len(o.head) == 0 {
				// Perhaps a web server that closed on binary input.
				s.probeHTTP(ctx, ep, false, r)
				if r.svc.Protocol != "unknown" {
					return r
				}
			}
			r.note("first answer: %s; TLS handshake failed: %v", o.received(), err)
			return r
		}
		_ = c.Close()
		tcalling, tcalled := randomAE(), randomAE()
		to := s.associate(ctx, tdial, tcalling, tcalled, verificationOnly(), nil)
		if to.dicom() {
			s.probeDICOM(ctx, ep, tdial, to, tcalling, tcalled, true, r)
			return r
		}
		s.probeHTTP(ctx, ep, true, r)
		if r.svc.Protocol == "unknown" {
			r.svc.Protocol = "tls"
		}
		return r
	}
	r.note("not DICOM: %s", o.received())
	return r
}
