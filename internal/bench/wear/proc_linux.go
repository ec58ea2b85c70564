//go:build linux

package wear

import "syscall"

// sysProcAttr puts a started process in a process group of its own and
// has the kernel SIGKILL it should the harness die without cleaning up
// (e.g. SIGKILLed itself).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
