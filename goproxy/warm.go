package goproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/httperr"
)

// WarmItem is one artifact to put in the cache ahead of demand.
type WarmItem struct {
	Module, Version string
	Kind            artifact.Kind
}

// WarmList reads what a go.mod (its require lines: .info, .mod and .zip),
// a go.sum (a hash line: .zip and .info; a /go.mod line: .mod) or a page of
// a catalog (Athens' /catalog JSON: .info, .mod and .zip) needs.
func WarmList(data []byte) ([]WarmItem, error) {
	var items []WarmItem
	seen := map[WarmItem]bool{}
	add := func(mod, version string, kinds ...artifact.Kind) {
		for _, k := range kinds {
			it := WarmItem{mod, version, k}
			if !seen[it] {
				seen[it] = true
				items = append(items, it)
			}
		}
	}
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		var page struct{ Modules []CatalogEntry }
		if err := json.Unmarshal(trimmed, &page); err != nil {
			return nil, fmt.Errorf("catalog page: %v", err)
		}
		for _, m := range page.Modules {
			add(m.Module, m.Version, artifact.Info, artifact.Mod, artifact.Zip)
		}
		if len(items) == 0 {
			return nil, errors.New("no modules found in the catalog page")
		}
		return items, nil
	}
	if f, err := modfile.ParseLax("go.mod", data, nil); err == nil && f.Module != nil {
		for _, r := range f.Require {
			add(r.Mod.Path, r.Mod.Version, artifact.Info, artifact.Mod, artifact.Zip)
		}
		return items, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 || !strings.HasPrefix(f[2], "h1:") {
			return nil, fmt.Errorf("line %d: neither a go.mod nor a go.sum line", n)
		}
		if v, ok := strings.CutSuffix(f[1], "/go.mod"); ok {
			add(f[0], v, artifact.Mod)
		} else {
			add(f[0], f[1], artifact.Info, artifact.Zip)
		}
	}
	if len(items) == 0 {
		return nil, errors.New("no modules found: want a go.mod or a go.sum")
	}
	return items, nil
}

// WarmResult reports one warmed artifact.
type WarmResult struct {
	Module  string `json:"module"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
	Status  string `json:"status"` // "cached" (already there), "fetched" or "failed"
	Error   string `json:"error,omitempty"`
}

// Warm fetches items into the cache with a few workers, calling progress
// (serialized) after each.
func (p *Proxy) Warm(ctx context.Context, items []WarmItem, progress func(WarmResult)) {
	const workers = 4
	work := make(chan WarmItem)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				r := p.warmOne(ctx, it)
				mu.Lock()
				progress(r)
				mu.Unlock()
			}
		}()
	}
	for _, it := range items {
		select {
		case work <- it:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
}

func (p *Proxy) warmOne(ctx context.Context, it WarmItem) WarmResult {
	r := WarmResult{Module: it.Module, Version: it.Version, Kind: it.Kind.String()}
	a, err := artifact.New(it.Kind, it.Module, it.Version)
	if err == nil && !a.Immutable() {
		err = fmt.Errorf("version %q is not canonical", it.Version)
	}
	if err != nil {
		r.Status, r.Error = "failed", err.Error()
		return r
	}
	if obj, err := p.cfg.Tiers.Get(ctx, p.key(a), p.checkShared(a)); err == nil {
		obj.Close()
		r.Status = "cached"
		return r
	}
	obj, err := p.collapse(ctx, a)
	if err != nil {
		r.Status, r.Error = "failed", clientMessage(err)
		return r
	}
	obj.Close()
	r.Status = "fetched"
	return r
}

func clientMessage(err error) string {
	var fe *httperr.Error
	if errors.As(err, &fe) {
		return fe.Msg
	}
	return err.Error()
}

// PurgeVersion removes mod@version's .info, .mod and .zip, and the
// module's list and @latest, from every tier.
func (p *Proxy) PurgeVersion(ctx context.Context, mod, version string) error {
	if err := module.Check(mod, version); err != nil || module.CanonicalVersion(version) != version {
		return fmt.Errorf("invalid module version %s@%s", mod, version)
	}
	var as []artifact.Artifact
	for _, k := range []artifact.Kind{artifact.Info, artifact.Mod, artifact.Zip, artifact.List, artifact.Latest} {
		a, err := artifact.New(k, mod, version)
		if err != nil {
			return err
		}
		as = append(as, a)
	}
	return p.Purge(ctx, as...)
}
