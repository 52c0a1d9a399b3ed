package procfs

import (
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
)

func TestReadStat(t *testing.T) {
	// A command name with spaces and a parenthesis, as a program may
	// name itself.
	dir := t.TempDir()
	odd := dir + "/a b) c"
	if err := os.Symlink("/bin/sleep", odd); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(odd, "10")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	st, err := ReadStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if st.PPID != os.Getpid() || st.PGRP != pid || st.Session != pid || st.State == "" {
		t.Fatalf("stat %+v, want parent %d, group and session %d", st, os.Getpid(), pid)
	}
	pids, err := Pids()
	if err != nil || !slices.Contains(pids, pid) {
		t.Fatalf("Pids lacks %d: %v", pid, err)
	}
}

func TestStatusKiB(t *testing.T) {
	rss, err := StatusKiB(0, "VmRSS")
	if err != nil || rss <= 0 {
		t.Fatalf("own VmRSS: %d, %v", rss, err)
	}
	if _, err := StatusKiB(0, "NoSuchField"); err == nil {
		t.Fatal("a missing field read without error")
	}
}
