// The pod sandbox's process: it holds the pod's namespaces and reaps nothing but its own
// children. No registry serves the usual pause image here, so the cluster builds this one.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		children := make(chan os.Signal, 8)
		signal.Notify(children, syscall.SIGCHLD)
		for range children {
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}()
	<-signals
}
