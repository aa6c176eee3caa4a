package vault

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
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

// Classify returns the kind of err. An *Error decides by its Kind; other
// errors (from code that calls the api package directly) are sorted by what
// they wrap.
func Classify(err error) Kind {
	if err == nil {
		return KindOther
	}
	var ve *Error
	if errors.As(err, &ve) {
		return ve.Kind
	}
	return classifyRaw(err)
}

func classifyRaw(err error) Kind {
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
	// A request refused before it left (a redirect elsewhere) and an
	// answer over its limit are Vault, or something between, misbehaving.
	var te *TargetError
	if errors.As(err, &te) || errors.Is(err, ErrAnswerTooLarge) || errors.Is(err, errStaleAnswer) {
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
		code == 472, code == 473, // Vault's "performance standby"/"DR" codes
		// Enterprise's read-after-write consistency: the node has not yet
		// seen the index asked for; the same request succeeds shortly.
		code == http.StatusPreconditionFailed:
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

// Error is a Vault failure as the rest of vaultkms sees it: created once,
// where internal/vault (or a caller of Wrap) meets the api package, with
// its kind decided and its text already safe to show: Vault's own messages
// (which never echo request bodies) and the status code, or the transport
// failure without Vault's address; never a URL, token or request body.
type Error struct {
	// Kind is what a caller should do about it.
	Kind Kind
	// Op says what was attempted, such as "log in at auth/approle/login".
	Op string
	// Status is Vault's HTTP status; 0 when Vault did not answer.
	Status int
	// Detail is the sanitized reason.
	Detail string
	cause  error
}

func (e *Error) Error() string {
	if e.Op == "" {
		return e.Detail
	}
	return e.Op + ": " + e.Detail
}

// Unwrap lets errors.Is find context errors; the cause's own text (which
// may hold a URL) is never part of Error().
func (e *Error) Unwrap() error { return e.cause }

// Wrap turns err from a Vault request into an *Error naming op. An error
// that already holds an *Error keeps it and gains op as context; nil stays
// nil.
func Wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var ve *Error
	if errors.As(err, &ve) {
		return fmt.Errorf("%s: %w", op, err)
	}
	e := &Error{Kind: classifyRaw(err), Op: op, Detail: describeRaw(err), cause: err}
	var re *api.ResponseError
	var se *StatusError
	switch {
	case errors.As(err, &re):
		e.Status = re.StatusCode
	case errors.As(err, &se):
		e.Status = se.Code
	}
	return e
}

// Describe renders err for logs, health reasons and status conditions,
// keeping all the context it was wrapped with. An *Error in the chain is
// already sanitized; otherwise the parts that may carry a URL (the api
// package's response errors, *url.Error, *net.OpError) are replaced with
// their sanitized form.
func Describe(err error) string {
	if err == nil {
		return ""
	}
	var ve *Error
	if errors.As(err, &ve) {
		return err.Error()
	}
	full := err.Error()
	var re *api.ResponseError
	if errors.As(err, &re) {
		return replaceTail(full, re.Error(), describeRaw(re))
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return replaceTail(full, ue.Error(), describeRaw(ue.Err))
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return replaceTail(full, oe.Error(), describeRaw(oe))
	}
	return full
}

// replaceTail replaces inner in full, or returns repl alone when full does
// not contain it (a wrapper that formatted its cause differently).
func replaceTail(full, inner, repl string) string {
	if i := strings.Index(full, inner); i >= 0 {
		return full[:i] + repl + full[i+len(inner):]
	}
	return repl
}

func describeRaw(err error) string {
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
	var se *StatusError
	if errors.As(err, &se) {
		return se.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer before the deadline"
	}
	if errors.Is(err, context.Canceled) {
		return "canceled"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Op + ": " + oe.Err.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return describeRaw(ue.Err)
	}
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return "TLS: " + ce.Err.Error()
	}
	return err.Error()
}
