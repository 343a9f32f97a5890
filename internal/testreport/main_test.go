package main

import (
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"start","Package":"p"}`,
		`{"Action":"run","Package":"p","Test":"TestFast"}`,
		`{"Action":"output","Package":"p","Test":"TestFast","Output":"=== RUN   TestFast\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestFast","Elapsed":0.01}`,
		`{"Action":"run","Package":"p","Test":"TestSlow"}`,
		`{"Action":"run","Package":"p","Test":"TestSlow/sub"}`,
		`{"Action":"pass","Package":"p","Test":"TestSlow/sub","Elapsed":99}`,
		`{"Action":"pass","Package":"p","Test":"TestSlow","Elapsed":100}`,
		`{"Action":"run","Package":"q","Test":"TestMid"}`,
		`{"Action":"fail","Package":"q","Test":"TestMid","Elapsed":5}`,
		`{"Action":"run","Package":"q","Test":"TestSkipped"}`,
		`{"Action":"skip","Package":"q","Test":"TestSkipped","Elapsed":0}`,
		`{"Action":"output","Package":"p","Output":"ok  \tp\t100.0s\n"}`,
		`not json at all`,
	}, "\n") + "\n"
	var out strings.Builder
	failed, err := report(strings.NewReader(in), &out, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !failed {
		t.Error("a failed test was not reported as a failure")
	}
	got := out.String()
	for _, want := range []string{
		"=== RUN   TestFast\n", "ok  \tp\t100.0s\n", "not json at all\n",
		"The 2 slowest tests:\n   100.0s  p TestSlow\n     5.0s  q TestMid (failed)\n",
		"tests: 2 passed, 1 failed, 1 skipped\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "TestSlow/sub") || strings.Contains(got, "TestFast\n  ") {
		t.Errorf("subtests or tests beyond the top 2 listed:\n%s", got)
	}
}

// A test binary that dies (a timeout panic, a crash) leaves tests that
// started and never ended: that is a failure even if no fail event came.
func TestReportUnfinished(t *testing.T) {
	in := `{"Action":"run","Package":"p","Test":"TestHangs"}` + "\n"
	var out strings.Builder
	failed, err := report(strings.NewReader(in), &out, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !failed || !strings.Contains(out.String(), "p TestHangs started and never ended") {
		t.Errorf("failed=%v, output:\n%s", failed, out.String())
	}
}
