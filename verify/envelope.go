package verify

import "github.com/ferrygw/ferry/uplink"

// Envelope is one event as a cloud message carries it, with the fields
// the gateway adds for the cloud (sequence, epoch, gap, replay): what
// uplink.DecodeEnvelopes returns.
type Envelope = uplink.Envelope

// Gap is an announced drop: Dropped offsets before the event carrying it,
// deleted by the gateway's policy, with how many for each reason.
type Gap = uplink.Gap

// maxReasons is the most drop reasons a stream's counts keep.
const maxReasons = 16
