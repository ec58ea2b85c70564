package gateway

import (
	"context"
	"net/http"

	"github.com/ferrygw/ferry/gateway/statuspage"
)

// statusPage is the browser page on the status listener: "/", its files and
// its live event stream (see package statuspage), drawn from Status. The
// streams end with ctx, which ends before serveStatus shuts the server
// down, so an open browser tab does not hold Shutdown to its timeout.
func (g *Gateway) statusPage(ctx context.Context) http.Handler {
	return statuspage.Handler(ctx, func() any { return g.Status() }, statuspage.Options{})
}
