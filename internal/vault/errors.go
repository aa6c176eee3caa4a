package vault

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/hashicorp/vault/api"
)

// Kind sorts a Vault error by what the caller should do about it.
type Kind int

const (
	// KindOther is an error that fits no other kind.
	KindOther Kind = iota
	// KindUnavailable means Vault could not answer now: unreachable, sealed,
	// a standby without a leader, overloaded, or too slow. Retry later.
	KindUnavailable
	// KindDenied means Vault refused the token: log in again.
	KindDenied
	// KindInvalid means Vault rejected the request itself.
	KindInvalid
	// KindNotFound means the path does not exist.
	KindNotFound
)

func (k Kind) String() string {
	switch k {
	case KindUnavailable:
		return "unavailable"
	case KindDenied:
		return "denied"
	case KindInvalid:
		return "invalid"
	case KindNotFound:
		return "not_found"
	default:
		return "error"
	}
}

// Classify returns the kind of err.
func Classify(err error) Kind {
	if err == nil {
		return KindOther
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		return kindOfStatus(re.StatusCode)
	}
	var se *StatusError
	if errors.As(err, &se) {
		return kindOfStatus(se.Code)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return KindUnavailable
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return KindUnavailable
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return KindUnavailable
	}
	// The HTTP client wraps transport failures in *url.Error, which is a
	// net.Error; anything else from below HTTP (EOF on a reset connection)
	// is still Vault being unreachable.
	msg := err.Error()
	if strings.Contains(msg, "EOF") || strings.Contains(msg, "connection reset") {
		return KindUnavailable
	}
	return KindOther
}

func kindOfStatus(code int) Kind {
	switch {
	case code == http.StatusForbidden, code == http.StatusUnauthorized:
		return KindDenied
	case code == http.StatusNotFound:
		return KindNotFound
	case code == http.StatusTooManyRequests, code == http.StatusServiceUnavailable,
		code == http.StatusBadGateway, code == http.StatusGatewayTimeout,
		code == 472, code == 473: // Vault's "performance standby"/"DR" codes
		return KindUnavailable
	case code >= 400 && code < 500:
		return KindInvalid
	case code >= 500:
		return KindUnavailable
	}
	return KindOther
}

// StatusError is a Vault HTTP answer that was not a success, for requests
// made below the api package's helpers.
type StatusError struct {
	Code   int
	Errors []string
}

func (e *StatusError) Error() string {
	if len(e.Errors) == 0 {
		return "vault answered HTTP " + http.StatusText(e.Code)
	}
	return "vault answered HTTP " + strconv.Itoa(e.Code) + ": " + strings.Join(e.Errors, "; ")
}

// Describe renders err for logs, health reasons and status conditions. It
// keeps Vault's own messages (which never echo request bodies) and the
// status code, and drops request URLs' query strings and anything else the
// api package appends.
func Describe(err error) string {
	if err == nil {
		return ""
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		msgs := re.Errors
		if re.RawError {
			msgs = []string{"unparsable response body"}
		}
		s := "HTTP " + strconv.Itoa(re.StatusCode)
		if len(msgs) > 0 {
			s += ": " + strings.Join(msgs, "; ")
		}
		return s
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer before the deadline"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Op + ": " + oe.Err.Error()
	}
	return err.Error()
}
