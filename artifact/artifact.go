// Package artifact names the things a GOPROXY serves: it parses a protocol
// request path into a validated module path, version and kind, and turns them
// back into the escaped path used for upstream requests and cache keys.
package artifact

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/piraeus-go/piraeus/httperr"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

// Kind is the kind of artifact a request asks for.
type Kind uint8

const (
	List   Kind = iota + 1 // <module>/@v/list
	Info                   // <module>/@v/<version>.info
	Mod                    // <module>/@v/<version>.mod
	Zip                    // <module>/@v/<version>.zip
	Latest                 // <module>/@latest
)

func (k Kind) String() string {
	switch k {
	case List:
		return "list"
	case Info:
		return "info"
	case Mod:
		return "mod"
	case Zip:
		return "zip"
	case Latest:
		return "latest"
	}
	return "unknown"
}

// ContentType is the media type the go command expects for the kind.
func (k Kind) ContentType() string {
	switch k {
	case Info, Latest:
		return "application/json"
	case Zip:
		return "application/zip"
	}
	return "text/plain; charset=utf-8"
}

// MaxSize bounds what is read from an upstream for the kind, so that no
// answer can grow without limit. Zip and go.mod limits are x/mod's.
func (k Kind) MaxSize() int64 {
	switch k {
	case Zip:
		return modzip.MaxZipFile
	case Mod:
		return modzip.MaxGoMod
	case List:
		return 8 << 20
	}
	return 1 << 20
}

// MaxPathLen bounds the escaped request path. Real module paths are far
// shorter; the bound keeps hostile paths away from parsers and file names.
const MaxPathLen = 1024

// maxVersionLen bounds an escaped version: real ones, pseudo-versions
// included, are far shorter, and a cache file name must stay well under
// the usual 255-byte limit.
const maxVersionLen = 128

// Artifact is one validated GOPROXY request.
type Artifact struct {
	Kind    Kind
	Module  string // decoded module path, e.g. github.com/Azure/x
	Version string // decoded version for Info, Mod and Zip; empty otherwise

	escModule  string
	escVersion string
}

// Immutable reports whether the artifact can never change: .info, .mod and
// .zip of a canonical semantic version. Lists, @latest and .info queries for
// branch names or version prefixes change over time.
func (a Artifact) Immutable() bool {
	return (a.Kind == Info || a.Kind == Mod || a.Kind == Zip) && isCanonical(a.Version)
}

// Query reports whether this is an .info request for something other than
// a canonical version (a branch, a tag name, a version prefix): the go
// command resolves such queries through the proxy. Queries are answered but
// never written to disk.
func (a Artifact) Query() bool {
	return a.Kind == Info && !isCanonical(a.Version)
}

// Path is the escaped protocol path without a leading slash, as sent to an
// upstream proxy and used as a cache key: "github.com/!azure/x/@v/v1.0.0.zip".
func (a Artifact) Path() string {
	switch a.Kind {
	case List:
		return a.escModule + "/@v/list"
	case Latest:
		return a.escModule + "/@latest"
	}
	return a.escModule + "/@v/" + a.escVersion + "." + a.Kind.String()
}

// ModuleVersion is the module.Version of a versioned artifact.
func (a Artifact) ModuleVersion() module.Version {
	return module.Version{Path: a.Module, Version: a.Version}
}

func (a Artifact) String() string {
	if a.Version != "" {
		return a.Module + "@" + a.Version + " " + a.Kind.String()
	}
	return a.Module + " " + a.Kind.String()
}

// badRequest is a malformed path or version; a path outside the
// protocol is a 404 (notProtocol).
func badRequest(format string, args ...any) *httperr.Error {
	return httperr.BadRequest(format, args...)
}

func notProtocol(msg string) *httperr.Error { return httperr.New(http.StatusNotFound, "", msg) }

