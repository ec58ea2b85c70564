package gateway

import (
	"context"
	"time"

	"github.com/ferrygw/ferry/gateway/opsapi"
)

// logHealth writes one line per interval: link state, backlog and rates.
// One line per interval, whatever happens, is the rate limit: a flapping
// link cannot fill the SD card with it.
func (g *Gateway) logHealth(ctx context.Context) error {
	cfg, _ := g.current()
	t := time.NewTicker(cfg.Status.LogInterval)
	defer t.Stop()
	var lastIngested, lastForwarded uint64
	last := g.now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		st := g.Status()
		now := g.now()
		secs := now.Sub(last).Seconds()
		last = now
		var events, bytes int64
		var oldest opsapi.Duration
		var drops uint64
		for _, s := range st.Streams {
			events += s.Events
			bytes += s.Bytes
			oldest = max(oldest, s.OldestAge)
			for _, n := range s.Drops {
				drops += n
			}
		}
		attrs := []any{
			"backlog_events", events, "backlog_bytes", bytes, "oldest", time.Duration(oldest).String(),
			"ingest_per_s", rate(st.Ingest.Ingested, &lastIngested, secs),
			"clients", st.Ingest.Clients, "refused", st.Ingest.Refused, "dropped", drops,
		}
		if st.Link != nil {
			state := "down"
			if st.Link.Connected {
				state = "up"
			}
			attrs = append(attrs, "link", state, "endpoint", st.Link.Endpoint,
				"forward_per_s", rate(st.Link.ForwardedEvents, &lastForwarded, secs),
				"reconnects", st.Link.Reconnects)
			if !st.Link.Connected && st.Link.LastError != "" {
				attrs = append(attrs, "last_error", st.Link.LastError)
			}
		}
		g.log.Info("health", attrs...)
	}
}

func rate(total uint64, last *uint64, secs float64) float64 {
	d := total - *last
	*last = total
	if secs <= 0 {
		return 0
	}
	return float64(int(float64(d)/secs*10)) / 10
}
