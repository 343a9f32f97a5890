package httperr

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// OneLine is the one form in which text from elsewhere (an upstream's
// error body, the go command's output, a reason another edge wrote) is
// echoed in an answer or a log: its first non-empty line, without control
// characters, trimmed, and cut to at most max bytes on a character
// boundary, so that it is never more than one line nor invalid UTF-8.
func OneLine(text string, max int) string {
	line, _, _ := strings.Cut(strings.TrimSpace(text), "\n")
	line = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return -1
		}
		return r
	}, line)
	line = strings.TrimSpace(line)
	if len(line) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut--
		}
		line = strings.TrimSpace(line[:cut])
	}
	return line
}
