package gateway

import (
	"context"
	"time"

	"github.com/ferrygw/ferry/internal/sdnotify"
)

// notifySystemd tells systemd (Type=notify) when the gateway is ready and
// keeps its watchdog fed while the gateway stays ready, so a wedged
// gateway is restarted. Without NOTIFY_SOCKET every call is a no-op.
func (g *Gateway) notifySystemd(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for g.Ready() != nil {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
	if err := sdnotify.Ready(); err != nil {
		g.log.Warn("cannot notify systemd", "err", err)
	}
	if err := sdnotify.RunWatchdog(ctx, func() bool { return g.Ready() == nil }); err != nil {
		// Not a reason to stop the gateway: without pings systemd
		// restarts it if a watchdog is set, which says the same.
		g.log.Warn("cannot feed the systemd watchdog", "err", err)
		<-ctx.Done()
	}
	_ = sdnotify.Stopping()
	return nil
}
