package dimse

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/pdu"
)

// ErrProtocol: the peer broke the DIMSE rules of message fragmentation
// (PS3.7 section 9.3 and PS3.8 Annex E): the association is aborted.
var ErrProtocol = errors.New("dimse: protocol error")

// Conn reads and writes DIMSE messages over an association. Reads and
// writes may happen from different goroutines, but only one reader and one
// writer at a time.
type Conn struct {
	A *assoc.Association

	// Read side: the P-DATA-TF being consumed and its position.
	cur  *pdu.PDataTF
	free func()
	idx  int
	// data is the data set reader of the last message, drained before the
	// next command is read.
	data *dataReader

	// Write side: two buffers of the peer's maximum PDU length (one being
	// sent, one being filled), the command set being sent, and the
	// messages queued (QueueMessageData), PDUs back to back.
	wbuf, wbuf2 []byte
	cbuf        []byte
	queue       []byte
}

// MaxQueued is how many bytes of queued messages (QueueMessageData) a
// Conn holds before it sends them: some fifty C-FIND responses in one
// system call rather than one each.
const MaxQueued = 16 << 10

// NewConn wraps an established association.
func NewConn(a *assoc.Association) *Conn { return &Conn{A: a} }

// Message is a received DIMSE message. When the command announces a data
// set, Data streams it; it must be read to EOF (or is drained) before the
// next message is read.
type Message struct {
	ContextID byte
	Command   *Command
	Data      io.Reader
}

// nextPDV returns the next PDV, receiving PDUs as needed.
func (c *Conn) nextPDV() (pdu.PDV, error) {
	for c.cur == nil || c.idx >= len(c.cur.Items) {
		if c.free != nil {
			c.free()
			c.free = nil
		}
		c.cur = nil
		p, free, err := c.A.Recv()
		if err != nil {
			return pdu.PDV{}, err
		}
		c.cur, c.free, c.idx = p, free, 0
	}
	v := c.cur.Items[c.idx]
	c.idx++
	return v, nil
}

// Close releases buffers held by the reader.
func (c *Conn) Close() {
	if c.free != nil {
		c.free()
		c.free = nil
	}
	c.cur = nil
}

// ReadMessage reads the next message's command set; the data set, if any,
// streams from Message.Data. It returns assoc.ErrReleased when the peer
// asked to release.
func (c *Conn) ReadMessage() (*Message, error) {
	if c.data != nil {
		if _, err := io.Copy(io.Discard, c.data); err != nil {
			return nil, err
		}
		c.data = nil
	}
	var cmd []byte
	var ctxID byte
	for {
		v, err := c.nextPDV()
		if err != nil {
			return nil, err
		}
		if !v.Command {
			return nil, c.protocolError("data set fragment where a command was expected")
		}
		if ctxID == 0 {
			ctxID = v.ContextID
			if _, ok := c.A.Context(ctxID); !ok {
				return nil, c.protocolError(fmt.Sprintf("command on presentation context %d, which was not accepted", ctxID))
			}
		} else if v.ContextID != ctxID {
			return nil, c.protocolError("command fragments on two presentation contexts")
		}
		if len(cmd)+len(v.Data) > MaxCommandLength {
			return nil, c.protocolError(fmt.Sprintf("command set larger than %d bytes", MaxCommandLength))
		}
		cmd = append(cmd, v.Data...)
		if v.Last {
			break
		}
	}
	command, err := DecodeCommand(cmd)
	if err != nil {
		return nil, c.protocolErr(err)
	}
	m := &Message{ContextID: ctxID, Command: command}
	if command.HasDataSet() {
		c.data = &dataReader{c: c, ctxID: ctxID}
		m.Data = c.data
	}
	return m, nil
}

func (c *Conn) protocolError(msg string) error {
	return c.protocolErr(errors.New(msg))
}

// protocolErr aborts the association (provider source) and returns the
// error that caused it.
func (c *Conn) protocolErr(cause error) error {
	err := fmt.Errorf("%w: %w", ErrProtocol, cause)
	c.A.AbortWith(pdu.AbortUnexpectedParam, err)
	return err
}

// dataReader streams a data set from P-DATA fragments.
type dataReader struct {
	c     *Conn
	ctxID byte
	rest  []byte
	last  bool
	err   error
	// onEOF, when set, is called once the last fragment is consumed.
	onEOF func()
}

// OnDataEnd arranges for f to be called once the data set of m has been
// read to its end (not at all when it never is). m must come from
// ReadMessage.
func OnDataEnd(m *Message, f func()) {
	if d, ok := m.Data.(*dataReader); ok {
		d.onEOF = f
	}
}

