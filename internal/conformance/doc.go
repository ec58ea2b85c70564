// Package conformance drives ferry's embedded MQTT broker with real
// third-party clients and raw packets, each case run the same way against
// Debian's Mosquitto as the reference (issue 13).
//
// The package has tests only. Each case is a table over two brokers:
// ferry's (gateway/broker, in-process, as the gateway configures it: every
// topic routed into an event log, the config's default packet size, the
// broker's default limits) and Mosquitto 2.0.11 on a free loopback port.
// The clients are Debian's mosquitto_pub and mosquitto_sub (-V mqttv311
// and -V mqttv5), Python paho-mqtt 1.6.1 (Debian's python3-paho-mqtt;
// testdata/paho_client.py), MQTT.js 5 over TCP and, against ferry only,
// websocket (testdata/mqttjs; `npm ci` from its package-lock.json into the
// user's cache directory on first use), and a raw client built on mochi's
// packet codec for the error cases and for what the real clients do not
// show (exact reason codes, properties, aliases).
//
// Where Mosquitto behaves differently on purpose, the test checks each
// broker's own behaviour and README.md ("What differs from Mosquitto and
// why") says why. Under CI=true a missing tool (mosquitto, its clients,
// python3-paho-mqtt, node or npm) fails the test; otherwise the test is
// skipped. Every wait has a deadline; a fixed wait only ever shows that
// something does not happen.
package conformance
