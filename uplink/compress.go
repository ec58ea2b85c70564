package uplink

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Compression is how cloud messages are compressed.
type Compression string

// Compressions.
const (
	// CompressionNone sends messages as they are.
	CompressionNone Compression = "none"
	// CompressionZstd sends a batch or SenML pack that is at least
	// MinCompressBytes long as its zstd frame (RFC 8878) when that is
	// smaller; single envelopes go as they are. See "Compression" in the
	// package doc.
	CompressionZstd Compression = "zstd"
)

// zstdMagic starts every zstd frame (RFC 8878 §3.1.1). No uncompressed
// message starts with it: 0x28 is '(' in JSON, which no JSON value starts
// with, and a negative integer in CBOR, where messages are arrays.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

const (
	// MaxDecompressedBytes bounds what DecodeEnvelopes inflates a
	// compressed message to (a zstd bomb is refused, not allocated); the
	// forwarder never compresses a larger message.
	MaxDecompressedBytes = 4 << 20
	// MinCompressBytes is the smallest message the forwarder compresses:
	// below it the frame's own 6 to 9 bytes eat the gain.
	MinCompressBytes = 64
)

// IsCompressed reports whether msg is a compressed message (a zstd frame).
func IsCompressed(msg []byte) bool { return bytes.HasPrefix(msg, zstdMagic) }

// Compressor compresses cloud messages with zstd. It keeps one encoder
// (with its tables, a few hundred KiB) for its life. It is safe for
// concurrent use.
type Compressor struct {
	enc *zstd.Encoder
}

// NewCompressor returns a Compressor. Frames carry their content size and
// no checksum (MQTT runs over TCP or TLS, which check the bytes already):
// the smallest frames for short messages.
func NewCompressor() (*Compressor, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false),
		zstd.WithSingleSegment(true),
		zstd.WithLowerEncoderMem(true),
		zstd.WithWindowSize(1<<17),
	)
	if err != nil {
		return nil, fmt.Errorf("uplink: zstd encoder: %w", err)
	}
	return &Compressor{enc: enc}, nil
}

// Append appends the zstd frame of msg to dst.
func (c *Compressor) Append(dst, msg []byte) []byte { return c.enc.EncodeAll(msg, dst) }

// Compress appends msg to dst compressed when that pays: when msg is
// between MinCompressBytes and MaxDecompressedBytes long and its frame is
// smaller; otherwise it returns dst unchanged and false.
func (c *Compressor) Compress(dst, msg []byte) ([]byte, bool) {
	if len(msg) < MinCompressBytes || len(msg) > MaxDecompressedBytes {
		return dst, false
	}
	start := len(dst)
	out := c.enc.EncodeAll(msg, dst)
	if len(out)-start >= len(msg) {
		return out[:start], false
	}
	return out, true
}

// zstdDecoder is the shared decoder of DecodeEnvelopes: bounded output,
// concurrent use.
var zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderMaxMemory(MaxDecompressedBytes),
		zstd.WithDecoderMaxWindow(MaxDecompressedBytes),
		zstd.WithDecoderLowmem(true),
	)
})

// decompress inflates a compressed message, bounded by MaxDecompressedBytes.
func decompress(msg []byte) ([]byte, error) {
	d, err := zstdDecoder()
	if err != nil {
		return nil, fmt.Errorf("uplink: zstd decoder: %w", err)
	}
	out, err := d.DecodeAll(msg, nil)
	if err != nil {
		return nil, malformed("zstd: %v", err)
	}
	return out, nil
}

// Decompress returns the message a compressed message carries, bounded by
// MaxDecompressedBytes; msg itself when it is not compressed.
func Decompress(msg []byte) ([]byte, error) {
	if !IsCompressed(msg) {
		return msg, nil
	}
	return decompress(msg)
}
