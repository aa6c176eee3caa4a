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

// maxAnswer bounds what a raw request reads of Vault's answer.
const maxAnswer = 4 << 20

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
// returns Vault's status and answer. It follows one 307 to a standby's
// active node, as the api package does. A failure to reach Vault is the
// error; any answer, error statuses included, is returned for the caller
// to read.
func (r *Raw) Post(ctx context.Context, path, token string, body []byte) (int, []byte, error) {
	target := r.addr + "/v1/" + path
	ctx = Inline(ctx)
	for redirects := 0; ; redirects++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
		if err != nil {
			return 0, nil, fmt.Errorf("build request: %w", err)
		}
		for k, v := range r.headers {
			req.Header[k] = v
		}
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set(api.AuthHeaderName, token)
		}
		resp, err := r.hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		resp.Body.Close()
		if err != nil {
			return 0, nil, err
		}
		if resp.StatusCode == http.StatusTemporaryRedirect && redirects == 0 {
			loc, lerr := resp.Location()
			if lerr == nil {
				target = loc.String()
				continue
			}
		}
		return resp.StatusCode, answer, nil
	}
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