// fill loads the next fragment into rest; io.EOF after the last one.
func (d *dataReader) fill() error {
	for len(d.rest) == 0 {
		if d.err != nil {
			return d.err
		}
		if d.last {
			d.err = io.EOF
			if d.onEOF != nil {
				d.onEOF()
				d.onEOF = nil
			}
			return io.EOF
		}
		v, err := d.c.nextPDV()
		switch {
		case errors.Is(err, assoc.ErrReleased):
			d.err = d.c.protocolError("release requested in the middle of a data set")
		case err != nil:
			d.err = err
		case v.Command:
			d.err = d.c.protocolError("command fragment in the middle of a data set")
		case v.ContextID != d.ctxID:
			d.err = d.c.protocolError(fmt.Sprintf("data set fragment on presentation context %d, command was on %d", v.ContextID, d.ctxID))
		default:
			d.rest, d.last = v.Data, v.Last
		}
	}
	return nil
}

func (d *dataReader) Read(p []byte) (int, error) {
	if err := d.fill(); err != nil {
		return 0, err
	}
	n := copy(p, d.rest)
	d.rest = d.rest[n:]
	return n, nil
}

// WriteTo lets io.Copy move fragments without an intermediate buffer.
func (d *dataReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if err := d.fill(); err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		n, err := w.Write(d.rest)
		total += int64(n)
		d.rest = d.rest[n:]
		if err != nil {
			return total, err
		}
	}
}

// maxFragment is the data of one PDV in one PDU: the peer's maximum PDU
// length less the PDV header (4-byte length, context ID, control header),
// rounded down to even. Every fragment Ward sends is of even length
// (DCMTK aborts on an odd one, "DIMSE: Odd Fragment Length"): the command
// and data sets are, and so is every fragment but the last one.
func (c *Conn) maxFragment() int {
	return (int(c.A.PeerMaxPDULength()) - 6) &^ 1
}

func (c *Conn) buffer() []byte {
	n := pdu.PDataHeaderLen + c.maxFragment()
	if cap(c.wbuf) < n {
		c.wbuf = make([]byte, 0, n)
	}
	return c.wbuf[:0]
}

// WriteMessage sends a command and, when data is not nil, the data set read
// from data, fragmented into P-DATA-TF PDUs the peer accepts. The data set
// never shares a PDU with the command: some peers (GDCM's gdcmscu) wait
// forever for a data set that came in the command's PDU, although PS3.8
// allows it. A data set of odd length (a deflated one whose stream was
// not padded, PS3.5 A.5) gets one trailing zero byte.
func (c *Conn) WriteMessage(ctxID byte, cmd *Command, data io.Reader) error {
	if err := c.Flush(); err != nil {
		return err
	}
	enc := c.encodeCommand(cmd, data != nil)
	if br, ok := data.(*bytes.Reader); ok && c.fitsOne(enc, br.Len()) {
		// A small data set held in memory (a C-FIND match, an identifier)
		// goes in one write with its command: two PDUs, one system call.
		buf, n := c.smallHeaders(ctxID, enc, br.Len())
		if _, err := io.ReadFull(br, buf[len(buf)-n:]); err != nil {
			return err
		}
		return c.sendSmall(buf, n)
	}
	if err := c.writeFragments(ctxID, true, enc); err != nil {
		return err
	}
	if data == nil {
		return nil
	}
	return c.writeStream(ctxID, data)
}

// writeLarge sends a command and a data set that do not fit in one
// buffer: in fragments, as WriteMessage does.
func (c *Conn) writeLarge(ctxID byte, cmd, data []byte) error {
	if err := c.writeFragments(ctxID, true, cmd); err != nil {
		return err
	}
	return c.writeStream(ctxID, bytes.NewReader(data))
}

// QueueMessageData is WriteMessage for a message with a data set held in
// memory (data, which stays the caller's) that need not leave at once,
// such as one of many C-FIND pending responses: it is encoded into the
// same PDUs, but queued after the messages queued before it.
// The queue is sent in one write when it holds MaxQueued bytes, before
// any message written with the other methods (so that messages leave
// in the order they were given), and by Flush. A message too large for
// one buffer is sent at once, after the queue. It reports whether
// messages are left queued, for the caller to Flush them in time.
func (c *Conn) QueueMessageData(ctxID byte, cmd *Command, data []byte) (queued bool, err error) {
	enc := c.encodeCommand(cmd, true)
	if !c.fitsOne(enc, len(data)) {
		if err := c.Flush(); err != nil {
			return false, err
		}
		return false, c.writeLarge(ctxID, enc, data)
	}
	pad := len(data) & 1
	c.queue = pdu.AppendPDataHeader(c.queue, ctxID, true, true, len(enc))
	c.queue = append(c.queue, enc...)
	c.queue = pdu.AppendPDataHeader(c.queue, ctxID, false, true, len(data)+pad)
	c.queue = append(c.queue, data...)
	if pad == 1 {
		c.queue = append(c.queue, 0)
	}
	if len(c.queue) >= MaxQueued {
		return false, c.Flush()
	}
	return true, nil
}

