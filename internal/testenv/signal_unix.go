//go:build unix

package testenv

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"time"
)

// pauseProcess stops p (SIGSTOP) and, where /proc tells, waits until all
// its threads have stopped: the signal is delivered asynchronously, and a
// thread still running could answer one more request.
func pauseProcess(p *os.Process) error {
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	dir := fmt.Sprintf("/proc/%d/task", p.Pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil // no /proc here: the signal is all there is
	}
	for range 400 { // up to 2 s
		running := false
		for _, task := range tasks {
			stat, err := os.ReadFile(dir + "/" + task.Name() + "/stat")
			if err != nil {
				continue // the thread ended
			}
			// The state follows the command's closing parenthesis.
			if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] != 'T' && stat[i+2] != 't' {
				running = true
				break
			}
		}
		if !running {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("process %d did not stop within 2 s of SIGSTOP", p.Pid)
}

func resumeProcess(p *os.Process) error { return p.Signal(syscall.SIGCONT) }
