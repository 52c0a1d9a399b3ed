package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
)

// Attacks on userThread, the thread a forwarding connection's dials share,
// which took the user's identity while corkd runs as root. They need root
// and make users of their own (corkx*).

var attackUsers atomic.Int32

// attackUser makes a user of its own for the test and returns its account.
func attackUser(t *testing.T) *account.Account {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("no useradd (apt-get install passwd)")
	}
	name := fmt.Sprintf("corkx%d%d", os.Getpid()%10000, attackUsers.Add(1))
	if out, err := exec.Command("useradd", "-M", "-d", "/", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	// -f: a thread of this process may still have its uid (the main one,
	// for good, when TestUserThreadNeverTheMainThread fails).
	t.Cleanup(func() { exec.Command("userdel", "-f", name).Run() })
	acct, err := account.System.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return acct
}

// statusUIDs is the Uid line of a /proc status file: real, effective,
// saved and filesystem uid.
func statusUIDs(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return "" // the thread ended meanwhile
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 5 && f[0] == "Uid:" {
			return strings.Join(f[1:], " ")
		}
	}
	return ""
}

// threadsAs counts this process's threads that have uid among theirs,
// but the main thread: TestUserThreadNeverTheMainThread, failing, leaves
// it with a uid that a later test's user may get again.
func threadsAs(t *testing.T, uid uint32) (n, all int) {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tasks {
		if e.Name() == strconv.Itoa(os.Getpid()) {
			continue
		}
		if slices.Contains(strings.Fields(statusUIDs(t, "/proc/self/task/"+e.Name()+"/status")), strconv.Itoa(int(uid))) {
			n++
		}
	}
	return n, len(tasks)
}

// TestUserThreadNeverTheMainThread: the kernel checks kill(2), prlimit(2)
// and /proc/<pid>/status against the credentials of the thread group
// leader, the main thread. A user thread that is the main thread makes
// corkd the user's to signal, and once its goroutine ends Go parks the
// main thread for ever (it never ends it) with the user's credentials
// still on it. Fails on main (and before 525a956: asUser did the same).
// corkd itself is shielded only by luck: os/signal's ensureSigM goroutine
// locks the main thread first.
func TestUserThreadNeverTheMainThread(t *testing.T) {
	acct := attackUser(t)
	pid := os.Getpid()
	for try := range 200 {
		th := newUserThread(acct)
		var tid int
		if err := runAs(th, func() error { tid = unix.Gettid(); return nil }); err != nil {
			t.Fatal(err)
		}
		th.stop()
		if tid != pid {
			continue
		}
		kill := exec.Command("kill", "-0", strconv.Itoa(pid))
		kill.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: acct.UID, Gid: acct.GID}}
		t.Fatalf("connection %d's user thread was the main thread: /proc/%d/status says Uid %s, and %s's kill -0 of the process: %v (nil: allowed)",
			try, pid, statusUIDs(t, "/proc/self/status"), acct.Name, kill.Run())
	}
}

// TestUserThreadQueuedDialKeepsItsTimeout: the dials of one connection
// queue for its thread. A job that does not return (a unix socket's path
// through a hung FUSE or network mount) must not hold the dials behind it
// past their dial timeout, as it did not when each dial had its own
// thread. Fails on main: do takes no context.
func TestUserThreadQueuedDialKeepsItsTimeout(t *testing.T) {
	acct := attackUser(t)
	th := newUserThread(acct)
	defer th.stop()
	release := make(chan struct{})
	defer close(release)
	go runAs(th, func() error { <-release; return nil }) // the stuck lookup
	time.Sleep(50 * time.Millisecond)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		c, err := dialAs(ctx, th, protocol.NetTCP, l.Addr().String())
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("dial: %v", err)
	case <-time.After(3 * time.Second):
		t.Fatal("a dial with a 200ms timeout still waits 3s later behind the connection's stuck dial")
	}
}

