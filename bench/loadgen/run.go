package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"
)

// caller sends one request and returns the answer's body; err's kind names the failure
// (an HTTP status, a gRPC code, "transport").
type caller interface {
	call(ctx context.Context, r *Request) ([]byte, error)
	close()
}

// callError is a failed call: kind groups failures in the output.
type callError struct {
	kind   string
	detail string
}

func (e *callError) Error() string { return e.kind + ": " + e.detail }

// headers are the -header flags, each "Name: value", split.
type headers [][2]string

func (h *headers) String() string { return fmt.Sprint(*h) }

func (h *headers) Set(line string) error {
	name, value, ok := strings.Cut(line, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("header %q: want \"Name: value\"", line)
	}
	*h = append(*h, [2]string{strings.TrimSpace(name), strings.TrimSpace(value)})
	return nil
}

type runOptions struct {
	proto, target, file, method string
	concurrency, conns, procs   int
	seconds, warmup, timeout    time.Duration
	once, random                bool
	headers                     headers
	check                       answerCheck
	expectStatus                int
}

func runCommand(args []string) error {
	var o runOptions
	var hitBytes, expectBytes string
	var seconds, warmup, timeout float64
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&o.proto, "proto", "http", "http or grpc")
	fs.StringVar(&o.target, "target", "", "http://HOST:PORT (http) or HOST:PORT (grpc)")
	fs.StringVar(&o.file, "requests", "", "the requests file: JSON lines {\"path\", \"body\" (base64)}")
	fs.StringVar(&o.method, "method", "", "HTTP method (default: POST for a request with a body, else GET)")
	fs.IntVar(&o.concurrency, "concurrency", 1, "workers, each with one request in flight")
	fs.IntVar(&o.conns, "conns", 1, "gRPC connections the workers share (HTTP: one per worker)")
	fs.IntVar(&o.procs, "procs", 0, "GOMAXPROCS (0: Go's default, every core)")
	fs.Float64Var(&seconds, "seconds", 5, "how long to measure")
	fs.Float64Var(&warmup, "warmup", 0, "seconds of calls before measuring, not counted (not with -once)")
	fs.Float64Var(&timeout, "timeout", 10, "seconds one call may take")
	fs.BoolVar(&o.once, "once", false, "send each request at most once; stop early when all were sent")
	fs.BoolVar(&o.random, "random", false, "each worker picks requests at random (default: file order, shared)")
	fs.Var(&o.headers, "header", "\"Name: value\" sent with every request (gRPC: metadata); repeatable")
	fs.StringVar(&hitBytes, "hit-bytes", "", "an answer holding these bytes is a hit (e.g. '\"cached\":true')")
	fs.IntVar(&o.check.hitField, "hit-field", 0, "an answer whose top-level protobuf varint field N is non-zero is a hit")
	fs.StringVar(&expectBytes, "expect-bytes", "", "an answer without these bytes is an error (unexpected_answer)")
	fs.IntVar(&o.check.expectField, "expect-field", 0, "an answer without top-level protobuf field N is an error")
	fs.IntVar(&o.expectStatus, "expect-status", 200, "HTTP status of a good answer")
	_ = fs.Parse(args)
	o.check.hitBytes, o.check.expectBytes = []byte(hitBytes), []byte(expectBytes)
	o.seconds = time.Duration(seconds * float64(time.Second))
	o.warmup = time.Duration(warmup * float64(time.Second))
	o.timeout = time.Duration(timeout * float64(time.Second))
	if o.target == "" || o.file == "" {
		return errors.New("run needs -target and -requests")
	}
	if o.concurrency < 1 || o.conns < 1 {
		return errors.New("-concurrency and -conns must be at least 1")
	}
	if o.procs > 0 {
		runtime.GOMAXPROCS(o.procs)
	}
	requests, err := readRequests(o.file)
	if err != nil {
		return err
	}
	var c caller
	switch o.proto {
	case "http":
		c, err = newHTTPCaller(&o)
	case "grpc":
		c, err = newGRPCCaller(&o)
	default:
		err = fmt.Errorf("-proto %q: use http or grpc", o.proto)
	}
	if err != nil {
		return err
	}
	defer c.close()
	result := closedLoop(c, &o, requests)
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	return out.Encode(result)
}

// closedLoop runs o.concurrency workers, each sending its next request as soon as its last
// one is answered, until o.seconds have passed (or, with -once, the requests ran out).
func closedLoop(c caller, o *runOptions, requests []Request) *Result {
	if o.warmup > 0 && !o.once {
		measure(c, o, &picker{requests: requests, random: o.random}, o.warmup)
	}
	p := &picker{requests: requests, once: o.once, random: o.random}
	tallies, elapsed := measure(c, o, p, o.seconds)
	result := &Result{Proto: o.proto, Concurrency: o.concurrency, GoMaxProcs: runtime.GOMAXPROCS(0)}
	if o.proto == "grpc" {
		result.Connections = o.conns
	}
	result.Exhausted = o.once && p.next.Load() >= int64(len(requests))
	summarize(result, tallies, elapsed, &o.check)
	return result
}

func measure(c caller, o *runOptions, p *picker, seconds time.Duration) ([]*tally, time.Duration) {
	tallies := make([]*tally, o.concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(seconds)
	for w := range o.concurrency {
		t := &tally{errors: map[string]int{}, latencies: make([]time.Duration, 0, 4096)}
		tallies[w] = t
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 0x6c6f616467656e))
			for time.Now().Before(deadline) {
				r, ok := p.pick(rng)
				if !ok {
					return
				}
				work(c, o, r, t)
			}
		}(uint64(w) + 1)
	}
	wg.Wait()
	return tallies, time.Since(start)
}

// work sends one request and records how it went.
func work(c caller, o *runOptions, r *Request, t *tally) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	started := time.Now()
	body, err := c.call(ctx, r)
	took := time.Since(started)
	var failed *callError
	switch {
	case errors.As(err, &failed):
		t.fail(failed.kind, failed.detail)
	case err != nil:
		t.fail("transport", err.Error())
	case !o.check.isExpected(body):
		t.fail("unexpected_answer", truncate(body, 120))
	default:
		t.latencies = append(t.latencies, took)
		if o.check.countsHits() && o.check.isHit(body) {
			t.hits++
		}
	}
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
