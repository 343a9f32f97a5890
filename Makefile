GO ?= go
export GOTOOLCHAIN ?= local

.PHONY: build run test bench fuzz soak fmt vet clean

build:
	$(GO) build -o bin/caddy ./cmd/caddy

run: build
	./bin/caddy run --config Caddyfile.example --adapter caddyfile

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

bench: build
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./bench/
	$(GO) run ./bench/loadtest
	$(GO) run ./bench/soak -d $(SOAKTIME)

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
