// Command heapdiff reads a heaptrack trace after heaptrack_interpret (gzipped) and prints which allocation sites
// gained or lost live memory between two moments of the run, with their call stacks:
//
//	heapdiff <trace.gz> <from seconds> <to seconds>
//
// heaptrack_print reports what is alive at the end; this answers "what grew between wave 8 and wave 9" for the
// benchmark's churn mode (README "Pressure").
package main

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// ipInfo is an instruction pointer's function name (an index into the strings).
type ipInfo struct{ fn int }

// trace is one frame of a call stack and the stack above it.
type trace struct{ ip, parent int }

// alloc is an allocation site: a size and the stack that asked for it.
type alloc struct {
	size  int64
	trace int
}

// hex reads one of the trace's hexadecimal numbers.
func hex(s string) int64 {
	v, _ := strconv.ParseInt(s, 16, 64)
	return v
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: heapdiff <trace.gz> <from seconds> <to seconds>")
		os.Exit(2)
	}
	t1, err1 := strconv.ParseFloat(os.Args[2], 64)
	t2, err2 := strconv.ParseFloat(os.Args[3], 64)
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "heapdiff: the moments are seconds since the start, e.g. 1013 1109")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "heapdiff:", err)
		os.Exit(1)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "heapdiff:", err)
		os.Exit(1)
	}
	sc := bufio.NewScanner(bufio.NewReaderSize(gz, 1<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	strs := []string{""}
	ips := []ipInfo{{}}
	traces := []trace{{}}
	allocs := []alloc{}
	live := []int64{}
	var snap1, snap2 []int64
	now := 0.0
	for sc.Scan() {
		line := sc.Text()
		if len(line) < 2 {
			continue
		}
		switch line[0] {
		case 's':
			parts := strings.SplitN(line, " ", 3)
			if len(parts) == 3 {
				strs = append(strs, parts[2])
			} else {
				strs = append(strs, "")
			}
		case 'i':
			p := strings.Fields(line)
			fn := 0
			if len(p) > 3 {
				fn = int(hex(p[3]))
			}
			ips = append(ips, ipInfo{fn})
		case 't':
			p := strings.Fields(line)
			traces = append(traces, trace{int(hex(p[1])), int(hex(p[2]))})
		case 'a':
			p := strings.Fields(line)
			allocs = append(allocs, alloc{hex(p[1]), int(hex(p[2]))})
			live = append(live, 0)
		case '+':
			live[hex(line[2:])]++
		case '-':
			live[hex(line[2:])]--
		case 'c':
			now = float64(hex(line[2:])) / 1000.0
			if snap1 == nil && now >= t1 {
				snap1 = append([]int64(nil), live...)
			}
			if snap2 == nil && now >= t2 {
				snap2 = append([]int64(nil), live...)
			}
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "heapdiff: reading the trace:", err)
		os.Exit(1)
	}
	if snap2 == nil {
		snap2 = live
	}
	byTrace := map[int]int64{}
	for i := range snap2 {
		var a int64
		if i < len(snap1) {
			a = snap1[i]
		}
		d := (snap2[i] - a) * allocs[i].size
		if d != 0 {
			byTrace[allocs[i].trace] += d
		}
	}
	type kv struct {
		t int
		d int64
	}
	var list []kv
	var total int64
	for t, d := range byTrace {
		list = append(list, kv{t, d})
		total += d
	}
	sort.Slice(list, func(i, j int) bool { return abs(list[i].d) > abs(list[j].d) })
	fmt.Printf("net %.2f MiB between %.0f s and %.0f s (end %.0f s)\n", float64(total)/1048576, t1, t2, now)
	for _, e := range list[:min(25, len(list))] {
		fmt.Printf("%+.2f MiB\n", float64(e.d)/1048576)
		t := e.t
		for depth := 0; t != 0 && depth < 14; depth++ {
			fn := strs[ips[traces[t].ip].fn]
			if len(fn) > 140 {
				fn = fn[:140]
			}
			fmt.Printf("     %s\n", fn)
			t = traces[t].parent
		}
	}
}

// abs is the magnitude of a change of live bytes.
func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
