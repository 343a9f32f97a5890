//go:build unix

package fetcher

import (
	"os/exec"
	"syscall"
)

// procGroup runs a go command in a process group of its own, so that the
// command and the git processes it starts are killed together.
type procGroup struct{ cmd *exec.Cmd }

// newProcGroup prepares cmd; call started after cmd.Start and release
// after cmd.Wait.
func newProcGroup(cmd *exec.Cmd) *procGroup {
	g := &procGroup{cmd: cmd}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(cmd.SysProcAttr)
	cmd.Cancel = func() error { g.kill(); return nil }
	return g
}

func (g *procGroup) started() {}

// kill ends every process of the group.
func (g *procGroup) kill() {
	if p := g.cmd.Process; p != nil {
		syscall.Kill(-p.Pid, syscall.SIGKILL)
	}
}

// release kills what the go command left running in its group (a git
// helper, say), so nothing writes into a sandbox being removed.
func (g *procGroup) release() { g.kill() }

// platformEnv is the part of a sandboxed go command's environment that
// differs per platform: where it finds its home directory.
func platformEnv(home string) []string {
	return []string{"HOME=" + home, "GIT_ASKPASS=/bin/false"}
}
