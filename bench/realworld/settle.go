package main

import (
	"bytes"
	"log"
	"os"
	"strconv"
	"time"
)

// settleDisk waits, before a client run, until the disk is quiet again:
// each run extracts and then removes a module cache of about 1.5 GB, and
// the removal's writes (and a mount's online discards) go on after
// os.RemoveAll returns, slowing whichever run comes next. Without the
// wait, each run on a shared virtual disk extracted zips more slowly than
// the one before, which counted the machine's drift against the mirror.
// It syncs, then waits until less than 1% of the last ten seconds saw a
// task stalled on I/O (Linux's pressure stall information; elsewhere it
// only syncs), for at most two minutes.
func settleDisk(label string) {
	start := time.Now()
	syncDisks()
	for deadline := start.Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		p, ok := ioPressure()
		if !ok || p < 1 {
			break
		}
	}
	if took := time.Since(start); took > time.Second {
		p, _ := ioPressure()
		log.Printf("  %s: waited %v for the disk to settle (I/O pressure %.1f%%)", label, took.Round(time.Second), p)
	}
}

// ioPressure is the share of the last ten seconds in which some task
// waited on I/O, in percent: /proc/pressure/io's "some avg10".
func ioPressure() (float64, bool) {
	data, err := os.ReadFile("/proc/pressure/io")
	if err != nil {
		return 0, false
	}
	_, rest, ok := bytes.Cut(data, []byte("some avg10="))
	if !ok {
		return 0, false
	}
	field, _, _ := bytes.Cut(rest, []byte(" "))
	p, err := strconv.ParseFloat(string(field), 64)
	return p, err == nil
}
