// Package fleet holds the fleet test: many ferry gateways uplinking to one
// clustered cloud (a real 3-node NATS JetStream cluster with MQTT, and a
// plain Mosquitto), through a cloud outage and node kills, checked at the
// cloud for completeness (by event ID and by ferry verify's sequence
// check); and the measurements of draining and failing
// over into NATS behind the README's "Running a fleet" figures.
//
// Everything is in _test.go files; see fleet_test.go and drain_test.go.
package fleet
