package vault

import (
	"bytes"
	"log"
	"strings"
	"testing"
)

func TestStdLogFilterDropsAnswerBytes(t *testing.T) {
	var out bytes.Buffer
	l := log.New(StdLogFilter(&out), "", 0)
	l.Printf("Unsolicited response received on idle HTTP channel starting with %q; err=<nil>", `HTTP/1.1 200 OK\r\n\r\n{"data":{"plaintext":"c2VjcmV0"}}`)
	l.Printf("some other line")
	got := out.String()
	if strings.Contains(got, "c2VjcmV0") || !strings.Contains(got, "nobody asked for") || !strings.Contains(got, "some other line") {
		t.Fatalf("filtered log:\n%s", got)
	}
}
