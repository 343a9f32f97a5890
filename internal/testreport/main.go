// Command testreport reads the events of `go test -json` on its standard
// input, prints the output of the tests as `go test` would have printed
// it, and ends with the slowest tests, so that a slow test is seen in
// `make test` when it is added. It exits 1 when a test or a package
// failed, or when the input ended with a test still running (a killed or
// crashed test binary), whatever the exit status of `go test` was.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64 // seconds
	Output  string
}

type result struct {
	Package, Test string
	Elapsed       time.Duration
	Failed        bool
}

func main() {
	top := flag.Int("slowest", 10, "how many of the slowest tests to list")
	flag.Parse()
	failed, err := report(os.Stdin, os.Stdout, *top)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

// report copies the tests' output from in to out, then lists the top
// slowest top-level tests. It says whether anything failed.
func report(in io.Reader, out io.Writer, top int) (failed bool, err error) {
	var (
		results                  []result
		running                  = map[[2]string]bool{}
		passed, nfailed, skipped int
	)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil {
			// Not an event: what go test printed itself (e.g. a
			// build error on older toolchains).
			fmt.Fprintf(out, "%s\n", line)
			continue
		}
		key := [2]string{ev.Package, ev.Test}
		switch ev.Action {
		case "output", "build-output":
			io.WriteString(out, ev.Output)
		case "run":
			running[key] = true
		case "build-fail":
			failed = true
		case "pass", "fail", "skip":
			delete(running, key)
			if ev.Action == "fail" {
				failed = true
			}
			if ev.Test == "" || strings.Contains(ev.Test, "/") {
				break // a package, or a subtest (its time is its parent's too)
			}
			switch ev.Action {
			case "pass":
				passed++
			case "fail":
				nfailed++
			case "skip":
				skipped++
				continue
			}
			results = append(results, result{ev.Package, ev.Test, time.Duration(ev.Elapsed * float64(time.Second)), ev.Action == "fail"})
		}
	}
	if err := sc.Err(); err != nil {
		return true, err
	}
	for key := range running {
		if key[1] != "" {
			fmt.Fprintf(out, "testreport: %s %s started and never ended\n", key[0], key[1])
			failed = true
		}
	}
	slices.SortStableFunc(results, func(a, b result) int { return cmp.Compare(b.Elapsed, a.Elapsed) })
	if len(results) > top {
		results = results[:top]
	}
	if len(results) > 0 {
		fmt.Fprintf(out, "\nThe %d slowest tests:\n", len(results))
		for _, r := range results {
			mark := ""
			if r.Failed {
				mark = " (failed)"
			}
			fmt.Fprintf(out, "%8.1fs  %s %s%s\n", r.Elapsed.Seconds(), r.Package, r.Test, mark)
		}
	}
	// The closing line, counting top-level tests.
	fmt.Fprintf(out, "tests: %d passed, %d failed, %d skipped\n", passed, nfailed, skipped)
	return failed, nil
}
