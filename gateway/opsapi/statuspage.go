package opsapi

import (
	"context"
	"net/http"

	"github.com/ferrygw/ferry/gateway/statuspage"
)

// statusPage is the browser page on the status listener: "/", its files and
// its live event stream (see package statuspage), drawn from
// Reporter.Status. The streams end with ctx, which ends before Run shuts
// the server down, so an open browser tab does not hold Shutdown to its
// timeout.
//
// The page and its stream are behind hostGuard (ops.go): they show the
// gateway's status. An event stream (GET /events, one of 8 slots) ends
// after Config.StreamLifetime (serveStream), so a client that stopped
// reading gives its slot back.
func (s *Server) statusPage(ctx context.Context) http.Handler {
	page := statuspage.Handler(ctx, func() any { return s.cfg.Reporter.Status() }, statuspage.Options{})
	return hostGuard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/events" {
			s.serveStream(page, w, r)
			return
		}
		page.ServeHTTP(w, r)
	}))
}
