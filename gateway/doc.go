// Package gateway wires ferry together: the embedded broker ingests into the
// durable buffer, the uplink drains the buffer to the cloud, and the status
// endpoint reports on all three. It owns their lifecycle.
//
// Gateway.Run starts every component under one errgroup; the first to fail
// stops the rest, and Run returns only after every goroutine it started has
// ended and the buffer file is closed. Shutdown order follows from the
// contracts: the broker stops taking PUBLISHes (a refused append is never
// acknowledged), the uplink disconnects, and the buffer commits whatever was
// queued before it closes.
package gateway
