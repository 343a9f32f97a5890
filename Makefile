GO ?= go
export GOTOOLCHAIN ?= local

.PHONY: build run test bench fmt vet clean

build:
	$(GO) build -o bin/caddy ./cmd/caddy

run: build
	./bin/caddy run --config Caddyfile.example --adapter caddyfile

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./bench/
	$(GO) run ./bench/loadtest

fmt:
	gofmt -l -w .

clean:
	rm -rf bin
