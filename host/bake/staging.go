package bake

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// A staging area is a directory where a bake writes before its output is
// renamed into place, beside the output or in TMPDIR. It is named for its
// owner's pid (.cork-bake-PID-RANDOM) and locked with flock(2) by its owner
// for the bake's life: the kernel drops the lock when the owner dies,
// however it dies, so a later bake can tell an area left by a killed run
// from one in use, even across pid namespaces, and remove it.

const stagingPrefix = ".cork-bake-"

type staging struct {
	dir  string
	lock *os.File // the directory, flocked
}

// inProgress holds this process's staging areas, for Abandon. Its lock is
// held across a commit's last check of its context and its renames.
var inProgress struct {
	sync.Mutex
	areas     map[*staging]bool
	committed bool // an output was renamed into place
	abandoned bool // Abandon ran: no output is renamed into place after it
}

// newStaging makes a staging area in parent, after removing stale ones.
func newStaging(parent string) (*staging, error) {
	cleanStale(parent)
	dir, err := os.MkdirTemp(parent, fmt.Sprintf("%s%d-", stagingPrefix, os.Getpid()))
	if err != nil {
		return nil, err
	}
	f, err := os.Open(dir)
	if err == nil {
		if err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	s := &staging{dir: dir, lock: f}
	inProgress.Lock()
	if inProgress.areas == nil {
		inProgress.areas = map[*staging]bool{}
	}
	inProgress.areas[s] = true
	inProgress.Unlock()
	return s, nil
}

// remove deletes the area and everything in it.
func (s *staging) remove() {
	inProgress.Lock()
	delete(inProgress.areas, s)
	inProgress.Unlock()
	os.RemoveAll(s.dir)
	s.lock.Close()
}

// Abandon removes the staging areas of every bake in progress, for a
// process that exits without waiting for them (a second Ctrl-C), and
// reports whether an output was already renamed into place: a commit in
// progress finishes first. After it, no bake commits.
func Abandon() (committed bool) {
	inProgress.Lock()
	defer inProgress.Unlock()
	for s := range inProgress.areas {
		os.RemoveAll(s.dir)
	}
	inProgress.areas = nil
	inProgress.abandoned = true
	return inProgress.committed
}

// cleanStale removes the staging areas in dir whose owner is gone: its pid
// names no process here and its lock is free. An area another user owns,
// or one named in another way, is left alone.
func cleanStale(dir string) {
	paths, _ := filepath.Glob(filepath.Join(dir, stagingPrefix+"*"))
	for _, p := range paths {
		// Older corks named areas .cork-bake-RANDOM, without a pid or a
		// lock: such an area cannot be told from one in use.
		pid, _, named := strings.Cut(strings.TrimPrefix(filepath.Base(p), stagingPrefix), "-")
		n, err := strconv.Atoi(pid)
		if !named || err != nil || n <= 0 {
			continue
		}
		// Alive, or another user's (EPERM): between its mkdir and its
		// flock, an area in use is known only by its pid.
		if err := syscall.Kill(n, 0); err == nil || err == syscall.EPERM {
			continue
		}
		removeIfUnlocked(p)
	}
}

func removeIfUnlocked(p string) {
	st, err := os.Lstat(p)
	if err != nil || !st.IsDir() {
		return
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || int(sys.Uid) != os.Geteuid() {
		return
	}
	f, err := os.Open(p)
	if err != nil {
		return
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return
	}
	os.RemoveAll(p)
}
