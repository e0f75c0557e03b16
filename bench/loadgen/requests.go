package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"sync/atomic"
)

// Request is one line of the requests file; Body is base64 in the file.
type Request struct {
	Path string `json:"path"`
	Body []byte `json:"body"`
}

func readRequests(name string) ([]Request, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Request
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 64*1024), 64*1024*1024)
	for line := 1; scanner.Scan(); line++ {
		if len(scanner.Bytes()) == 0 {
			continue
		}
		var r Request
		if err := json.Unmarshal(scanner.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s line %d: %w (want {\"path\": ..., \"body\": base64})", name, line, err)
		}
		out = append(out, r)
	}
	if err := scanner.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no request", name)
	}
	return out, nil
}

// picker hands out requests: in file order shared by all workers (round-robin), or at random
// per worker; with once, each request at most once, and none when all were handed out.
type picker struct {
	requests []Request
	next     atomic.Int64
	once     bool
	random   bool
}

func (p *picker) pick(rng *rand.Rand) (*Request, bool) {
	if p.random && !p.once {
		return &p.requests[rng.IntN(len(p.requests))], true
	}
	i := p.next.Add(1) - 1
	if p.once {
		if i >= int64(len(p.requests)) {
			return nil, false
		}
		return &p.requests[i], true
	}
	return &p.requests[i%int64(len(p.requests))], true
}
