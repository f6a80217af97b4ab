package dist

import "syscall"

// sysProcAttr puts a rank in its own process group (the launcher signals
// the group) and kills it when the launcher dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
