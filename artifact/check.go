package artifact

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"

	"github.com/piraeus-go/piraeus/internal/zipdir"
)

// The format of each kind of answer, as the go command reads it: an
// answer that cannot be what was asked for is refused before anything
// keeps it. (As x/mod keeps CheckZip beside its zip format.)

// CheckContent checks a small answer (every kind but a zip, see CheckZip)
// for a.
func CheckContent(a Artifact, data []byte) error {
	switch a.Kind {
	case Info, Latest:
		var info struct {
			Version string
			Time    time.Time
		}
		if err := json.Unmarshal(data, &info); err != nil {
			return fmt.Errorf("not a JSON version info: %v", err)
		}
		if module.CanonicalVersion(info.Version) != info.Version || info.Version == "" {
			return fmt.Errorf("version %q is not canonical", info.Version)
		}
		if a.Immutable() && info.Version != a.Version {
			return fmt.Errorf("answer is for version %q", info.Version)
		}
		if err := module.Check(a.Module, info.Version); err != nil {
			return err
		}
	case List:
		if !utf8.Valid(data) {
			return errors.New("list is not text")
		}
	case Mod:
		// Served as the upstream has it, even when its module line names
		// another path (a module that was renamed): the go command decides
		// what to make of that, and the checksum database vouches for the
		// content.
		if _, err := modfile.ParseLax("go.mod", data, nil); err != nil {
			return fmt.Errorf("go.mod does not parse: %v", err)
		}
	case Zip:
		return errors.New("a zip is checked from its file (CheckZip)")
	}
	return nil
}

// RequireModuleLine is the check of a go.mod that nothing else vouches
// for (no checksum database verifies it): the go command refuses one
// without a module line.
func RequireModuleLine(data []byte) error {
	f, err := modfile.ParseLax("go.mod", data, nil)
	if err != nil {
		return fmt.Errorf("go.mod does not parse: %v", err)
	}
	if f.Module == nil {
		return errors.New("go.mod has no module line")
	}
	return nil
}

// CheckZip checks a's module zip, the size bytes of r, by
// x/mod/zip.CheckZip's rules (size limits, file names, collisions), read
// in place a part of its directory at a time (internal/zipdir): the
// largest real module zips have over 100,000 files, whose headers
// archive/zip would hold at once.
func CheckZip(a Artifact, r io.ReaderAt, size int64) error {
	if err := zipdir.Check(a.ModuleVersion(), r, size); err != nil {
		return fmt.Errorf("module zip rejected: %v", err)
	}
	return nil
}

// FilterList keeps the lines of a version list whose version is canonical
// and valid for mod (module.Check: a v2 version for a /v2 path, say),
// each once, in the order given.
func FilterList(mod string, data []byte) []byte {
	var out []byte
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, len(data)+1)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || seen[f[0]] || module.CanonicalVersion(f[0]) != f[0] || module.Check(mod, f[0]) != nil {
			continue
		}
		seen[f[0]] = true
		out = append(append(out, f[0]...), '\n')
	}
	return out
}
