package s3blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// drainWait bounds the reading of what is left of a range before it is
// closed (drop).
const drainWait = time.Second

// reader reads an object by ranged GETs (see the package comment). It
// is an io.ReadSeekCloser; not safe for concurrent use.
type reader struct {
	s    *Store
	ctx  context.Context
	name string
	size int64
	off  int64 // where the next Read reads

	// The range being read: body yields the bytes from pos up to end.
	body   io.ReadCloser
	cancel context.CancelFunc
	pos    int64
	end    int64
	next   int64 // length of the next range
	closed bool
}

// Open returns the blob's bytes (pending or published) or
// store.ErrNotFound. The first range is fetched at once.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := s.check(key); err != nil {
		return nil, err
	}
	r := &reader{s: s, ctx: context.WithoutCancel(ctx), name: s.objectName(key), size: -1, next: firstRange}
	if err := r.fetch(ctx, 0); err != nil {
		return nil, fmt.Errorf("s3blob: open %s: %w", key, err)
	}
	return r, nil
}

// fetch starts the range from off. The first one learns the size.
func (r *reader) fetch(ctx context.Context, off int64) error {
	r.drop()
	end := off + r.next
	if r.size >= 0 {
		end = min(end, r.size)
	}
	rctx, cancel := context.WithTimeout(r.ctx, PartTimeout)
	out, err := r.s.c.GetObject(rctx, &s3.GetObjectInput{Bucket: &r.s.bucket, Key: aws.String(r.name),
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, end-1))})
	if err != nil {
		cancel()
		err = r.s.wrap(ctx, err)
		if r.size < 0 && off == 0 && isInvalidRange(err) {
			// An empty object has no byte 0: is it there?
			return r.statEmpty(ctx)
		}
		return err
	}
	if r.size < 0 {
		r.size = totalFromRange(aws.ToString(out.ContentRange))
		if r.size < 0 {
			// No Content-Range: the whole object came.
			r.size = aws.ToInt64(out.ContentLength)
		}
		end = min(end, r.size)
	}
	r.body, r.cancel, r.pos, r.end = out.Body, cancel, off, end
	return nil
}

func isInvalidRange(err error) bool {
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable
}

func (r *reader) statEmpty(ctx context.Context) error {
	octx, cancel := r.s.op(r.ctx)
	defer cancel()
	out, err := r.s.c.HeadObject(octx, &s3.HeadObjectInput{Bucket: &r.s.bucket, Key: aws.String(r.name)})
	if err != nil {
		return r.s.wrap(ctx, err)
	}
	r.size = aws.ToInt64(out.ContentLength)
	if r.size != 0 {
		return errors.New("s3blob: the store refused a range of a non-empty object")
	}
	return nil
}

// totalFromRange reads the size from "bytes a-b/size"; -1 if none.
func totalFromRange(cr string) int64 {
	i := strings.LastIndexByte(cr, '/')
	if i < 0 {
		return -1
	}
	n, err := strconv.ParseInt(cr[i+1:], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// drop ends the range being read. What is left of it, when no more than
// skipLimit, is read and discarded first (for drainWait at most: a
// stalled server does not hold up Close): the HTTP client reuses a
// connection only once its response has been read to the end, and
// closes it otherwise (a new TCP connection, and over HTTPS a TLS
// handshake, for the next request).
func (r *reader) drop() {
	if r.body != nil {
		if left := r.end - r.pos; left > 0 && left <= skipLimit {
			t := time.AfterFunc(drainWait, r.cancel)
			_, _ = io.CopyN(io.Discard, r.body, left)
			t.Stop()
		}
		r.body.Close()
		r.cancel()
		r.body, r.cancel = nil, nil
	}
}

func (r *reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, errors.New("s3blob: read after close")
	}
	if r.off >= r.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.body == nil || r.pos != r.off || r.pos >= r.end {
		if r.body != nil && r.pos >= r.end && r.pos == r.off {
			r.next = min(2*r.next, maxRange) // read to the end: read more next time
		} else if r.pos != r.off {
			r.next = firstRange // moved by Seek
		}
		if err := r.fetch(r.ctx, r.off); err != nil {
			return 0, fmt.Errorf("s3blob: read: %w", err)
		}
	}
	n, err := r.body.Read(p[:min(int64(len(p)), r.end-r.pos)])
	r.pos += int64(n)
	r.off += int64(n)
	if err == io.EOF {
		if r.pos < r.end {
			return n, fmt.Errorf("s3blob: read: %w", io.ErrUnexpectedEOF)
		}
		err = nil
	}
	if err != nil {
		r.drop()
		return n, fmt.Errorf("s3blob: read: %w", r.s.wrap(r.ctx, err))
	}
	return n, nil
}

// Seek moves the read position. A short forward move within the range
// being read skips bytes; any other starts a new range at the next Read.
func (r *reader) Seek(offset int64, whence int) (int64, error) {
	var to int64
	switch whence {
	case io.SeekStart:
		to = offset
	case io.SeekCurrent:
		to = r.off + offset
	case io.SeekEnd:
		to = r.size + offset
	default:
		return 0, errors.New("s3blob: seek: bad whence")
	}
	if to < 0 {
		return 0, errors.New("s3blob: seek: negative position")
	}
	if r.body != nil && to > r.pos && to < r.end && to-r.pos <= skipLimit {
		n, err := io.CopyN(io.Discard, r.body, to-r.pos)
		r.pos += n
		if err != nil {
			r.drop()
		}
	}
	r.off = to
	return to, nil
}

func (r *reader) Close() error {
	r.closed = true
	r.drop()
	return nil
}
