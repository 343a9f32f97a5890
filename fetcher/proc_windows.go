//go:build windows

package fetcher

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// procGroup runs a go command in a Windows job object that kills every
// process in it when the job is closed, which Windows also does when the
// server dies: the go command and its git processes die together.
type procGroup struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	job windows.Handle
}

// newProcGroup prepares cmd; call started after cmd.Start and release
// after cmd.Wait.
func newProcGroup(cmd *exec.Cmd) *procGroup {
	g := &procGroup{cmd: cmd}
	cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: syscall.CREATE_NEW_PROCESS_GROUP}
	cmd.Cancel = func() error { g.kill(); return nil }
	return g
}

// started puts the process into a kill-on-close job. The go command
// starts git only after reading its module graph, well after this.
func (g *procGroup) started() {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return
	}
	info := windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION{
		BasicLimitInformation: windows.JOBOBJECT_BASIC_LIMIT_INFORMATION{
			LimitFlags: windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
		},
	}
	_, err = windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info)))
	if err == nil {
		var h windows.Handle
		h, err = windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(g.cmd.Process.Pid))
		if err == nil {
			err = windows.AssignProcessToJobObject(job, h)
			windows.CloseHandle(h)
		}
	}
	if err != nil {
		windows.CloseHandle(job)
		return
	}
	g.mu.Lock()
	g.job = job
	g.mu.Unlock()
}

// kill ends every process of the job, or the go command alone when it
// could not be put into one.
func (g *procGroup) kill() {
	g.mu.Lock()
	job := g.job
	g.mu.Unlock()
	if job != 0 {
		windows.TerminateJobObject(job, 1)
	}
	if p := g.cmd.Process; p != nil {
		p.Kill()
	}
}

// release closes the job, which kills whatever the go command left running.
func (g *procGroup) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.job != 0 {
		windows.CloseHandle(g.job)
		g.job = 0
	}
}

// platformEnv is the part of a sandboxed go command's environment that
// differs per platform: Windows programs find their home in USERPROFILE
// and need SystemRoot to start at all.
func platformEnv(home string) []string {
	return []string{
		"USERPROFILE=" + home,
		"APPDATA=" + filepath.Join(home, "AppData", "Roaming"),
		"LOCALAPPDATA=" + filepath.Join(home, "AppData", "Local"),
		"SystemRoot=" + os.Getenv("SystemRoot"),
		"TEMP=" + home,
		"TMP=" + home,
	}
}
