// Package wear is the engine of `make bench-wear`: how many bytes an edge
// broker makes the kernel write to storage for each sensor reading it
// acknowledges, which is what wears out a Raspberry Pi's SD card.
//
// It starts a cloud Mosquitto and, for each target (ferry with
// ingest.durability sync, batch and none; a Mosquitto edge bridging to the
// cloud with persistence off and on) and each aggregate rate, a fresh edge
// broker on free 127.0.0.1 ports in a temporary directory. Sensors (MQTT
// clients publishing ~50-byte JSON readings at QoS 1, each waiting for its
// PUBACK, phases spread evenly) publish for a warm-up and a measured
// window; the edge process's /proc/PID/io (write_bytes, syscw) and
// /proc/PID/stat (utime+stime) are read at the window's edges, and fsync
// and fdatasync calls are counted by `perf stat` when it works. A
// subscriber at the cloud checks that every PUBACKed reading arrived.
//
// It is a Go program rather than a shell script because the window must be
// cut at the same instants for the kernel's counters and for the PUBACK
// timestamps, the sensors need paced, phase-spread publishing, and the
// delivery check decodes ferry's cloud envelope (uplink.DecodeMessage).
//
// Linux only: it reads /proc.
package wear
