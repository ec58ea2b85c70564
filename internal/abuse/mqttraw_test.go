package abuse

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The attacker speaks raw MQTT: paho cannot send half a CONNECT, drop a
// connection without DISCONNECT (for the will), or set topic aliases.

// MQTT packet types (high nibble of the fixed header).
const (
	ptConnect    = 1
	ptConnack    = 2
	ptPublish    = 3
	ptPuback     = 4
	ptSubscribe  = 8
	ptSuback     = 9
	ptDisconnect = 14
)

// errBigPacket: the gateway sent a packet larger than the attacker reads.
var errBigPacket = errors.New("abuse: packet too large")

func appendVarint(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func packet(hdr byte, body []byte) []byte {
	return append(appendVarint([]byte{hdr}, len(body)), body...)
}

// connectOpts is one CONNECT.
type connectOpts struct {
	v5          bool
	clientID    string
	user, pass  string
	clean       bool
	expiry      uint32 // v5 session expiry interval, seconds
	keepalive   uint16
	willTopic   string
	willPayload []byte
	willRetain  bool
	willQoS     byte
}

func connectPacket(o connectOpts) []byte {
	b := appendStr(nil, "MQTT")
	level := byte(4)
	if o.v5 {
		level = 5
	}
	b = append(b, level)
	var flags byte
	if o.user != "" {
		flags |= 0x80
	}
	if o.pass != "" {
		flags |= 0x40
	}
	if o.willTopic != "" {
		flags |= 0x04 | o.willQoS<<3
		if o.willRetain {
			flags |= 0x20
		}
	}
	if o.clean {
		flags |= 0x02
	}
	ka := o.keepalive
	if ka == 0 {
		ka = 60
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint16(b, ka)
	if o.v5 {
		if o.expiry > 0 {
			b = append(b, 5, 0x11)
			b = binary.BigEndian.AppendUint32(b, o.expiry)
		} else {
			b = append(b, 0)
		}
	}
	b = appendStr(b, o.clientID)
	if o.willTopic != "" {
		if o.v5 {
			b = append(b, 0)
		}
		b = appendStr(b, o.willTopic)
		b = appendStr(b, string(o.willPayload))
	}
	if o.user != "" {
		b = appendStr(b, o.user)
	}
	if o.pass != "" {
		b = appendStr(b, o.pass)
	}
	return packet(ptConnect<<4, b)
}

func publishPacket(v5 bool, topic string, payload []byte, qos byte, retain bool, pid, alias uint16) []byte {
	hdr := byte(ptPublish<<4) | qos<<1
	if retain {
		hdr |= 1
	}
	b := appendStr(nil, topic)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, pid)
	}
	if v5 {
		if alias > 0 {
			b = append(b, 3, 0x23)
			b = binary.BigEndian.AppendUint16(b, alias)
		} else {
			b = append(b, 0)
		}
	}
	return packet(hdr, append(b, payload...))
}

func subscribePacket(v5 bool, pid uint16, filters ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, pid)
	if v5 {
		b = append(b, 0)
	}
	for _, f := range filters {
		b = appendStr(b, f)
		b = append(b, 1) // QoS 1
	}
	return packet(ptSubscribe<<4|2, b)
}

// rawPub is a PUBLISH the attacker received.
type rawPub struct {
	topic   string
	payload []byte
}

// rawClient is one attacker connection.
type rawClient struct {
	c    net.Conn
	r    *bufio.Reader
	v5   bool
	pubs []rawPub // PUBLISHes read while waiting for something else
	// connackProps are the MQTT 5 CONNACK's integer properties by
	// identifier (0x11: session expiry interval the server grants).
	connackProps map[byte]uint32
}

// dialRaw connects to addr, from local (an IP such as 127.0.0.2) if set.
func dialRaw(addr, local string) (*rawClient, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &rawClient{c: c, r: bufio.NewReader(c)}, nil
}

func (c *rawClient) write(b []byte) error {
	_ = c.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.c.Write(b)
	return err
}

// read reads one packet within timeout; bodies over 1 MiB are an error
// (the attacker must not be the one running out of memory).
func (c *rawClient) read(timeout time.Duration) (hdr byte, body []byte, err error) {
	_ = c.c.SetReadDeadline(time.Now().Add(timeout))
	hdr, err = c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		d, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		mul *= 128
		if d&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, fmt.Errorf("abuse: bad remaining length")
		}
	}
	if n > 1<<20 {
		return 0, nil, errBigPacket
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, nil, err
	}
	if hdr>>4 == ptPublish {
		c.notePublish(hdr, body)
	}
	return hdr, body, nil
}

// notePublish records a received PUBLISH and acknowledges QoS 1.
func (c *rawClient) notePublish(hdr byte, body []byte) {
	if len(body) < 2 {
		return
	}
	tl := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+tl {
		return
	}
	p := rawPub{topic: string(body[2 : 2+tl])}
	rest := body[2+tl:]
	if q := (hdr >> 1) & 3; q > 0 && len(rest) >= 2 {
		_ = c.write(packet(ptPuback<<4, rest[:2]))
		rest = rest[2:]
	}
	if c.v5 {
		if pl, w := readVarint(rest); w > 0 && w+pl <= len(rest) {
			rest = rest[w+pl:]
		}
	}
	p.payload = append([]byte(nil), rest...)
	c.pubs = append(c.pubs, p)
}