// Parse validates an escaped request path (without the leading slash) and
// returns the artifact it names, or an *httperr.Error (400 or 404). Nothing that fails here reaches a cache key,
// a file name or an upstream.
func Parse(p string) (Artifact, error) {
	if len(p) > MaxPathLen {
		return Artifact{}, badRequest("request path too long (%d bytes, limit %d)", len(p), MaxPathLen)
	}
	for i := 0; i < len(p); i++ {
		// Escaped module paths and versions are printable ASCII without
		// percent-escapes, backslashes or spaces; anything else is hostile
		// or a client bug.
		if c := p[i]; c <= ' ' || c >= 0x7f || c == '%' || c == '\\' {
			return Artifact{}, badRequest("invalid character %q in request path", c)
		}
	}
	if escMod, ok := strings.CutSuffix(p, "/@latest"); ok {
		mod, err := unescapeModule(escMod)
		if err != nil {
			return Artifact{}, err
		}
		return Artifact{Kind: Latest, Module: mod, escModule: escMod}, nil
	}
	escMod, rest, ok := strings.Cut(p, "/@v/")
	if !ok {
		return Artifact{}, notProtocol("not a module proxy path: want <module>/@v/... or <module>/@latest")
	}
	mod, err := unescapeModule(escMod)
	if err != nil {
		return Artifact{}, err
	}
	a := Artifact{Module: mod, escModule: escMod}
	if rest == "list" {
		a.Kind = List
		return a, nil
	}
	dot := strings.LastIndexByte(rest, '.')
	if dot < 0 {
		return Artifact{}, notProtocol("unknown artifact " + quote(rest) + ": want list, <version>.info, .mod or .zip")
	}
	switch rest[dot+1:] {
	case "info":
		a.Kind = Info
	case "mod":
		a.Kind = Mod
	case "zip":
		a.Kind = Zip
	default:
		return Artifact{}, notProtocol("unknown artifact " + quote(rest) + ": want list, <version>.info, .mod or .zip")
	}
	a.escVersion = rest[:dot]
	if a.escVersion == "" || strings.Contains(a.escVersion, "/") || len(a.escVersion) > maxVersionLen {
		return Artifact{}, badRequest("invalid version %s", quote(a.escVersion))
	}
	v, err := module.UnescapeVersion(a.escVersion)
	if err != nil {
		return Artifact{}, badRequest("invalid version %s", quote(a.escVersion))
	}
	a.Version = v
	if isCanonical(v) {
		if err := module.Check(mod, v); err != nil {
			return Artifact{}, badRequest("%v", err)
		}
		return a, nil
	}
	if a.Kind != Info {
		// The go command resolves queries through .info first and asks
		// for .mod and .zip only by canonical version.
		return Artifact{}, badRequest("version %s is not canonical (want %s)", quote(v), quote(module.CanonicalVersion(v)))
	}
	if strings.HasPrefix(v, ".") || strings.Contains(v, "..") {
		return Artifact{}, badRequest("invalid version query %s", quote(v))
	}
	return a, nil
}

func unescapeModule(esc string) (string, error) {
	if esc == "" {
		return "", badRequest("missing module path")
	}
	mod, err := module.UnescapePath(esc)
	if err != nil {
		return "", badRequest("invalid module path %s", quote(esc))
	}
	for rest := esc; rest != ""; {
		var elem string
		elem, rest, _ = strings.Cut(rest, "/")
		if len(elem) > 255 {
			return "", badRequest("module path element too long")
		}
	}
	return mod, nil
}

func isCanonical(v string) bool {
	return v != "" && module.CanonicalVersion(v) == v
}

// quote bounds echoed input so an error body stays one short line.
func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// New returns the artifact of kind for mod and version (empty for List and
// Latest), validated as Parse would.
func New(kind Kind, mod, version string) (Artifact, error) {
	esc, err := module.EscapePath(mod)
	if err != nil {
		return Artifact{}, badRequest("invalid module path %s", quote(mod))
	}
	p := esc + "/@v/list"
	switch kind {
	case Latest:
		p = esc + "/@latest"
	case Info, Mod, Zip:
		ev, err := module.EscapeVersion(version)
		if err != nil {
			return Artifact{}, badRequest("invalid version %s", quote(version))
		}
		p = esc + "/@v/" + ev + "." + kind.String()
	}
	return Parse(p)
}
