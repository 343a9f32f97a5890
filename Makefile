GO ?= go
export GOTOOLCHAIN ?= local
# Recipes run in bash so that a pipeline fails when any of its commands does.
SHELL := bash
.SHELLFLAGS := -o pipefail -c

# Tools that lint and the tests use, installed at pinned versions into
# bin/tools (ignored by git) the first time they are needed.
TOOLS := $(CURDIR)/bin/tools
export PATH := $(TOOLS):$(PATH)
XCADDY_VERSION ?= v0.4.5
STATICCHECK_VERSION ?= v0.8.2
# The S3 server the tests run (a real one, on loopback).
VERSITYGW_VERSION ?= v1.8.0
# The vulnerability scanner the vulndb tests run through the mirror.
GOVULNCHECK_VERSION ?= v1.9.0

.PHONY: build run test lint tools bench realworld fuzz soak fmt vet clean

build:
	$(GO) build -o bin/caddy ./cmd/caddy

run: build
	./bin/caddy run --config Caddyfile.example --adapter caddyfile

# The whole suite: lint, then every test with the race detector, the
# release checks among them (xcaddy builds, every platform: see
# internal/releasecheck); the ten slowest tests are listed at the end.
test: lint
	PIRAEUS_RELEASE_CHECKS=1 $(GO) test -race -count=1 -timeout 30m -json ./... | $(GO) run ./internal/testreport

tools: $(TOOLS)/xcaddy $(TOOLS)/staticcheck $(TOOLS)/versitygw $(TOOLS)/govulncheck

$(TOOLS)/xcaddy:
	GOBIN=$(TOOLS) $(GO) install github.com/caddyserver/xcaddy/cmd/xcaddy@$(XCADDY_VERSION)

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# goproxy/goproxy v0.26.1, the peer make bench compares hits with; built in
# its own module so that Piraeus's go.mod does not name it.
$(TOOLS)/goproxy-peer:
	cd bench/peers/goproxy && GOBIN= $(GO) build -mod=mod -o $(TOOLS)/goproxy-peer github.com/goproxy/goproxy/cmd/goproxy

$(TOOLS)/versitygw:
	GOBIN=$(TOOLS) $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

$(TOOLS)/govulncheck:
	GOBIN=$(TOOLS) $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)

# gofmt, go vet, staticcheck, and a go.mod that go mod tidy leaves alone.
lint: tools
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...
	$(GO) mod tidy -diff

vet:
	$(GO) vet ./...

bench: build $(TOOLS)/goproxy-peer
	$(GO) test -run '^$$' -bench 'Hit|ColdMiss' -benchmem -count 1 ./bench/
	$(GO) test -run '^$$' -bench Graph -benchtime 1x -timeout 60m ./bench/
	$(GO) run ./bench/loadtest
	$(GO) run ./bench/soak -d $(SOAKTIME)

# Real module graphs through bin/caddy, compared with the go command going
# direct (needs the module proxy this machine reaches; not part of make
# test). REALWORLD_FLAGS=-graphs name=module@version,... picks the graphs.
REALWORLD_FLAGS ?=
realworld: build
	$(GO) run ./bench/realworld $(REALWORLD_FLAGS)

# A bounded soak: bin/caddy under 256 clients with upstream faults injected.
SOAKTIME ?= 60s
soak: build
	$(GO) run ./bench/soak -d $(SOAKTIME)

# Fuzz the request-path parser and the Caddyfile parser for a fixed time
# each, starting from the seed corpora in testdata/fuzz.
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./artifact
	$(GO) test -run '^$$' -fuzz '^FuzzUnmarshalCaddyfile$$' -fuzztime $(FUZZTIME) ./caddymodule

fmt:
	gofmt -l -w .

clean:
	rm -rf bin
