//go:build !unix && !windows

package fetcher

import "os/exec"

// procGroup kills the go command alone where the platform has neither
// process groups nor job objects.
type procGroup struct{ cmd *exec.Cmd }

func newProcGroup(cmd *exec.Cmd) *procGroup { return &procGroup{cmd: cmd} }

func (g *procGroup) started() {}

func (g *procGroup) kill() {
	if p := g.cmd.Process; p != nil {
		p.Kill()
	}
}

func (g *procGroup) release() {}

func platformEnv(home string) []string { return []string{"HOME=" + home} }
