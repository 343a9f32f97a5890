module github.com/piraeus-go/piraeus

go 1.26.0

require (
	github.com/dgraph-io/ristretto/v2 v2.4.2
	go.uber.org/zap v1.28.0
	golang.org/x/mod v0.43.0
	golang.org/x/sync v0.25.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/dustin/go-humanize v1.1.0 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	go.uber.org/multierr v1.11.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sys v0.48.0 // indirect
)
