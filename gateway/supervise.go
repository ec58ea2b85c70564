package gateway

import (
	"context"
	"fmt"
	"log/slog"

	"golang.org/x/sync/errgroup"
)

// component is a named part of the gateway that runs until its context
// ends: the broker, the status listener, the uplink, a pipeline, ...
type component struct {
	name string
	run  func(ctx context.Context) error
}

// supervise runs comps, each in a goroutine of its own, until ctx ends or
// one of them fails. The first to return an error while ctx is still live
// is logged once, with its name, where it happened, and stops the others.
// supervise returns after every component has returned: that failure,
// named, or else the first error a component returned after ctx ended.
// Gateway.Run supervises the components that live as long as the gateway,
// and runParts the replaceable parts, once per configuration.
func supervise(ctx context.Context, log *slog.Logger, comps []component) error {
	eg, ctx := errgroup.WithContext(ctx)
	for _, c := range comps {
		eg.Go(func() error {
			err := c.run(ctx)
			if err != nil && ctx.Err() == nil {
				log.Error("component failed; stopping the gateway", "component", c.name, "err", err)
				return fmt.Errorf("%s: %w", c.name, err)
			}
			return err
		})
	}
	return eg.Wait()
}
