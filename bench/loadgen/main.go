// Command loadgen is the benches' closed-loop load generator: N workers, each with exactly one
// request in flight, over HTTP/1.1 (keep-alive) or gRPC unary calls, for a fixed time. It
// prints one JSON object on stdout: counts, errors by kind, throughput, latency percentiles
// and how many answers said they were served from a cache.
//
//	loadgen run -proto http|grpc -target ADDRESS -requests FILE [flags]
//	loadgen serve-trivial [-http-port P] [-grpc-port Q]
//
// The requests file holds one request a line, as JSON: {"path": "...", "body": "<base64>"}.
// For HTTP the path is the URL's path and query, the body (if any) is sent with POST unless
// -method says otherwise; for gRPC the path is the full method name
// ("/mpp.v1.Recommender/Recommend") and the body the serialized request message, sent as it
// is (no generated stubs: a codec that passes bytes through).
//
// serve-trivial answers every HTTP request and every gRPC method with a fixed small body, so
// that a run against it measures the generator's own ceiling. It prints
// {"http": PORT, "grpc": PORT} once listening and serves until its standard input closes.
package main

import (
	"fmt"
	"os"
)

// commands are the program's modes, each with its own flags.
var commands = map[string]func(args []string) error{
	"run":           runCommand,
	"serve-trivial": serveTrivialCommand,
}

func main() {
	var command func([]string) error
	if len(os.Args) > 1 {
		command = commands[os.Args[1]]
	}
	if command == nil {
		fmt.Fprintln(os.Stderr, "usage: loadgen run|serve-trivial [flags] (-h for the flags)")
		os.Exit(2)
	}
	if err := command(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}
