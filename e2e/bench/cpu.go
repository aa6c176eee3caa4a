package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTicks is Linux's USER_HZ, the unit of /proc/<pid>/stat's times.
const clockTicks = 100

// cpuSample is the CPU time (user and system) used so far by this process
// and each of its descendants (the API server, etcd, Vault, the
// controller), summed by command name.
type cpuSample map[string]time.Duration

// sampleCPU reads /proc. On two shared cores every process of a run takes
// from the same budget, so where the CPU went says what a ratio to the
// floor is made of.
func sampleCPU() cpuSample {
	type proc struct {
		ppid  int
		comm  string
		ticks int64
	}
	procs := map[int]proc{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// comm is in parentheses and may hold spaces; the fields after
		// the last ')' are: state ppid ... utime(12th) stime(13th).
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		procs[pid] = proc{ppid: ppid, comm: s[open+1 : end], ticks: ut + st}
	}
	self := os.Getpid()
	out := cpuSample{}
	for pid, p := range procs {
		name := p.comm
		if pid != self {
			anc := p.ppid
			for anc > 1 && anc != self {
				anc = procs[anc].ppid
			}
			if anc != self {
				continue
			}
		} else {
			name = "bench (writers, watch)"
		}
		out[name] += time.Duration(p.ticks) * time.Second / clockTicks
	}
	return out
}

// since is the CPU each command used between was and s, largest first,
// as "name 1.2s".
func (s cpuSample) since(was cpuSample) string {
	type use struct {
		name string
		d    time.Duration
	}
	var uses []use
	var total time.Duration
	for name, d := range s {
		if d -= was[name]; d > 0 {
			uses = append(uses, use{name, d})
			total += d
		}
	}
	slices.SortFunc(uses, func(a, b use) int { return int(b.d - a.d) })
	parts := make([]string, 0, len(uses))
	for _, u := range uses {
		parts = append(parts, fmt.Sprintf("%s %.1fs", u.name, u.d.Seconds()))
	}
	return fmt.Sprintf("%.1f CPU-seconds: %s", total.Seconds(), strings.Join(parts, ", "))
}
