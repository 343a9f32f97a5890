package fetcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/httperr"
)

// Chain tries sources in order, as the go command walks GOPROXY: after a
// source followed by ',' it moves on only when the source answered 404 or
// 410; after a source followed by '|' it moves on after any error.
type Chain struct {
	entries []chainEntry
}

type chainEntry struct {
	f               Fetcher
	fallBackOnError bool // the entry is followed by '|'
}

// CheckList reports what ParseList would refuse in a list, with no side
// effects (no go command is set up for its direct entries).
func CheckList(list string) error {
	_, err := ParseList(list, nil, Off{})
	return err
}

// ParseList parses a GOPROXY-style list: URLs, "direct" and "off",
// separated by ',' or '|'. As in the go command, "off" ends the list.
// direct serves the "direct" entries; a list with one needs it.
func ParseList(list string, client *http.Client, direct Fetcher) (*Chain, error) {
	c := &Chain{}
	for list = strings.TrimSpace(list); list != ""; {
		var elem string
		fallBack := false
		if i := strings.IndexAny(list, ",|"); i >= 0 {
			elem, fallBack, list = list[:i], list[i] == '|', list[i+1:]
		} else {
			elem, list = list, ""
		}
		elem = strings.TrimSpace(elem)
		if elem == "" {
			return nil, fmt.Errorf("empty entry in upstream list")
		}
		var f Fetcher
		switch elem {
		case "off":
			c.entries = append(c.entries, chainEntry{f: Off{}})
			return c, nil
		case "direct":
			if direct == nil {
				return nil, errors.New("direct: no go command configured")
			}
			f = direct
		case "noproxy":
			return nil, fmt.Errorf("upstream %q is not supported: use direct", elem)
		default:
			pf, err := NewProxyFetcher(elem, client)
			if err != nil {
				return nil, err
			}
			f = pf
		}
		c.entries = append(c.entries, chainEntry{f: f, fallBackOnError: fallBack})
	}
	if len(c.entries) == 0 {
		return nil, errors.New("empty upstream list")
	}
	return c, nil
}

// FirstProxyURL is the URL of the chain's first entry when that entry is
// an upstream proxy, or "" when it is direct or off.
func (c *Chain) FirstProxyURL() string {
	if pf, ok := c.entries[0].f.(*ProxyFetcher); ok {
		return pf.base.String()
	}
	return ""
}

// Len is the number of sources in the chain.
func (c *Chain) Len() int { return len(c.entries) }

func (c *Chain) Fetch(ctx context.Context, a artifact.Artifact) (*Response, error) {
	var err error
	for _, e := range c.entries {
		var resp *Response
		resp, err = e.f.Fetch(ctx, a)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if !httperr.IsNotFound(err) && !e.fallBackOnError {
			return nil, err
		}
	}
	return nil, err
}
