// Package bench is the engine of `ferry bench`: a load generator that can be
// pointed at any MQTT broker (ferry's embedded broker, Mosquitto, a cloud
// broker) to measure how fast and how faithfully it moves messages.
//
// # What it measures
//
// Publish-only mode (Config.Subscribe empty) opens Publishers MQTT
// connections, each publishing Messages messages to <Topic>/<i>, and reports
// throughput and the latency from publish to PUBACK (QoS 1). A publisher keeps
// at most Inflight QoS 1 publishes unacknowledged (1 is stop-and-wait).
//
// With Hold set, every connection stays open and idle (paho's keepalive
// running) for that long after publishing before disconnecting; Messages 0
// only connects and holds, to measure a broker with many idle clients.
//
// End-to-end mode (Config.Subscribe set) additionally subscribes at a second
// broker, typically the cloud side of a ferry gateway or of a Mosquitto
// bridge, and checks what arrives: for every publisher the distinct sequence
// numbers received, duplicates, out-of-order arrivals and acknowledged
// messages that never arrived (lost), plus publish-to-arrival latency.
//
// Every payload starts with a self-delimiting binary header (see HeaderSize)
// carrying a magic prefix, the run ID, publisher index, sequence number,
// send time and a CRC, padded to PayloadSize. The checker finds the header in
// a raw payload (bridged brokers pass payloads unchanged), inside ferry's
// cloud envelope (unwrapped by uplink.DecodeMessage) or, failing both,
// anywhere in the message bytes; anything else, and messages from other runs,
// are counted as ignored, never as errors.
//
// E2E latency compares the sender's wall clock with the receiver's, so it is
// only meaningful when both run on one host or clocks are synchronised.
//
// # Concurrency and memory
//
// Each publisher is a goroutine with its own connection plus a goroutine
// that waits for its acknowledgements in publish order; payload buffers are
// recycled only once paho has released them (after PUBACK for QoS 1, after
// the write for QoS 0). The subscriber handles messages on paho's single
// ordered callback goroutine, so arrival order is preserved. Per publisher,
// acknowledged and received sequence numbers are kept as bitsets (two bits a
// message) and latencies in fixed log-linear histograms (about 1.6%
// resolution), so memory stays bounded for millions of messages.
package bench
