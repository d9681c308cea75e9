package archive

import (
	"testing"
	"time"

	"github.com/ward-pacs/ward/store"
)

func TestIntentRoundTrip(t *testing.T) {
	in := &store.Instance{Size: 288412, Checksum: "crc32c:0a1b2c3d", ReceivedAt: time.Unix(1764442862, 123456789).UTC(), SourceAddr: "[2001:db8::1]:104"}
	rec, err := decodeIntent(encodeIntent(in))
	if err != nil {
		t.Fatal(err)
	}
	if rec.size != in.Size || rec.checksum != in.Checksum || !rec.at.Equal(in.ReceivedAt) || rec.addr != in.SourceAddr {
		t.Errorf("round trip: %+v from %+v", rec, in)
	}
}

// FuzzDecodeIntent: an intent record is read back from the filesystem at
// start-up; whatever it holds gives a record or an error, never a panic.
func FuzzDecodeIntent(f *testing.F) {
	f.Add([]byte("1 288412 0a1b2c3d 1764442862123456789 127.0.0.1:39702"))
	f.Add([]byte("1 0 00000000 0 "))
	f.Add([]byte("2 1 00000000 0 x"))
	f.Add([]byte("1 -1 zzzzzzzz 1 a b c"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := decodeIntent(b)
		if err != nil {
			return
		}
		if rec.size < 0 || len(rec.checksum) != len("crc32c:00000000") {
			t.Errorf("accepted %q as %+v", b, rec)
		}
	})
}
