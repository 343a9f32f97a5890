// The goproxy/goproxy server that `make bench` compares Piraeus with, kept
// out of Piraeus's own module: built with
// `go build -mod=mod github.com/goproxy/goproxy/cmd/goproxy` here.
module github.com/piraeus-go/piraeus/bench/peers/goproxy

go 1.26

require github.com/goproxy/goproxy v0.26.1
