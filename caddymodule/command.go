package caddymodule

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "goproxy",
		Usage: "warm <go.mod|go.sum> | purge <module>@<version> [--address <admin>]",
		Short: "Warms or purges the Go module proxy cache of a running Caddy",
		Long: `
Talks to a running Caddy's admin endpoint (the admin API's /goproxy/ routes).

  caddy goproxy warm go.sum         fetch every module the file lists into the cache
  caddy goproxy purge mod@version   remove one module version from every tier
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.PersistentFlags().String("address", "localhost:2019", "The admin API address of the running Caddy")
			cmd.AddCommand(&cobra.Command{
				Use:   "warm <go.mod|go.sum>",
				Short: "Fetch the modules a go.mod or go.sum lists into the cache",
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

// WarmViaAdmin posts file to the admin API's /goproxy/warm and prints the
// progress as it arrives; it fails if any artifact could not be fetched.
func WarmViaAdmin(adminAddr, file string, out io.Writer) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	resp, err := caddycmd.AdminAPIRequest(adminAddr, http.MethodPost, "/goproxy/warm", http.Header{"Content-Type": {"text/plain"}}, f)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var sum WarmSummary
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
	if err := sc.Err(); err != nil {
		return err
	}
	fmt.Fprintf(out, "%d artifacts: %d already cached, %d fetched, %d failed\n", sum.Total, sum.Cached, sum.Fetched, sum.Failed)
	if sum.Failed > 0 {
		return fmt.Errorf("%d artifacts could not be fetched", sum.Failed)
	}
	return nil
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
