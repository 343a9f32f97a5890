package caddymodule

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "goproxy",
		Usage: "warm <go.mod|go.sum|catalog URL> | purge <module>@<version> [--address <admin>]",
		Short: "Warms or purges the Go module proxy cache of a running Caddy",
		Long: `
Talks to a running Caddy's admin endpoint (the admin API's /goproxy/ routes).

  caddy goproxy warm go.sum         fetch every module the file lists into the cache
  caddy goproxy warm https://mirror.example.com/catalog
                                    fetch every module another mirror's catalog lists
  caddy goproxy purge mod@version   remove one module version from every tier
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

// maxCatalogPages bounds how much of a catalog is read.
const maxCatalogPages = 100000

// eachCatalogPage reads a catalog (Athens' /catalog) page by page and hands
// each page on as it came.
func eachCatalogPage(catalogURL string, page func(body []byte) error) error {
	u, err := url.Parse(catalogURL)
	if err != nil {
		return fmt.Errorf("catalog URL: %w", err)
	}
	token := ""
	for range maxCatalogPages {
		q := u.Query()
		q.Set("pagesize", "1000")
		if token != "" {
			q.Set("token", token)
		}
		u.RawQuery = q.Encode()
		resp, err := http.Get(u.String())
		if err != nil {
			return fmt.Errorf("reading the catalog: %w", err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxWarmBody))
		resp.Body.Close()
		var p struct {
			Modules []json.RawMessage
			Next    string
		}
		if err == nil {
			err = json.Unmarshal(body, &p)
		}
		if resp.StatusCode != http.StatusOK || err != nil {
			return fmt.Errorf("reading the catalog: %s (%v)", resp.Status, err)
		}
		if len(p.Modules) > 0 {
			if err := page(body); err != nil {
				return err
			}
		}
		if p.Next == "" {
			return nil
		}
		token = p.Next
	}
	return errors.New("the catalog has too many pages")
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
	resp, err := caddycmd.AdminAPIRequest(adminAddr, http.MethodPost, "/goproxy/purge?mod="+url.QueryEscape(modVersion), nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Fprintf(out, "%s", body)
	return nil
}
