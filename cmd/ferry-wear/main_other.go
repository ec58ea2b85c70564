//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "ferry-wear: Linux only (it reads /proc/PID/io)")
	os.Exit(2)
}
