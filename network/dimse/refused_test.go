package dimse_test

import (
	"context"
	"sync"

	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
)

// refusals is a dimsetest.Archive that is also told of the requests the
// dispatcher refused before calling it.
type refusals struct {
	*dimsetest.Archive
	mu  sync.Mutex
	got []*dimse.Refusal
}

func (r *refusals) Refused(_ context.Context, x *dimse.Refusal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, x)
}

// take returns the refusals told so far and forgets them.
func (r *refusals) take() []*dimse.Refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.got
	r.got = nil
	return out
}

// handlers makes r the handlers of a dimsetest server.
func (r *refusals) handlers(d *dimse.Dispatcher) {
	d.Handlers = dimse.Handlers{Echo: r, Store: r, Find: r, Retrieve: r}
}
