package fetcher

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/piraeus-go/piraeus/httperr"
)

// maxClientText bounds a relayed reason: the go command shows such bodies
// to its user, and one line is all a reason needs.
const maxClientText = 300

// maxScannedText bounds the line that ClientText scans for URLs, hosts
// and secrets before it cuts the result to maxClientText.
const maxScannedText = 4096

var (
	// scheme://anything, and scp-like git remotes (user@host:path).
	urlText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>]*|[A-Za-z0-9._-]+@[A-Za-z0-9.-]*\.[A-Za-z][A-Za-z0-9-]*:[^\s'"<>]+`)
	// IPv4 with an optional port, bracketed IPv6 with an optional port,
	// and bare IPv6 (two or more colons between hex groups).
	addrText = regexp.MustCompile(`\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\[[0-9A-Fa-f:.%A-Za-z]+\](?::\d+)?|\b(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}\b`)
	// A host name (two or more labels), optionally with a port. A name
	// followed by '/' is a module path, which is kept.
	hostText = regexp.MustCompile(`\b[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+(?::\d+)?\b/?`)
)

// File names and version-like words that look like host names.
var notHosts = map[string]bool{"mod": true, "sum": true, "zip": true, "info": true, "go": true, "json": true, "txt": true, "git": true, "netrc": true}

// ClientText makes text from an upstream proxy, a checksum database or the
// go command safe to relay to a client: its first line only, bounded, with
// control characters removed and every URL, IP address and host name
// replaced, so that no credentials, internal hosts or resolver addresses
// leave. Host names that begin a module path (host/...) stay, as do those
// named in keep (the module asked for, a public checksum database).
func ClientText(text string, keep ...string) string {
	line := httperr.OneLine(text, maxScannedText)
	line = Secrets(line)
	line = urlText.ReplaceAllString(line, "<url>")
	line = addrText.ReplaceAllString(line, "<address>")
	line = hostText.ReplaceAllStringFunc(line, func(h string) string {
		if strings.HasSuffix(h, "/") {
			return h // a module path
		}
		name, _, _ := strings.Cut(h, ":")
		lower := strings.ToLower(name)
		if last := lower[strings.LastIndexByte(lower, '.')+1:]; notHosts[last] || looksLikeVersion(lower) {
			return h
		}
		for _, k := range keep {
			k = strings.ToLower(k)
			if k == lower || strings.HasPrefix(k, lower+"/") {
				return h
			}
		}
		return "<host>"
	})
	return httperr.OneLine(line, maxClientText)
}

var (
	// Tokens by their well-known shapes: GitHub (ghp_, gho_, ghu_, ghs_,
	// ghr_, github_pat_), GitLab (glpat-, gldt-, glrt-...), AWS access key
	// ids, Slack, a JWT; and what follows "Bearer" or "Basic".
	tokenText = regexp.MustCompile(`\b(?:gh[pousr]_[A-Za-z0-9_]{8,}|github_pat_[A-Za-z0-9_]{8,}|gl[a-z]{2,6}-[A-Za-z0-9_-]{8,}|(?:AKIA|ASIA)[A-Z0-9]{12,}|xox[abprs]-[A-Za-z0-9-]{8,}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)|(?i:\b(?:bearer|basic|token)\s+)[A-Za-z0-9._~+/=-]{8,}`)
	// key=value and key: value pairs whose key names a secret.
	secretPair = regexp.MustCompile(`(?i)\b([a-z0-9_.-]*(?:token|secret|passw(?:or)?d|pwd|api[_-]?key|access[_-]?key|auth|credential|signature|sig)[a-z0-9_.-]*)(\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s&;,"']+)`)
)

// Secrets replaces token-shaped strings and the values of secret-named
// key=value pairs in text with "<redacted>".
func Secrets(text string) string {
	text = tokenText.ReplaceAllStringFunc(text, func(m string) string {
		if i := strings.LastIndexAny(m, " \t"); i >= 0 {
			return m[:i+1] + "<redacted>" // keep "Bearer "
		}
		return "<redacted>"
	})
	return secretPair.ReplaceAllString(text, "$1$2<redacted>")
}

// RedactURL is a URL fit for logs and status pages: its userinfo, query
// and fragment are replaced. Text that is not a URL is redacted as Secrets.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return Secrets(raw)
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	if u.RawQuery != "" {
		u.RawQuery = "redacted"
	}
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}

// RedactList is a GOPROXY-style list with each entry as RedactURL makes
// it, separators kept.
func RedactList(list string) string {
	var b strings.Builder
	for list != "" {
		i := strings.IndexAny(list, ",|")
		if i < 0 {
			i = len(list)
		}
		b.WriteString(RedactURL(strings.TrimSpace(list[:i])))
		if i < len(list) {
			b.WriteByte(list[i])
			i++
		}
		list = list[i:]
	}
	return b.String()
}

// looksLikeVersion reports whether a dotted word is a version (v1.2.3, 1.21).
func looksLikeVersion(s string) bool {
	s = strings.TrimPrefix(s, "v")
	return s != "" && s[0] >= '0' && s[0] <= '9'
}
