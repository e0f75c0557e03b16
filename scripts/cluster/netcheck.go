// netcheck: a static probe for pods of the local cluster (scripts/cluster/smoke.py).
//
//	netcheck tcp HOST:PORT    exit 0 when a TCP connection opens within 3 s
//	netcheck http URL         print the body of a GET, exit 0 on HTTP 200
//	netcheck sleep            wait forever (the pod's main process)
//
// Names resolve with Go's own resolver, so /etc/resolv.conf's search list applies.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: netcheck tcp HOST:PORT | http URL | sleep")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "sleep":
		for {
			time.Sleep(time.Hour)
		}
	case "tcp":
		conn, err := net.DialTimeout("tcp", os.Args[2], 3*time.Second)
		if err != nil {
			fmt.Println("failed:", err)
			os.Exit(1)
		}
		fmt.Println("connected to", conn.RemoteAddr())
		conn.Close()
	case "http":
		client := http.Client{Timeout: 5 * time.Second}
		resp, err := client.Get(os.Args[2])
		if err != nil {
			fmt.Println("failed:", err)
			os.Exit(1)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("HTTP %d: %s", resp.StatusCode, body)
		if resp.StatusCode != 200 {
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