// TestUserThreadsEndWithStop: many connections each with a thread; every
// thread with the user's identity ends once its connection stops.
func TestUserThreadsEndWithStop(t *testing.T) {
	acct := attackUser(t)
	_, before := threadsAs(t, acct.UID)
	var ths []*userThread
	for range 32 {
		th := newUserThread(acct)
		if err := runAs(th, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		ths = append(ths, th)
	}
	if n, all := threadsAs(t, acct.UID); n != 32 {
		t.Fatalf("%d threads as %s for 32 connections (%d threads, %d before)", n, acct.Name, all, before)
	}
	for _, th := range ths {
		th.stop()
	}
	waitUntil(t, func() bool { n, _ := threadsAs(t, acct.UID); return n == 0 }, "every user thread to end after stop")
	// A dial after stop gets a thread again, which ends at once after it.
	if err := runAs(ths[0], func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { n, _ := threadsAs(t, acct.UID); return n == 0 }, "the thread of a dial after stop to end")
}

// TestUserThreadEndsIdle: a connection that stops dialing gives its thread
// up after userThreadIdle without being stopped.
func TestUserThreadEndsIdle(t *testing.T) {
	acct := attackUser(t)
	th := newUserThread(acct)
	if err := runAs(th, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(userThreadIdle + 3*time.Second)
	for n, _ := threadsAs(t, acct.UID); n != 0; n, _ = threadsAs(t, acct.UID) {
		if time.Now().After(deadline) {
			t.Fatalf("the idle thread still runs %v after its last dial", userThreadIdle+3*time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	th.stop()
}

// TestUserThreadIdentityFailureFailsEveryJob: a thread that cannot take
// the identity runs none of the jobs queued for it, answers each with
// why, and does not stay with whatever part of the identity it took.
func TestUserThreadIdentityFailureFailsEveryJob(t *testing.T) {
	acct := attackUser(t)
	tooManyGroups := *acct
	tooManyGroups.Groups = make([]uint32, 70000) // beyond NGROUPS_MAX: setgroups fails first
	// uid -1 is "unchanged" to setresuid: groups and gid are taken, the
	// uid check fails after them.
	noUID := *acct
	noUID.UID = 1<<32 - 1
	for _, a := range []*account.Account{&tooManyGroups, &noUID} {
		th := newUserThread(a)
		var ran atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- runAs(th, func() error { ran.Add(1); return nil })
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err == nil {
				t.Fatalf("uid %d, %d groups: a job was answered without error", a.UID, len(a.Groups))
			}
		}
		if n := ran.Load(); n != 0 {
			t.Fatalf("uid %d, %d groups: %d jobs ran on a thread without the identity", a.UID, len(a.Groups), n)
		}
		th.stop()
	}
	waitUntil(t, func() bool {
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, e := range tasks {
			b, _ := os.ReadFile("/proc/self/task/" + e.Name() + "/status")
			if e.Name() != strconv.Itoa(os.Getpid()) && strings.Contains(string(b), fmt.Sprintf("Gid:\t%d\t", acct.GID)) {
				return false
			}
		}
		return true
	}, "the half-switched threads to end")
}

// TestUserThreadJobsRunAsTheirUserAlone: jobs of two connections of two
// users, with stops and idle restarts racing them, each run with their own
// user's uid, gid and groups; and no other goroutine, watching its own
// thread's credentials meanwhile, ever finds itself on a switched thread.
func TestUserThreadJobsRunAsTheirUserAlone(t *testing.T) {
	users := []*account.Account{attackUser(t), attackUser(t)}
	stop := make(chan struct{})
	var wrong atomic.Value
	var watchers sync.WaitGroup
	for range 8 {
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if r, e, s := unix.Getresuid(); r|e|s != 0 {
					wrong.Store(fmt.Sprintf("a goroutine that is no job ran with uids %d %d %d", r, e, s))
				}
			}
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for _, acct := range users {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; time.Now().Before(deadline); i++ {
					th := newUserThread(acct)
					for range i % 5 {
						runAs(th, func() error {
							r, e, s := unix.Getresuid()
							rg, eg, sg := unix.Getresgid()
							groups, _ := unix.Getgroups()
							if r != 0 || e != int(acct.UID) || s != 0 || rg != 0 || eg != int(acct.GID) || sg != 0 || len(groups) != len(acct.Groups) { // effective ids the user's, real and saved root's (becomeUser)
								wrong.Store(fmt.Sprintf("%s's job ran as uids %d %d %d gids %d %d %d groups %v", acct.Name, r, e, s, rg, eg, sg, groups))
							}
							return nil
						})
					}
					if i%2 == 0 {
						go th.stop() // racing the next job, if any
					} else {
						th.stop()
					}
				}
			}()
		}
	}
	wg.Wait()
	close(stop)
	watchers.Wait()
	if w := wrong.Load(); w != nil {
		t.Fatal(w)
	}
}

// waitUntil waits up to 10s for cond.
func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
	}
}

// TestUserThreadCannotBeSignalledByTheUser: kill(2) given a thread id
// signals the whole process, allowed when the sender's uid is the target
// thread's real or saved uid. A user thread that took all three uids
// therefore lets every program of the user's SIGKILL or SIGSTOP corkd
// while it lives, up to userThreadIdle after the connection's last dial:
// /proc/<pid>/task, which anyone reads, names the thread. prlimit(2) on
// it likewise changes corkd's limits (they are the process's). Fails on
// main.
func TestUserThreadCannotBeSignalledByTheUser(t *testing.T) {
	acct := attackUser(t)
	var tid int
	for tid == 0 || tid == os.Getpid() { // not the main thread: that is the test above
		th := newUserThread(acct)
		defer th.stop()
		if err := runAs(th, func() error { tid = unix.Gettid(); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	asUser := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: acct.UID, Gid: acct.GID}}
	kill := exec.Command("kill", "-0", strconv.Itoa(tid))
	kill.SysProcAttr = asUser
	if err := kill.Run(); err == nil {
		msg := fmt.Sprintf("%s may signal corkd through its user thread %d (kill -0 %d succeeded)", acct.Name, tid, tid)
		if _, err := exec.LookPath("prlimit"); err == nil {
			pr := exec.Command("prlimit", "--pid", strconv.Itoa(tid), "--nofile")
			pr.SysProcAttr = asUser
			out, err := pr.CombinedOutput()
			msg += fmt.Sprintf("; prlimit --pid %d --nofile as %s: %v %q", tid, acct.Name, err, strings.TrimSpace(string(out)))
		}
		t.Fatal(msg)
	}
}

// runAs runs fn on th, as the dials do, and returns its error.
func runAs(th *userThread, fn func() error) error {
	_, err := th.do(context.Background(), func() (io.Closer, error) { return nil, fn() })
	return err
}
