// Package wire is the engine of `make bench-wire`: how many bytes ferry's
// uplink puts on the wire per sensor reading, MQTT and TLS framing
// included, for each cloud message form.
//
// A realistic sensor stream (Stream: 10 BME280-like sensors, each
// publishing temperature, humidity and pressure every 10 s with the noise
// and resolution such sensors have) goes through the real uplink
// (uplink.Forwarder, QoS 1) to a real Mosquitto, over plain TCP and over
// TLS 1.3, through a counting TCP proxy (Proxy): the bytes it carries in
// each direction after the connection is up are the figure. Each 10 s
// period's events are handed to the uplink at once, so a batched message
// carries one period (30 readings); time is simulated, so an hour of
// readings takes seconds. A subscriber at the broker decodes every message
// (uplink.DecodeEnvelopes) and checks that each reading arrived.
//
// The stream, its randomness and its clock are fixed by a seed, so a run
// is repeatable byte for byte except for what TLS randomises.
package wire
