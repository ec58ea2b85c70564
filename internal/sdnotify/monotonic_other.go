//go:build !linux

package sdnotify

// monotonicUsec: systemd runs only on Linux; elsewhere Reloading sends
// RELOADING=1 alone.
func monotonicUsec() (uint64, bool) { return 0, false }
