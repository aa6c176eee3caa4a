// Command nodeapp is the application TestChartOnNode runs on the test node
// (e2e/harness/node.go): it reads a Secret the way applications do, as an
// environment variable and as a mounted file, and prints what it sees to
// its log, which the test reads through the API server (pods/log, served
// by the kubelet). It prints a line at start and one whenever the file's
// content changes, and exits on SIGTERM. It prints a SHA-256 prefix of
// each value, never the value itself: the values are test secrets.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

func main() {
	env, file := os.Getenv("NODEAPP_ENV"), os.Getenv("NODEAPP_FILE")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	fmt.Printf("start env=%s\n", digest([]byte(os.Getenv(env))))
	last := ""
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(file); err == nil {
			if d := digest(b); d != last {
				fmt.Printf("file=%s\n", d)
				last = d
			}
		}
		select {
		case <-sig:
			return
		case <-tick.C:
		}
	}
}
