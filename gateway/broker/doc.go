// Package broker runs ferry's embedded MQTT broker (mochi-mqtt v2) and turns
// every PUBLISH whose topic matches an ingest route into an event in the
// durable log.
//
// Durability contract: mochi calls OnPublish inside the publishing client's
// read loop, before it writes the PUBACK (QoS 1) or PUBREC (QoS 2). The ingest
// hook appends the event there and waits for the log's answer, so with the
// log's sync durability the acknowledgement leaves only after the event is on
// disk. The wait is for that event's own group commit: it delays exactly that
// client's acknowledgement, and other clients' read loops run on. When the
// log refuses an event (stream full with the reject policy, disk below its
// watermark) the client is told on MQTT 5 (PUBACK reason 0x97, quota
// exceeded) and, on MQTT 3.1.1, gets no acknowledgement, so it resends later;
// the message is not delivered to local subscribers either.
//
// Local subscribers receive matching messages live, as from any broker.
// Messages published by the broker's inline client (the gateway itself) are
// not ingested, so a republish cannot loop back into the log.
package broker
