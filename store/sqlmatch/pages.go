package sqlmatch

import "github.com/ward-pacs/ward/store"

// Position is an instance's place in the order of Querier.Instances:
// the keys of its study and series, its instance number as the index
// orders it, and its own key.
type Position [4]int64

// First is before every Position.
var First = Position{-1 << 63, -1 << 63, -1 << 63, -1 << 63}

// Row is an instance read by a page, with its Position.
type Row struct {
	Instance store.Instance
	Pos      Position
}

// Paging reads the instances of Querier.Instances in pages by keyset, so
// that memory stays bounded whatever their number and no connection or
// transaction is held between pages (nor while the caller handles them).
//
// The series that have matching instances, in order, are read first (16
// bytes a series). A page is then the next instances after the last one
// passed on (its Position) among the next PageSize series: each of those
// had a match, so the page is the same as one among all series.
//
// The walk is not one snapshot: an instance stored meanwhile in a series
// that had matches is passed on if it sorts after the last one passed on,
// one in a new series is not; one deleted before its page is read is
// not; a replaced one (it keeps its key) is passed on once, as its page
// reads it, unless the replacement moved it to another series or instance
// number: it may then be passed on twice or not at all.
type Paging struct {
	// PageSize is how many instances one page reads.
	PageSize int
	// Offset and Limit are those of the query (0: none).
	Offset, Limit int
	// Read reads up to n instances after pos among the series keys, in
	// order.
	Read func(series []int64, pos Position, n int) ([]Row, error)
	// Metadata, when not nil, sets the kept metadata of up to
	// MetadataBatch rows of a page, before they are passed on.
	Metadata      func([]Row) error
	MetadataBatch int
}

// Walk walks the series given as (study key, series key) pairs in order,
// passing each instance on to fn.
func (p *Paging) Walk(series []int64, fn func(*store.Instance) error) error {
	skip, left := p.Offset, p.Limit // left 0: no limit
	pos := First
	keys := make([]int64, 0, min(p.PageSize, len(series)/2))
	for next := 0; next < len(series); {
		keys = keys[:0]
		for i := next; i < len(series) && len(keys) < p.PageSize; i += 2 {
			keys = append(keys, series[i+1])
		}
		n := p.PageSize
		if left > 0 {
			n = min(n, skip+left)
		}
		page, err := p.Read(keys, pos, n)
		if err != nil {
			return err
		}
		if len(page) < n {
			next += 2 * len(keys) // these series are done
		} else {
			pos = page[len(page)-1].Pos
			for next < len(series) && series[next+1] != pos[1] {
				next += 2
			}
		}
		if skip >= len(page) {
			skip -= len(page)
			continue
		}
		page, skip = page[skip:], 0
		if left > 0 {
			if len(page) >= left {
				page, next = page[:left], len(series)
			}
			left -= len(page)
		}
		if err := p.deliver(page, fn); err != nil {
			return err
		}
	}
	return nil
}

// deliver passes the instances of a page on, with their metadata read
// MetadataBatch at a time and dropped once passed on.
func (p *Paging) deliver(page []Row, fn func(*store.Instance) error) error {
	batch := len(page)
	if p.Metadata != nil {
		batch = max(p.MetadataBatch, 1)
	}
	for start := 0; start < len(page); start += batch {
		end := min(start+batch, len(page))
		if p.Metadata != nil {
			if err := p.Metadata(page[start:end]); err != nil {
				return err
			}
		}
		for i := start; i < end; i++ {
			in := page[i].Instance
			page[i].Instance.Metadata = nil
			if err := fn(&in); err != nil {
				return err
			}
		}
	}
	return nil
}
