package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/piraeus-go/piraeus/accesstoken"
	"github.com/piraeus-go/piraeus/fetcher"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "goproxy",
		Usage: "warm <go.mod|go.sum|catalog URL> | purge <module>@<version> | accept <module>@<version> | token create|list|revoke [--address <admin>]",
		Short: "Warms or purges the Go module proxy cache of a running Caddy, and manages its access tokens",
		Long: `
Talks to a running Caddy's admin endpoint (the admin API's /goproxy/ routes).

  caddy goproxy warm go.sum         fetch every module the file lists into the cache (a go.mod lists
                                    its direct requirements alone; its go.sum names the whole graph)
  caddy goproxy warm https://mirror.example.com/catalog
                                    fetch every module another mirror's catalog lists
  caddy goproxy purge mod@version   remove one module version from every tier
  caddy goproxy accept mod@version  take the content refused as changed since first seen (a moved tag)
  caddy goproxy token create --user alice --groups a,b --ttl 90d
                                    issue an access token (printed once; the mirror keeps its hash)
  caddy goproxy token list          list the tokens that have not been revoked
  caddy goproxy token revoke <id>   revoke a token on every edge
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.PersistentFlags().String("address", "localhost:2019", "The admin API address of the running Caddy")
			cmd.AddCommand(&cobra.Command{
				Use:   "warm <go.mod|go.sum|catalog URL>",
				Short: "Fetch the modules a go.mod, a go.sum or another mirror's catalog lists into the cache",
				Args:  cobra.ExactArgs(1),
				RunE: func(c *cobra.Command, args []string) error {
					addr, _ := c.Flags().GetString("address")
					return WarmViaAdmin(addr, args[0], c.OutOrStdout())
				},
			})
			cmd.AddCommand(&cobra.Command{
				Use:   "purge <module>@<version>",
				Short: "Remove one module version from every tier",
				Args:  cobra.ExactArgs(1),
				RunE: func(c *cobra.Command, args []string) error {
					addr, _ := c.Flags().GetString("address")
					return PurgeViaAdmin(addr, args[0], c.OutOrStdout())
				},
			})
			cmd.AddCommand(tokenCommand())
			cmd.AddCommand(&cobra.Command{
				Use:   "accept <module>@<version>",
				Short: "Take the content last refused as changed since first seen (a moved tag) as the version's content",
				Args:  cobra.ExactArgs(1),
				RunE: func(c *cobra.Command, args []string) error {
					addr, _ := c.Flags().GetString("address")
					return AcceptViaAdmin(addr, args[0], c.OutOrStdout())
				},
			})
		},
	})
}

// WarmViaAdmin warms the cache of a running Caddy through its admin API's
// /goproxy/warm from source: a go.mod or go.sum file, or the URL of
// another mirror's catalog (Athens' /catalog format), read page by page.
// It prints the progress as it arrives and fails if any artifact could not
// be fetched.
func WarmViaAdmin(adminAddr, source string, out io.Writer) error {
	var total WarmSummary
	post := func(body io.Reader) error {
		sum, err := warmRequest(adminAddr, body, out)
		total.Total += sum.Total
		total.Cached += sum.Cached
		total.Fetched += sum.Fetched
		total.Failed += sum.Failed
		return err
	}
	var err error
	if strings.HasPrefix(source, "http://") || strings.HasPrefix(source, "https://") {
		err = eachCatalogPage(source, func(body []byte) error { return post(bytes.NewReader(body)) })
	} else {
		var f *os.File
		if f, err = os.Open(source); err == nil {
			err = post(f)
			f.Close()
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%d artifacts: %d already cached, %d fetched, %d failed\n", total.Total, total.Cached, total.Fetched, total.Failed)
	if total.Failed > 0 {
		return fmt.Errorf("%d artifacts could not be fetched", total.Failed)
	}
	return nil
}

// Bounds of reading a catalog: its pages, its bytes in all, and the time
// one page may take. Variables for tests.
var (
	maxCatalogPages    = 1000 // of 1000 module versions each
	maxCatalogBytes    = int64(256 << 20)
	catalogPageTimeout = 2 * time.Minute
)

// eachCatalogPage reads a catalog (Athens' /catalog) page by page and hands
// each page on as it came. It reads as the mirror reads its upstreams:
// bounded connection set-up and waits, the go command's redirect policy,
// and no redirect to a private address other than the catalog's own.
func eachCatalogPage(catalogURL string, page func(body []byte) error) error {
	u, err := url.Parse(catalogURL)
	if err != nil || u.Hostname() == "" {
		return fmt.Errorf("catalog URL %q: want http(s)://host/catalog", fetcher.RedactURL(catalogURL))
	}
	client := fetcher.NewHTTPClient(fetcher.HTTPConfig{Hosts: []string{u.Hostname()}})
	defer client.CloseIdleConnections()
	token := ""
	seen := map[string]bool{}
	var read int64
	for range maxCatalogPages {
		q := u.Query()
		q.Set("pagesize", "1000")
		if token != "" {
			q.Set("token", token)
		}
		u.RawQuery = q.Encode()
		body, status, err := catalogPage(client, u.String(), min(maxWarmBody, maxCatalogBytes-read))
		if err != nil {
			return fmt.Errorf("reading the catalog: %w", err)
		}
		read += int64(len(body))
		var p struct {
			Modules []json.RawMessage
			Next    string
		}
		if status != http.StatusOK {
			return fmt.Errorf("reading the catalog: %d %s", status, http.StatusText(status))
		}
		if err := json.Unmarshal(body, &p); err != nil {
			return fmt.Errorf("reading the catalog: %v", err)
		}
		if len(p.Modules) > 0 {
			if err := page(body); err != nil {
				return err
			}
		}
		if p.Next == "" {
			return nil
		}
		if seen[p.Next] {
			return errors.New("reading the catalog: its pages go round in a loop")
		}
		seen[p.Next] = true
		token = p.Next
	}
	return fmt.Errorf("the catalog has more than %d pages; warm it in parts (from go.mod or go.sum files)", maxCatalogPages)
}

// catalogPage reads one page of at most limit bytes within
// catalogPageTimeout.
func catalogPage(client *http.Client, pageURL string, limit int64) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), catalogPageTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pageURL, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a token
		}
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, 0, err
	}
	if int64(len(body)) > limit {
		return nil, 0, fmt.Errorf("more than %d bytes (a page is at most %d, the catalog at most %d)", limit, maxWarmBody, maxCatalogBytes)
	}
	return body, resp.StatusCode, nil
}

// warmRequest posts one go.mod or go.sum to /goproxy/warm and prints the
// progress.
func warmRequest(adminAddr string, body io.Reader, out io.Writer) (WarmSummary, error) {
	var sum WarmSummary
	resp, err := caddycmd.AdminAPIRequest(adminAddr, http.MethodPost, "/goproxy/warm", http.Header{"Content-Type": {"text/plain"}}, body)
	if err != nil {
		return sum, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Bytes()
		if json.Unmarshal(line, &sum) == nil && sum.Done {
			break
		}
		var r struct{ Module, Version, Kind, Status, Error string }
		if json.Unmarshal(line, &r) == nil {
			fmt.Fprintf(out, "%-8s %s@%s %s %s\n", r.Status, r.Module, r.Version, r.Kind, r.Error)
		}
	}
	return sum, sc.Err()
}

// PurgeViaAdmin asks the admin API to purge module@version.
func PurgeViaAdmin(adminAddr, modVersion string, out io.Writer) error {
	mod, version, ok := strings.Cut(modVersion, "@")
	if !ok || mod == "" || version == "" {
		return fmt.Errorf("want <module>@<version>, e.g. rsc.io/quote@v1.5.2, not %q", modVersion)
	}
	var res struct {
		Purged string `json:"purged"`
		Caches int    `json:"caches"`
	}
	if err := adminJSON(adminAddr, http.MethodPost, "/goproxy/purge?mod="+url.QueryEscape(modVersion), nil, &res); err != nil {
		return err
	}
	fmt.Fprintf(out, "purged %s from %d cache(s): its .info, .mod and .zip, and the module's list and @latest\n", res.Purged, res.Caches)
	return nil
}

func tokenCommand() *cobra.Command {
	token := &cobra.Command{Use: "token", Short: "Manage the access tokens that goproxy_token accepts"}
	create := &cobra.Command{
		Use:   "create --user <id> [--groups a,b] [--ttl 90d]",
		Short: "Issue an access token; it is printed once, the mirror keeps only its hash",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			addr, _ := c.Flags().GetString("address")
			user, _ := c.Flags().GetString("user")
			groups, _ := c.Flags().GetString("groups")
			ttl, _ := c.Flags().GetString("ttl")
			return CreateTokenViaAdmin(addr, user, groups, ttl, c.OutOrStdout())
		},
	}
	create.Flags().String("user", "", "The user the token authenticates (required)")
	create.Flags().String("groups", "", "The user's groups, comma-separated")
	create.Flags().String("ttl", "90d", "How long the token lasts")
	token.AddCommand(create, &cobra.Command{
		Use:   "list",
		Short: "List the tokens that have not been revoked",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			addr, _ := c.Flags().GetString("address")
			return ListTokensViaAdmin(addr, c.OutOrStdout())
		},
	}, &cobra.Command{
		Use:   "revoke <id>",
		Short: "Revoke a token on every edge of the fleet",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			addr, _ := c.Flags().GetString("address")
			return RevokeTokenViaAdmin(addr, args[0], c.OutOrStdout())
		},
	})
	return token
}

// adminJSON sends an admin API request and decodes its JSON answer into
// v; an answer other than 200 is an error with the admin API's reason.
func adminJSON(adminAddr, method, uri string, body any, v any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	resp, err := caddycmd.AdminAPIRequest(adminAddr, method, uri, h, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// CreateTokenViaAdmin issues a token through the admin API and prints it.
func CreateTokenViaAdmin(adminAddr, user, groups, ttl string, out io.Writer) error {
	d, err := caddy.ParseDuration(ttl)
	if err != nil {
		return fmt.Errorf("--ttl %q: %v", ttl, err)
	}
	req := TokenRequest{User: user, TTL: caddy.Duration(d)}
	for _, g := range strings.Split(groups, ",") {
		if g = strings.TrimSpace(g); g != "" {
			req.Groups = append(req.Groups, g)
		}
	}
	var tc TokenCreated
	if err := adminJSON(adminAddr, http.MethodPost, "/goproxy/tokens", req, &tc); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s\n\nid %s, user %s, groups %s, expires %s\n", tc.Secret, tc.ID, tc.User, strings.Join(tc.Groups, ","), tc.Expires.Format(time.RFC3339))
	fmt.Fprintf(out, "The token is shown this once. In ~/.netrc: machine <mirror host> login %s password <token>\n", tc.User)
	return nil
}

// ListTokensViaAdmin prints the tokens, one a line.
func ListTokensViaAdmin(adminAddr string, out io.Writer) error {
	var toks []accesstoken.Token
	if err := adminJSON(adminAddr, http.MethodGet, "/goproxy/tokens", nil, &toks); err != nil {
		return err
	}
	for _, t := range toks {
		state := "expires " + t.Expires.Format(time.RFC3339)
		if !time.Now().Before(t.Expires) {
			state = "expired " + t.Expires.Format(time.RFC3339)
		}
		fmt.Fprintf(out, "%s  %-20s  %-30s  created %s  %s\n", t.ID, t.User, strings.Join(t.Groups, ","), t.Created.Format(time.RFC3339), state)
	}
	return nil
}

// RevokeTokenViaAdmin revokes token id.
func RevokeTokenViaAdmin(adminAddr, id string, out io.Writer) error {
	var res map[string]any
	if err := adminJSON(adminAddr, http.MethodDelete, "/goproxy/tokens?id="+url.QueryEscape(id), nil, &res); err != nil {
		return err
	}
	fmt.Fprintf(out, "revoked %s\n", id)
	return nil
}

// AcceptViaAdmin accepts the changed content of modVersion.
func AcceptViaAdmin(adminAddr, modVersion string, out io.Writer) error {
	var res struct {
		Kinds []string `json:"kinds"`
	}
	if err := adminJSON(adminAddr, http.MethodPost, "/goproxy/accept?mod="+url.QueryEscape(modVersion), nil, &res); err != nil {
		return err
	}
	fmt.Fprintf(out, "accepted the new %s of %s; the version was purged and is fetched again on its next request\n", strings.Join(res.Kinds, " and "), modVersion)
	return nil
}
