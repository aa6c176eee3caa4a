package main

import (
	"bytes"
	"log"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// answerBytes stands for what a stray Vault answer may carry.
const answerBytes = `{"data":{"password":"s3cr3t-7b1f"}}`

// TestStdLogCarriesNoAnswerBytes: run routes the standard logger, through
// which net/http logs an unsolicited answer's first bytes, through the
// filter before anything else. The check runs run() in a child process
// (this test binary again), since run sets process-wide state and parses
// the process's flags.
func TestStdLogCarriesNoAnswerBytes(t *testing.T) {
	if os.Getenv("VAULTKMS_STDLOG_CHILD") == "1" {
		os.Args = []string{"vaultkms-controller", "--version"}
		if err := run(); err != nil {
			log.Fatal(err)
		}
		// The line net/http's transport writes (net/http/transport.go).
		log.Printf("Unsolicited response received on idle HTTP channel starting with %q; err=%v", answerBytes, nil)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestStdLogCarriesNoAnswerBytes$")
	cmd.Env = append(os.Environ(), "VAULTKMS_STDLOG_CHILD=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	if strings.Contains(stderr.String(), "s3cr3t") {
		t.Fatalf("the standard logger wrote an answer's bytes:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "content not logged") {
		t.Fatalf("the unsolicited-answer line was not replaced:\n%s", stderr.String())
	}
}
