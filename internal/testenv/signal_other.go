//go:build !unix

package testenv

import (
	"errors"
	"os"
)

var errNoPause = errors.New("pausing a process needs SIGSTOP, which only unix systems have")

func pauseProcess(*os.Process) error  { return errNoPause }
func resumeProcess(*os.Process) error { return errNoPause }
