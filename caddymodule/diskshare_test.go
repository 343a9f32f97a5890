package caddymodule

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// Two processes on one disk directory: while another process holds it,
// a config with a disk tier there fails to load with an error that names
// the directory and the holder; once the holder is killed (SIGKILL: the
// operating system drops its lock), the same config loads.
func TestSecondProcessOnOneDisk(t *testing.T) {
	disk := t.TempDir()
	self, err := os.Executable() // the test binary (os.Args may have been changed by a caddy command's test)
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command(self, "-test.run=^$")
	holder.Env = append(os.Environ(), "PIRAEUS_TEST_HOLD_DIR="+disk)
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); holder.Process.Kill(); holder.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "held\n" {
		t.Fatalf("the other process: %q", line)
	}

	up := testenv.NewUpstream(t, hello)
	port := testenv.FreePort(t)
	testcaddy.Site(t, testenv.FreePort(t), "respond ok") // a running Caddy to load configs into
	config := testcaddy.Global() + fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tgoproxy %s {\n\t\tsumdb off\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}\n}\n", port, up.URL, disk)
	err = testcaddy.TryLoad(config)
	if err == nil || !strings.Contains(err.Error(), disk) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", holder.Process.Pid)) {
		t.Fatalf("loading a config on a directory another process holds: %v; want a refusal naming %s and pid %d", err, disk, holder.Process.Pid)
	}
	t.Logf("refused: %v", err)

	holder.Process.Kill()
	holder.Wait()
	if err := testcaddy.TryLoad(config); err != nil {
		t.Fatalf("after the other process died: %v", err)
	}
	testenv.MustGet(t, fmt.Sprintf("http://127.0.0.1:%d/%s", port, testenv.EscapedPath(hello.Path, hello.Version, "info")))
}
