package drivers

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// checkOptions rejects every option set in o that kind does not take,
// naming its YAML key: an option that does not apply is a config mistake,
// never silently ignored. (An option set to its zero value looks unset.)
func checkOptions(kind string, o Options, allowed ...string) error {
	v := reflect.ValueOf(o)
	t := v.Type()
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if !v.Field(i).IsZero() && !slices.Contains(allowed, key) {
			return fmt.Errorf("%w: option %q does not apply to %s", ErrOption, key, kind)
		}
	}
	return nil
}

// sleepCtx waits for d or until ctx ends, returning ctx's error then.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
