// Command pause is the sandbox ("pause") container of the test node's pods
// (e2e/harness/node.go): it holds the pod's namespaces open and does
// nothing else. Built here and put in an image FROM scratch, so the node
// pulls nothing. It sleeps until SIGTERM or SIGINT and then exits 0, as the
// upstream pause does.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
