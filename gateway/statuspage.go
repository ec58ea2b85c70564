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
//
// The page and its stream are behind hostGuard (ops.go): they show the
// gateway's status. An event stream (GET /events, one of 8 slots) ends
// after SSEMaxLifetime (serveStream), so a client that stopped reading
// gives its slot back.
func (g *Gateway) statusPage(ctx context.Context) http.Handler {
	page := statuspage.Handler(ctx, func() any { return g.Status() }, statuspage.Options{})
	return hostGuard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/events" {
			g.serveStream(page, w, r)
			return
		}
		page.ServeHTTP(w, r)
	}))
}