func readVarint(b []byte) (n, width int) {
	mul := 1
	for i := 0; i < len(b) && i < 4; i++ {
		n += int(b[i]&0x7f) * mul
		mul *= 128
		if b[i]&0x80 == 0 {
			return n, i + 1
		}
	}
	return 0, 0
}

// waitFor reads until a packet of type pt arrives.
func (c *rawClient) waitFor(pt byte, timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("abuse: no packet type %d within %v", pt, timeout)
		}
		hdr, body, err := c.read(left)
		if err != nil {
			return nil, err
		}
		if hdr>>4 == pt {
			return body, nil
		}
	}
}

// connect sends o and returns the CONNACK's session-present flag and
// reason code (v3: return code).
func (c *rawClient) connect(o connectOpts) (present bool, code byte, err error) {
	c.v5 = o.v5
	if err := c.write(connectPacket(o)); err != nil {
		return false, 0, err
	}
	body, err := c.waitFor(ptConnack, 10*time.Second)
	if err != nil {
		return false, 0, err
	}
	if len(body) < 2 {
		return false, 0, fmt.Errorf("abuse: short CONNACK")
	}
	if c.v5 && len(body) > 2 {
		c.connackProps = intProps(body[2:])
	}
	return body[0]&1 == 1, body[1], nil
}

// intProps decodes MQTT 5 properties (length first), keeping the integer
// ones; it stops at anything it cannot decode.
func intProps(b []byte) map[byte]uint32 {
	out := map[byte]uint32{}
	n, w := readVarint(b)
	if w == 0 || w+n > len(b) {
		return out
	}
	b = b[w : w+n]
	for len(b) > 0 {
		id := b[0]
		b = b[1:]
		size := 0
		switch id {
		case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A: // byte
			size = 1
		case 0x13, 0x21, 0x22, 0x23: // two-byte integer
			size = 2
		case 0x02, 0x11, 0x18, 0x27: // four-byte integer
			size = 4
		case 0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F: // string or binary
			if len(b) < 2 {
				return out
			}
			size = 2 + int(binary.BigEndian.Uint16(b))
		case 0x26: // string pair
			if len(b) < 2 {
				return out
			}
			k := 2 + int(binary.BigEndian.Uint16(b))
			if len(b) < k+2 {
				return out
			}
			size = k + 2 + int(binary.BigEndian.Uint16(b[k:]))
		default:
			return out
		}
		if len(b) < size {
			return out
		}
		switch size {
		case 1:
			out[id] = uint32(b[0])
		case 2:
			out[id] = uint32(binary.BigEndian.Uint16(b))
		case 4:
			out[id] = binary.BigEndian.Uint32(b)
		}
		b = b[size:]
	}
	return out
}

// publishQoS1 publishes and waits for the PUBACK; the reason code (0 on
// MQTT 3.1.1, which has none).
func (c *rawClient) publishQoS1(topic string, payload []byte, retain bool, pid, alias uint16) (byte, error) {
	if err := c.write(publishPacket(c.v5, topic, payload, 1, retain, pid, alias)); err != nil {
		return 0, err
	}
	for {
		body, err := c.waitFor(ptPuback, 10*time.Second)
		if err != nil {
			return 0, err
		}
		if len(body) < 2 || binary.BigEndian.Uint16(body) != pid {
			continue
		}
		if len(body) > 2 {
			return body[2], nil
		}
		return 0, nil
	}
}

// subscribe returns the SUBACK's reason codes, one per filter.
func (c *rawClient) subscribe(pid uint16, filters ...string) ([]byte, error) {
	if err := c.write(subscribePacket(c.v5, pid, filters...)); err != nil {
		return nil, err
	}
	body, err := c.waitFor(ptSuback, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if len(body) < 2 {
		return nil, fmt.Errorf("abuse: short SUBACK")
	}
	body = body[2:]
	if c.v5 {
		pl, w := readVarint(body)
		if w == 0 || w+pl > len(body) {
			return nil, fmt.Errorf("abuse: bad SUBACK properties")
		}
		body = body[w+pl:]
	}
	return body, nil
}

// drain reads for d and returns every PUBLISH received so far.
func (c *rawClient) drain(d time.Duration) []rawPub {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, _, err := c.read(time.Until(deadline)); err != nil {
			break
		}
	}
	return c.pubs
}

// disconnect ends the session politely (no will).
func (c *rawClient) disconnect() {
	_ = c.write([]byte{ptDisconnect << 4, 0})
	_ = c.c.Close()
}

// drop closes the TCP connection without DISCONNECT (the will fires).
func (c *rawClient) drop() { _ = c.c.Close() }
