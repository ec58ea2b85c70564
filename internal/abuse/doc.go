// Package abuse holds `make test-abuse`: a black-box suite that attacks the
// real ferry binary the way issue 12 did and checks that it holds.
//
// Nothing of ferry's internals is used. Users (sensor1, dash, mallory,
// actuator) are made once with `ferry passwd`; each subtest starts its own
// `ferry run` on a config with the ACL (dash may subscribe sensors/#; everyone may
// publish sensors/%u/# and subscribe cmd/%c and sensors/%u/#) and the
// DEFAULT limits, a real Mosquitto as the cloud, and a legitimate sensor
// publishing QoS 1 readings with sequence numbers throughout. Then one
// attack per subtest, as mallory or unauthenticated, over raw MQTT packets
// and HTTP:
//
//   - past the ACL: a will to a forbidden topic (and a retained one), a
//     topic alias set on a denied publish, client-ID takeover of a live
//     session and of an offline persistent one, queued messages and a will
//     after a reload took the right away, a user named "%c", 20 concurrent
//     correct logins from one address, subscriptions to #, $SYS/# and
//     $share/... (and those refused ones after a restart);
//   - stopping the uplink: poison client IDs ("evil\x01", U+FFFF, DEL and
//     65,530 bytes) in a cloud topic template that contains {source};
//   - memory and disk: CONNECTs declaring 262,143 bytes, offline persistent
//     sessions with queued messages (and a restart), a subscription flood,
//     a retained flood, undecodable payloads into a JSON pipeline and then
//     GET /deadletters?n=1000, ACL-denied big publishes with a new client
//     ID each (log size), a 10 MB config through `ferry check` and POST
//     /reload, idle keep-alive HTTP connections and SSE clients that never
//     read, one source flooding a shared drop_oldest stream while the cloud
//     is down, Host: rebind.evil.example on every data endpoint;
//   - what held before: mutated and malformed packets, brute force from one
//     address.
//
// After every attack each subtest asserts that ferry is alive, that its
// peak anonymous resident memory (RssAnon, sampled every 50 ms; VmHWM,
// which adds bbolt's mapped file pages, is reported beside it) stayed
// within 64 MiB with the default budget, that every
// reading the sensor got a PUBACK for reached the cloud in order, that no
// watcher (the actuator on cmd/actuator-1, dash on sensors/sensor1/#) and
// not the cloud received a message the ACL denies, and the attack's own
// refusal (reason code, HTTP status, bounded file).
//
// FERRY_ABUSE_BIN=path attacks another build (an older commit's, to see the
// suite fail without a fix). The package has no non-test code; this file
// is its documentation.
package abuse
