// Package procfs reads what corkd, its tests and its benchmark need from
// Linux's /proc: a process's state, parent, process group and session, its
// memory figures, and the TCP sockets.
package procfs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat is the part of /proc/PID/stat corkd reads.
type Stat struct {
	State   string // "R", "S", "Z", ...
	PPID    int
	PGRP    int
	Session int
}

// ReadStat reads /proc/PID/stat. The command name may hold spaces and
// parentheses, so the fields are counted from the last ')'.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 4 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: %d fields after the command name", pid, len(f))
	}
	st := Stat{State: f[0]}
	for j, dst := range []*int{&st.PPID, &st.PGRP, &st.Session} {
		if *dst, err = strconv.Atoi(f[j+1]); err != nil {
			return Stat{}, fmt.Errorf("/proc/%d/stat: field %d: %v", pid, j+2, err)
		}
	}
	return st, nil
}

// Pids lists the processes running now.
func Pids() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// StatusKiB reads a field of /proc/PID/status given in kB ("VmRSS",
// "VmHWM"); pid 0 is the calling process.
func StatusKiB(pid int, field string) (int, error) {
	name := "self"
	if pid != 0 {
		name = strconv.Itoa(pid)
	}
	b, err := os.ReadFile("/proc/" + name + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("/proc/%s/status has no %s", name, field)
}
