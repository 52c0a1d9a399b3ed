//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// procCost is what a set of processes spent, summed over their threads:
// time on a CPU and context switches. A forward's set-up on a machine of
// few cores is bound by these more than by any one hop.
type procCost struct {
	cpu      time.Duration
	switches int
}

func (c procCost) minus(o procCost) procCost {
	return procCost{c.cpu - o.cpu, c.switches - o.switches}
}

// costOf reads the cost so far of the processes pids, from
// /proc/PID/task/*/schedstat (nanoseconds on a CPU) and status (context
// switches); threads that have ended are not counted.
func costOf(pids []int) procCost {
	var c procCost
	for _, pid := range pids {
		tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*")
		for _, task := range tasks {
			if b, err := os.ReadFile(task + "/schedstat"); err == nil {
				if f := strings.Fields(string(b)); len(f) > 0 {
					ns, _ := strconv.ParseInt(f[0], 10, 64)
					c.cpu += time.Duration(ns)
				}
			}
			b, err := os.ReadFile(task + "/status")
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
					n, _ := strconv.Atoi(strings.TrimSpace(v))
					c.switches += n
				}
			}
		}
	}
	return c
}

// withDescendants returns pid and every process below it: an sshd and the
// processes it started for a connection.
func withDescendants(pid int) []int {
	children := map[int][]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(b)
		end := strings.LastIndexByte(s, ')')
		if end < 0 {
			continue
		}
		f := strings.Fields(s[end+1:])
		child, _ := strconv.Atoi(strings.Fields(s)[0])
		if len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], child)
		}
	}
	all := []int{pid}
	for i := 0; i < len(all); i++ {
		all = append(all, children[all[i]]...)
	}
	return all
}
