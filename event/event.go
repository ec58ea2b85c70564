package event

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Event is one reading or message accepted by the gateway.
type Event struct {
	// ID is stable for the life of the event: it is assigned once at ingest
	// and travels with every copy, so the cloud side can drop duplicates.
	ID ID
	// Stream names the log the event is kept in and forwarded from.
	Stream string
	// Source identifies the producer: the MQTT client ID or a driver name.
	Source string
	// Topic is the MQTT topic the event was published on, if any.
	Topic string
	// Time is when the gateway accepted the event.
	Time time.Time
	// ContentType is a MIME type (e.g. "application/json"), or empty.
	ContentType string
	// Payload is the event body, uninterpreted.
	Payload []byte
	// Attrs are small string annotations (units, MQTT user properties).
	Attrs map[string]string
}

// ID is a 128-bit event identifier laid out as a ULID: 48 bits of Unix
// milliseconds followed by 80 random bits, so IDs sort by creation time and
// collide with negligible probability across a fleet.
type ID [16]byte

// crockford is the ULID base32 alphabet.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns an ID for time t with randomness read from r (crypto/rand
// when r is nil). Passing r in keeps tests deterministic.
func NewID(t time.Time, r io.Reader) (ID, error) {
	var id ID
	ms := uint64(t.UnixMilli())
	id[0] = byte(ms >> 40)
	id[1] = byte(ms >> 32)
	binary.BigEndian.PutUint32(id[2:6], uint32(ms))
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, id[6:]); err != nil {
		return ID{}, fmt.Errorf("event id: %w", err)
	}
	return id, nil
}

// Time returns the millisecond timestamp embedded in the ID.
func (id ID) Time() time.Time {
	ms := uint64(id[0])<<40 | uint64(id[1])<<32 | uint64(binary.BigEndian.Uint32(id[2:6]))
	return time.UnixMilli(int64(ms))
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// String returns the 26-character ULID text form.
func (id ID) String() string {
	var b [26]byte
	id.encode(&b)
	return string(b[:])
}

// AppendText appends the ULID text form to dst without allocating.
func (id ID) AppendText(dst []byte) []byte {
	var b [26]byte
	id.encode(&b)
	return append(dst, b[:]...)
}

func (id ID) encode(b *[26]byte) {
	// 128 bits as 26 base32 digits: the first digit carries the top 3 bits.
	hi := binary.BigEndian.Uint64(id[:8])
	lo := binary.BigEndian.Uint64(id[8:])
	for i := 25; i >= 0; i-- {
		b[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
}

// ErrBadID is returned by ParseID for text that is not a ULID.
var ErrBadID = errors.New("event: malformed id")

// ParseID parses the 26-character text form.
func ParseID(s string) (ID, error) {
	if len(s) != 26 || s[0] > '7' {
		return ID{}, ErrBadID
	}
	var hi, lo uint64
	for i := 0; i < 26; i++ {
		v := decodeDigit(s[i])
		if v < 0 {
			return ID{}, ErrBadID
		}
		hi = hi<<5 | lo>>59
		lo = lo<<5 | uint64(v)
	}
	var id ID
	binary.BigEndian.PutUint64(id[:8], hi)
	binary.BigEndian.PutUint64(id[8:], lo)
	return id, nil
}

func decodeDigit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'z':
		c -= 'a' - 'A'
	}
	for i := 10; i < 32; i++ {
		if crockford[i] == c {
			return i
		}
	}
	return -1
}
