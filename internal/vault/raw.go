package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/hashicorp/vault/api"
)

// MaxTransitAnswer bounds what Raw reads of one answer: a Transit batch
// of 128 wrapped seeds is a few tens of KiB.
const MaxTransitAnswer = 1 << 20

// Raw sends requests over a client's connections and headers (namespace
// included) without the api package's per-request work: its rate
// limiter, its retry wrapper, which copies every body, and its header
// cloning. The plugin's Transit calls are on kube-apiserver's path to
// etcd, where that work was a measurable part of each call's latency.
type Raw struct {
	hc      *http.Client
	addr    string
	headers http.Header
}

// NewRaw takes c's HTTP client, address and headers as they are now.
func NewRaw(c *api.Client) *Raw {
	return &Raw{hc: c.CloneConfig().HttpClient, addr: c.Address(), headers: c.Headers()}
}

// Post sends body to path (such as "transit/encrypt/kms") with token and
// returns Vault's status and answer, at most MaxTransitAnswer bytes.
// Redirects are the transport's (see transport.RoundTrip): a client from
// NewClient never returns a 3xx. A failure to reach Vault is the error;
// any other answer, error statuses included, is returned for the caller
// to read.
func (r *Raw) Post(ctx context.Context, path, token string, body []byte) (int, []byte, error) {
	target := r.addr + "/v1/" + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("build request: %w", err)
	}
	for k, v := range r.headers {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	// Transit encrypt and decrypt change nothing in Vault: safe to send
	// again (see roundTripFresh). A nil value marks without sending it.
	req.Header["Idempotency-Key"] = nil
	if token != "" {
		req.Header.Set(api.AuthHeaderName, token)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, MaxTransitAnswer+1))
	resp.Body.Close()
	if err != nil {
		return 0, nil, err
	}
	if len(answer) > MaxTransitAnswer {
		return 0, nil, &Error{Kind: KindUnavailable, Status: resp.StatusCode, Detail: fmt.Sprintf("vault's answer is larger than %d KiB; refused", MaxTransitAnswer>>10), cause: ErrAnswerTooLarge}
	}
	return resp.StatusCode, answer, nil
}

// AnswerError turns a Vault answer that is not a success into a
// *StatusError with Vault's own messages, or nil for a 2xx answer.
func AnswerError(code int, answer []byte) error {
	if code >= 200 && code < 300 {
		return nil
	}
	var body struct {
		Errors []string `json:"errors"`
	}
	_ = json.Unmarshal(answer, &body)
	return &StatusError{Code: code, Errors: body.Errors}
}