// Flush sends the queued messages (QueueMessageData), if any.
func (c *Conn) Flush() error {
	if len(c.queue) == 0 {
		return nil
	}
	err := c.A.Send(c.queue)
	c.queue = c.queue[:0]
	return err
}

// encodeCommand sets the Command Data Set Type of cmd (whether a data
// set follows) and encodes it into c.cbuf.
func (c *Conn) encodeCommand(cmd *Command, withData bool) []byte {
	if !withData {
		cmd.CommandDataSetType = NoDataSet
	} else if cmd.CommandDataSetType == NoDataSet || cmd.CommandDataSetType == 0 {
		cmd.CommandDataSetType = 0x0001
	}
	cmd.mark(tagCommandDataSetType, true)
	c.cbuf = cmd.appendTo(c.cbuf[:0])
	return c.cbuf
}

// fitsOne reports whether a command and a data set of n bytes fit in one
// buffer (sendSmall).
func (c *Conn) fitsOne(cmd []byte, n int) bool {
	return len(cmd)+n+1+pdu.PDataHeaderLen <= c.maxFragment()
}

// smallHeaders starts the two P-DATA-TF PDUs of one PDV each that carry a
// command and a whole data set of n bytes: it returns the buffer holding
// the command's PDU, the data set's header and n bytes for the data set
// to be copied into its end.
func (c *Conn) smallHeaders(ctxID byte, cmd []byte, n int) ([]byte, int) {
	buf := c.buffer()
	buf = pdu.AppendPDataHeader(buf, ctxID, true, true, len(cmd))
	buf = append(buf, cmd...)
	buf = pdu.AppendPDataHeader(buf, ctxID, false, true, n+n&1)
	return buf[:len(buf)+n], n
}

// sendSmall pads the data set of a smallHeaders buffer to even length and
// sends both PDUs in one Send.
func (c *Conn) sendSmall(buf []byte, n int) error {
	if n&1 == 1 {
		buf = append(buf, 0)
	}
	return c.A.Send(buf)
}

// writeFragments sends bytes held in memory.
func (c *Conn) writeFragments(ctxID byte, command bool, b []byte) error {
	max := c.maxFragment()
	for {
		n := len(b)
		last := true
		if n > max {
			n, last = max, false
		}
		buf := pdu.AppendPDataHeader(c.buffer(), ctxID, command, last, n)
		buf = append(buf, b[:n]...)
		if err := c.A.Send(buf); err != nil {
			return err
		}
		b = b[n:]
		if last {
			return nil
		}
	}
}

// writeStream sends a data set of unknown length. It reads one fragment
// ahead so that the last fragment is marked as such.
func (c *Conn) writeStream(ctxID byte, r io.Reader) error {
	max := c.maxFragment()
	hdr := pdu.PDataHeaderLen
	if cap(c.wbuf2) < hdr+max {
		c.wbuf2 = make([]byte, hdr+max)
	}
	cur := c.wbuf2[:hdr+max]
	next := c.buffer()[:hdr+max]
	n, err := io.ReadFull(r, cur[hdr:])
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return c.abortSend(err)
	}
	eof := err != nil
	for {
		m := 0
		if !eof {
			m, err = io.ReadFull(r, next[hdr:])
			if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
				return c.abortSend(err)
			}
			if err != nil {
				eof = true
			}
		}
		last := eof && m == 0
		if last && n&1 == 1 {
			// An odd data set: pad it (see WriteMessage). cur holds
			// hdr+max bytes and max is even, so n < max here.
			cur[hdr+n] = 0
			n++
		}
		pdu.AppendPDataHeader(cur[:0], ctxID, false, last, n)
		if err := c.A.Send(cur[:hdr+n]); err != nil {
			return err
		}
		if last {
			return nil
		}
		cur, next, n = next, cur, m
	}
}

// appendBuffer is an io.Writer appending to a byte slice: a data set
// encoded into a buffer reused from one message to the next.
type appendBuffer []byte

func (b *appendBuffer) Write(p []byte) (int, error) {
	*b = append(*b, p...)
	return len(p), nil
}

// abortSend aborts the association when the data set cannot be read
// mid-message: a DIMSE message cannot be taken back once begun.
func (c *Conn) abortSend(err error) error {
	c.A.Abort()
	return fmt.Errorf("dimse: reading the data set to send: %w", err)
}
