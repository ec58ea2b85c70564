package bench

import "github.com/ferrygw/ferry/uplink"

// defaultUnwrap extracts the event payloads from a ferry cloud envelope
// (JSON or CBOR, single or batched) with uplink.DecodeMessage; it returns
// nil when b is not an envelope.
func defaultUnwrap(b []byte) [][]byte {
	evs, err := uplink.DecodeMessage(b)
	if err != nil {
		return nil
	}
	out := make([][]byte, len(evs))
	for i := range evs {
		out[i] = evs[i].Payload
	}
	return out
}
