package fetcher

import "syscall"

// setDeathSignal has Linux kill the go command when the server dies, even
// by SIGKILL; its git children then lose their pipes and exit too.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
