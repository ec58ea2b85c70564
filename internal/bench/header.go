package bench

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Header layout, big-endian, at the start of every bench payload:
//
//	0  magic    4 bytes  0xFF 'F' 'B' 'H'
//	4  version  1 byte   1
//	5  run ID   8 bytes  random per run
//	13 pub      uint32   publisher index
//	17 seq      uint32   sequence number within the publisher
//	21 sent     int64    send time, Unix nanoseconds
//	29 crc      uint32   CRC-32C of bytes 0..28
//
// The first byte 0xFF can start neither a JSON text nor a CBOR data item, so
// a raw bench payload is never mistaken for an envelope and vice versa; the
// CRC makes a false match inside other bytes vanishingly unlikely.
const (
	// HeaderSize is the size of the bench header, the smallest payload.
	HeaderSize = 33

	headerVersion = 1
	crcOffset     = 29
)

var (
	magic     = [4]byte{0xFF, 'F', 'B', 'H'}
	castagnol = crc32.MakeTable(crc32.Castagnoli)
)

// RunID identifies one run; messages carrying another run's ID are ignored.
type RunID [8]byte

// String returns the run ID in hex.
func (id RunID) String() string { return fmt.Sprintf("%x", id[:]) }

func newRunID() (RunID, error) {
	var id RunID
	if _, err := rand.Read(id[:]); err != nil {
		return id, fmt.Errorf("bench: run id: %w", err)
	}
	return id, nil
}

// header is the decoded bench header.
type header struct {
	run  RunID
	pub  uint32
	seq  uint32
	sent int64
}

// newPayload returns a payload buffer of size bytes with the padding filled
// in; putHeader then only rewrites the first HeaderSize bytes.
func newPayload(size int) []byte {
	b := make([]byte, size)
	for i := HeaderSize; i < size; i++ {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// putHeader writes h at the start of b, which holds at least HeaderSize
// bytes.
func putHeader(b []byte, h header) {
	_ = b[HeaderSize-1]
	copy(b[0:4], magic[:])
	b[4] = headerVersion
	copy(b[5:13], h.run[:])
	binary.BigEndian.PutUint32(b[13:17], h.pub)
	binary.BigEndian.PutUint32(b[17:21], h.seq)
	binary.BigEndian.PutUint64(b[21:29], uint64(h.sent))
	binary.BigEndian.PutUint32(b[crcOffset:HeaderSize], crc32.Checksum(b[:crcOffset], castagnol))
}

// parseHeader decodes a header at the start of b.
func parseHeader(b []byte) (header, bool) {
	if len(b) < HeaderSize || !bytes.Equal(b[0:4], magic[:]) || b[4] != headerVersion {
		return header{}, false
	}
	if binary.BigEndian.Uint32(b[crcOffset:HeaderSize]) != crc32.Checksum(b[:crcOffset], castagnol) {
		return header{}, false
	}
	var h header
	copy(h.run[:], b[5:13])
	h.pub = binary.BigEndian.Uint32(b[13:17])
	h.seq = binary.BigEndian.Uint32(b[17:21])
	h.sent = int64(binary.BigEndian.Uint64(b[21:29]))
	return h, true
}

// findHeaders appends to dst every bench header found in a message as it
// arrived at the cloud: the raw payload first, then the payloads unwrap
// extracts from an envelope, then a scan of the bytes for embedded headers
// (e.g. CBOR byte strings in an envelope unwrap does not know).
func findHeaders(dst []header, msg []byte, unwrap func([]byte) [][]byte) []header {
	if h, ok := parseHeader(msg); ok {
		return append(dst, h)
	}
	if unwrap != nil {
		if payloads := unwrap(msg); payloads != nil {
			for _, p := range payloads {
				if h, ok := parseHeader(p); ok {
					dst = append(dst, h)
				}
			}
			return dst
		}
	}
	for rest := msg; len(rest) >= HeaderSize; {
		i := bytes.Index(rest, magic[:])
		if i < 0 {
			break
		}
		if h, ok := parseHeader(rest[i:]); ok {
			dst = append(dst, h)
			rest = rest[i+HeaderSize:]
		} else {
			rest = rest[i+1:]
		}
	}
	return dst
}
