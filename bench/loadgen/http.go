package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// httpCaller sends HTTP/1.1 requests over keep-alive connections, one per worker at most.
type httpCaller struct {
	client  *http.Client
	base    string
	method  string
	headers http.Header
	status  int
}

func newHTTPCaller(o *runOptions) (caller, error) {
	h := http.Header{}
	for _, kv := range o.headers {
		h.Add(kv[0], kv[1])
	}
	transport := &http.Transport{
		// No proxy from the environment: the bench talks to local servers.
		Proxy:               nil,
		MaxIdleConns:        o.concurrency,
		MaxIdleConnsPerHost: o.concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &httpCaller{
		client:  &http.Client{Transport: transport},
		base:    strings.TrimRight(o.target, "/"),
		method:  o.method,
		headers: h,
		status:  o.expectStatus,
	}, nil
}

func (c *httpCaller) call(ctx context.Context, r *Request) ([]byte, error) {
	method := c.method
	if method == "" {
		method = http.MethodGet
		if len(r.Body) > 0 {
			method = http.MethodPost
		}
	}
	var body io.Reader
	if len(r.Body) > 0 {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+r.Path, body)
	if err != nil {
		return nil, &callError{kind: "bad_request", detail: err.Error()}
	}
	for name, values := range c.headers {
		req.Header[name] = values
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	// Read to the end, so that the connection is kept for the next request.
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != c.status {
		return nil, &callError{kind: "http_" + strconv.Itoa(resp.StatusCode), detail: truncate(answer, 200)}
	}
	return answer, nil
}

func (c *httpCaller) close() {
	c.client.CloseIdleConnections()
}
