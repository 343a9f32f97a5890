// Package httperr is the proxy's one error vocabulary: an Error carries the
// HTTP status and the one-line, client-safe reason of a failed request
// from wherever it arose (a bad path, an upstream, a cache, the checksum
// database) to the edge that answers it. OneLine is the one form of text
// echoed from elsewhere. NotFoundCache remembers not-found answers for a
// while, bounded.
package httperr

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a failed request with its HTTP meaning. Msg is one line that is
// safe to show to clients: it never holds upstream URLs or credentials,
// which stay in Err, for the log.
type Error struct {
	Status int    // the status the client gets
	Msg    string // client-safe reason
	Source string // what failed, for logs
	Err    error  // underlying cause, for logs only
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Source, e.Msg, e.Err)
	}
	if e.Source == "" {
		return e.Msg
	}
	return e.Source + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an Error.
func New(status int, source, msg string) *Error {
	return &Error{Status: status, Msg: msg, Source: source}
}

// Wrap returns an Error with a cause for the log.
func Wrap(status int, source, msg string, err error) *Error {
	return &Error{Status: status, Msg: msg, Source: source, Err: err}
}

// BadRequest is a 400 for input that cannot name an artifact.
func BadRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Msg: fmt.Sprintf(format, args...)}
}

// As finds the Error in err's chain.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Status is the HTTP status err stands for: 500 if it carries none.
func Status(err error) int {
	if e, ok := As(err); ok {
		return e.Status
	}
	return http.StatusInternalServerError
}

// IsNotFound reports whether err says the source does not have the
// artifact (404 or 410), the only answer on which a ',' upstream list
// falls through and that is remembered.
func IsNotFound(err error) bool {
	s := Status(err)
	return s == http.StatusNotFound || s == http.StatusGone
}

// IsRefusal reports whether err is the source's deliberate answer that it
// will not serve the artifact (403), which, like a not-found, is passed on
// rather than papered over with a stale copy.
func IsRefusal(err error) bool { return Status(err) == http.StatusForbidden }
