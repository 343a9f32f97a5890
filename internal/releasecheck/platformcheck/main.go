// Command platformcheck type-checks and vets Go packages for one
// platform without compiling them: it loads the packages that match its
// arguments, with their tests, as the go command selects their files for
// GOOS and GOARCH, type-checks them and everything they import from source
// with go/types, and runs the analyzers of go vet on them. It prints each
// problem found on a line of its own and exits 1 if there was one; the
// number of packages checked goes to standard error.
//
//	platformcheck -C dir -goos windows -goarch arm64 ./...
//
// TestPlatforms runs it for every platform the plugin supports: go vet
// would compile every dependency (a thousand packages of Caddy) for each.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/analysis/checker"
	"golang.org/x/tools/go/analysis/passes/appends"
	"golang.org/x/tools/go/analysis/passes/asmdecl"
	"golang.org/x/tools/go/analysis/passes/assign"
	"golang.org/x/tools/go/analysis/passes/atomic"
	"golang.org/x/tools/go/analysis/passes/bools"
	"golang.org/x/tools/go/analysis/passes/buildtag"
	"golang.org/x/tools/go/analysis/passes/cgocall"
	"golang.org/x/tools/go/analysis/passes/composite"
	"golang.org/x/tools/go/analysis/passes/copylock"
	"golang.org/x/tools/go/analysis/passes/defers"
	"golang.org/x/tools/go/analysis/passes/directive"
	"golang.org/x/tools/go/analysis/passes/errorsas"
	"golang.org/x/tools/go/analysis/passes/framepointer"
	"golang.org/x/tools/go/analysis/passes/hostport"
	"golang.org/x/tools/go/analysis/passes/httpresponse"
	"golang.org/x/tools/go/analysis/passes/ifaceassert"
	"golang.org/x/tools/go/analysis/passes/loopclosure"
	"golang.org/x/tools/go/analysis/passes/lostcancel"
	"golang.org/x/tools/go/analysis/passes/nilfunc"
	"golang.org/x/tools/go/analysis/passes/printf"
	"golang.org/x/tools/go/analysis/passes/shift"
	"golang.org/x/tools/go/analysis/passes/sigchanyzer"
	"golang.org/x/tools/go/analysis/passes/slog"
	"golang.org/x/tools/go/analysis/passes/stdmethods"
	"golang.org/x/tools/go/analysis/passes/stdversion"
	"golang.org/x/tools/go/analysis/passes/stringintconv"
	"golang.org/x/tools/go/analysis/passes/structtag"
	"golang.org/x/tools/go/analysis/passes/testinggoroutine"
	"golang.org/x/tools/go/analysis/passes/tests"
	"golang.org/x/tools/go/analysis/passes/timeformat"
	"golang.org/x/tools/go/analysis/passes/unmarshal"
	"golang.org/x/tools/go/analysis/passes/unreachable"
	"golang.org/x/tools/go/analysis/passes/unsafeptr"
	"golang.org/x/tools/go/analysis/passes/unusedresult"
	"golang.org/x/tools/go/analysis/passes/waitgroup"
	"golang.org/x/tools/go/packages"
)

func main() {
	dir := flag.String("C", ".", "the directory to load the packages from")
	goos := flag.String("goos", "", "the GOOS to check for (required)")
	goarch := flag.String("goarch", "", "the GOARCH to check for (required)")
	flag.Parse()
	if *goos == "" || *goarch == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: platformcheck [-C dir] -goos GOOS -goarch GOARCH packages...")
		os.Exit(2)
	}
	n, problems, err := checkPlatform(*dir, *goos, *goarch, flag.Args()...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "platformcheck:", err)
		os.Exit(2)
	}
	for _, p := range problems {
		fmt.Println(p)
	}
	fmt.Fprintf(os.Stderr, "%d packages checked for %s/%s\n", n, *goos, *goarch)
	if len(problems) > 0 {
		os.Exit(1)
	}
}

// checkPlatform loads the packages matching patterns in dir, with their
// tests, for goos and goarch, type-checks them and everything they import
// from source, and runs the analyzers of go vet on them. It returns the
// number of packages matched (a package with its tests counts once) and
// each problem found, with its position.
func checkPlatform(dir, goos, goarch string, patterns ...string) (int, []string, error) {
	cfg := &packages.Config{
		Mode:  packages.LoadAllSyntax,
		Dir:   dir,
		Tests: true,
		Env:   append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0", "GOFLAGS=-mod=readonly"),
	}
	pkgs, err := packages.Load(cfg, patterns...)
	if err != nil {
		return 0, nil, fmt.Errorf("GOOS=%s GOARCH=%s: loading %v: %w", goos, goarch, patterns, err)
	}
	seen := map[string]bool{}
	var problems []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			problems = append(problems, p)
		}
	}
	packages.Visit(pkgs, nil, func(p *packages.Package) {
		for _, e := range p.Errors {
			add(fmt.Sprintf("%s/%s: %s", goos, goarch, e))
		}
	})
	if len(problems) > 0 {
		return len(pkgs), problems, nil // the analyzers need packages that type-check
	}
	graph, err := checker.Analyze(vetAnalyzers, pkgs, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("GOOS=%s GOARCH=%s: vet: %w", goos, goarch, err)
	}
	matched := map[string]bool{}
	for act := range graph.All() {
		if !act.IsRoot {
			continue
		}
		if path := act.Package.PkgPath; !strings.HasSuffix(path, "_test") && !strings.HasSuffix(path, ".test") {
			matched[path] = true
		}
		for _, d := range act.Diagnostics {
			add(fmt.Sprintf("%s/%s: %s: %s (vet %s)", goos, goarch, act.Package.Fset.Position(d.Pos), d.Message, act.Analyzer.Name))
		}
	}
	slices.Sort(problems)
	return len(matched), problems, nil
}

// vetAnalyzers are the analyzers go vet runs (cmd/vet's suite).
var vetAnalyzers = []*analysis.Analyzer{
	appends.Analyzer, asmdecl.Analyzer, assign.Analyzer, atomic.Analyzer, bools.Analyzer,
	buildtag.Analyzer, cgocall.Analyzer, composite.Analyzer, copylock.Analyzer, defers.Analyzer,
	directive.Analyzer, errorsas.Analyzer, framepointer.Analyzer, hostport.Analyzer,
	httpresponse.Analyzer, ifaceassert.Analyzer, loopclosure.Analyzer, lostcancel.Analyzer,
	nilfunc.Analyzer, printf.Analyzer, shift.Analyzer, sigchanyzer.Analyzer, slog.Analyzer,
	stdmethods.Analyzer, stdversion.Analyzer, stringintconv.Analyzer, structtag.Analyzer,
	testinggoroutine.Analyzer, tests.Analyzer, timeformat.Analyzer, unmarshal.Analyzer,
	unreachable.Analyzer, unsafeptr.Analyzer, unusedresult.Analyzer, waitgroup.Analyzer,
}
