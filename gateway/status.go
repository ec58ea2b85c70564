package gateway

import (
	"time"

	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/opsapi"
	"github.com/ferrygw/ferry/gateway/outbox"
	"github.com/ferrygw/ferry/gateway/rules"
	"github.com/ferrygw/ferry/uplink"
)

// The gateway is what the status listener reports on and operates.
var (
	_ opsapi.Reporter  = (*Gateway)(nil)
	_ opsapi.Operator  = (*Gateway)(nil)
	_ opsapi.Readiness = (*Gateway)(nil)
)

// Status reports the gateway's state: what GET /status returns.
func (g *Gateway) Status() opsapi.Status {
	now := g.now()
	cfg, p := g.current()
	st := opsapi.Status{
		GatewayID:   cfg.GatewayID,
		Ingest:      g.broker.Stats(),
		DiskFull:    g.buf.DiskFull(),
		Quarantined: g.buf.Quarantined(),
		Listener:    opsapi.ListenerStats{MaxConns: opsapi.StatusMaxConns}, // status listener off
	}
	if g.ops != nil {
		st.Listener = g.ops.ListenerStats()
	}
	if started := g.started.Load(); started != 0 {
		st.Uptime = opsapi.Duration(now.Sub(time.Unix(0, started)).Round(time.Second))
	}
	if p.fwd != nil {
		ls := p.fwd.Status()
		st.Link = &ls
	}
	if p.dl != nil {
		ds := p.dl.deliver.Stats()
		st.Downlink = &opsapi.DownlinkStatus{Status: p.dl.client.Status(),
			Delivered: ds.Delivered, Expired: ds.Expired, Failed: ds.Failed, ConfigVersion: g.configVersion.Load()}
	}
	var total time.Duration
	st.Commits, total = g.buf.CommitStats()
	if st.Commits > 0 {
		st.CommitAvg = opsapi.Duration(total / time.Duration(st.Commits))
	}
	for _, r := range p.runners {
		st.Pipelines = append(st.Pipelines, r.Stats())
	}
	st.Alerts = g.alerts.list()
	if p.sched != nil {
		st.Drivers = p.sched.Stats()
	}
	for _, s := range g.buf.Stats() {
		ss := opsapi.StreamStatus{StreamStats: s}
		if !s.Oldest.IsZero() && s.Events > 0 {
			ss.OldestAge = opsapi.Duration(now.Sub(s.Oldest).Round(time.Millisecond))
		}
		st.Streams = append(st.Streams, ss)
	}
	return st
}

// BufferStats reports every stream of the log with its consumers'
// positions: what GET /buffer/stats returns.
func (g *Gateway) BufferStats() []opsapi.BufferStream {
	cfg, _ := g.current()
	now := g.now()
	stats := g.buf.Stats()
	out := make([]opsapi.BufferStream, 0, len(stats))
	for _, s := range stats {
		bs := opsapi.BufferStream{StreamStatus: opsapi.StreamStatus{StreamStats: s}, Forwarded: cfg.Forwarded(s.Name)}
		if !s.Oldest.IsZero() && s.Events > 0 {
			bs.OldestAge = opsapi.Duration(now.Sub(s.Oldest).Round(time.Millisecond))
		}
		consumers := map[string]uint64{}
		if bs.Forwarded || (!config.IsOutbox(s.Name) && g.buf.Position(s.Name, uplink.Consumer) > 0) {
			consumers[uplink.Consumer] = g.buf.Position(s.Name, uplink.Consumer)
		}
		if config.IsOutbox(s.Name) {
			consumers[outbox.Consumer] = g.buf.Position(s.Name, outbox.Consumer)
		}
		for _, name := range cfg.PipelinesReading(s.Name) {
			c := rules.ConsumerName(name)
			consumers[c] = g.buf.Position(s.Name, c)
		}
		if len(consumers) > 0 {
			bs.Consumers = consumers
		}
		out = append(out, bs)
	}
	return out
}

// DeadLetters returns the newest n (default 20, at most
// opsapi.DeadLettersMax) dead letters, oldest first; see DeadLetterPage.
func (g *Gateway) DeadLetters(n int) []opsapi.DeadLetter {
	out, _ := g.DeadLetterPage(-1, n)
	return out
}

// DeadLetterPage returns a page of the dead-letter stream in force (see
// opsapi.ReadDeadLetters): what GET /deadletters returns.
func (g *Gateway) DeadLetterPage(from int64, n int) (page []opsapi.DeadLetter, next uint64) {
	cfg, _ := g.current()
	return opsapi.ReadDeadLetters(g.buf, cfg.DeadLetters.Stream, from, n)
}
