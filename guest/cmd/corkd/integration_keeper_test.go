package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/listen"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// The keeper's boundary is between users of the guest, so these tests run
// real processes as users they create: this test binary, copied where
// those users can run it, is corkd (given "serve ..."), a relay (what
// corkd serve --stdio does for a kept session) or another user's listener.

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		main()
		os.Exit(0)
	}
	switch os.Getenv("CORKD_TEST_ROLE") {
	case "relay":
		os.Exit(relayRole())
	case "listener":
		os.Exit(listenerRole(os.Getenv("CORKD_TEST_PATH")))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// relayRole connects to the keeper as a relay does, starting it if need
// be, and prints whom it reached or why not.
func relayRole() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	c, err := keptVia(defaultKeepSocket(), "debug", log)()
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	defer c.Close()
	cred, err := listen.PeerCred(c.(*net.UnixConn))
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Printf("connected uid=%d pid=%d\n", cred.Uid, cred.Pid)
	return 0
}

// listenerRole listens at path, as another user in the keeper's place
// would, and counts what it receives.
func listenerRole(path string) int {
	l, err := net.Listen("unix", path)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	os.Chmod(path, 0o666)
	fmt.Println("listening")
	for {
		c, err := l.Accept()
		if err != nil {
			return 1
		}
		go func() {
			n, _ := io.Copy(io.Discard, c)
			fmt.Printf("got %d bytes\n", n)
		}()
	}
}

var (
	binOnce sync.Once
	binDir  string
	binPath string
)

// testBinary is this test binary where any user may run it (go test's own
// directory is root's, mode 0700).
func testBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "corkd-keeper-test")
		if err != nil {
			return
		}
		binDir = dir
		os.Chmod(dir, 0o755)
		b, err := os.ReadFile(os.Args[0])
		if err == nil && os.WriteFile(filepath.Join(dir, "corkd"), b, 0o755) == nil {
			binPath = filepath.Join(dir, "corkd")
		}
	})
	if binPath == "" {
		t.Fatal("could not copy the test binary")
	}
	return binPath
}

type testUser struct {
	name     string
	uid, gid int
}

// newUser makes a user, removed again with /tmp/corkd-UID.
func newUser(t *testing.T) testUser {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create users")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("no useradd")
	}
	name := fmt.Sprintf("corkk%d%03d", os.Getpid()%10000, time.Now().UnixNano()%1000)
	if out, err := exec.Command("useradd", "-M", "-d", "/", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	u := testUser{name: name}
	for _, f := range []struct {
		flag string
		to   *int
	}{{"-u", &u.uid}, {"-g", &u.gid}} {
		out, err := exec.Command("id", f.flag, name).Output()
		if err != nil {
			t.Fatal(err)
		}
		*f.to, _ = strconv.Atoi(strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { os.RemoveAll(fmt.Sprintf("/tmp/corkd-%d", u.uid)) })
	return u
}

func (u testUser) sock() string { return fmt.Sprintf("/tmp/corkd-%d/kept.sock", u.uid) }

// makeDir makes u's keeper directory as a keeper makes it: 0700 and u's.
func (u testUser) makeDir(t *testing.T) {
	t.Helper()
	dir := filepath.Dir(u.sock())
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(dir, u.uid, u.gid)
}

func (u testUser) command(role string, env ...string) *exec.Cmd {
	cmd := exec.Command(binPath)
	cmd.Env = append([]string{"CORKD_TEST_ROLE=" + role, "PATH=/usr/bin:/bin"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)}}
	cmd.Dir = "/"
	return cmd
}

// relayAs runs a relay as u and returns the line it printed, or
// "timed out" when it did not finish within 30 s.
func relayAs(t *testing.T, u testUser) string {
	t.Helper()
	testBinary(t)
	cmd := u.command("relay")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		return "timed out"
	}
	if testing.Verbose() {
		t.Logf("relay as %s: %s%s", u.name, stdout.String(), stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// listenAs starts u listening at path and waits until it does.
func listenAs(t *testing.T, u testUser, path string) {
	t.Helper()
	testBinary(t)
	cmd := u.command("listener", "CORKD_TEST_PATH="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "listening\n" {
		t.Fatalf("listener as %s at %s: %q", u.name, path, line)
	}
}

// stopKeepers kills, at the end of the test, the keeper whose pid file is
// pidFile and every pid in more (whatever the pid file says by then).
func stopKeepers(t *testing.T, pidFile string, more *[]int) {
	t.Cleanup(func() {
		pids := append([]int(nil), *more...)
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				pids = append(pids, pid)
			}
		}
		for _, pid := range pids {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe == binPath || exe == os.Args[0] {
				syscall.Kill(pid, syscall.SIGKILL)
				waitFor(t, "the keeper to go", 10*time.Second, func() bool { return !alive(pid) })
			}
		}
	})
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connectedPid returns the keeper pid a relay reported, or fails.
func connectedPid(t *testing.T, out string, u testUser) int {
	t.Helper()
	var uid, pid int
	if _, err := fmt.Sscanf(out, "connected uid=%d pid=%d", &uid, &pid); err != nil || uid != u.uid {
		t.Fatalf("relay as %s: %q; want connected to a keeper of uid %d", u.name, out, u.uid)
	}
	return pid
}

// victimFile makes a file of u's, holding "orig", in a directory of u's.
func victimFile(t *testing.T, u testUser, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "corkvictim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	os.Chown(dir, u.uid, u.gid)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("orig"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(p, u.uid, u.gid)
	return p
}

// TestKeeperDirOfAnotherUserRefused: another user made /tmp/corkd-UID
// first, world-writable, with links to the victim's files in it, then
// listened there. The relay refuses the directory, naming its owner:
// it writes through none of the links and sends the listener nothing.
func TestKeeperDirOfAnotherUserRefused(t *testing.T) {
	victim, attacker := newUser(t), newUser(t)
	dir := filepath.Dir(victim.sock())
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	os.Chown(dir, attacker.uid, attacker.gid)
	logT, pidT := victimFile(t, victim, "bashrc"), victimFile(t, victim, "notes")
	lockT := filepath.Join(filepath.Dir(logT), "made")
	for link, target := range map[string]string{".log": logT, ".pid": pidT, ".lock": lockT} {
		if err := os.Symlink(target, victim.sock()+link); err != nil {
			t.Fatal(err)
		}
		os.Lchown(victim.sock()+link, attacker.uid, attacker.gid)
	}
	var none []int
	stopKeepers(t, pidT, &none) // before the fix, the keeper wrote its pid through the link

	wantRefusal := fmt.Sprintf("belongs to uid %d (%s)", attacker.uid, attacker.name)
	if out := relayAs(t, victim); !strings.HasPrefix(out, "error:") || !strings.Contains(out, wantRefusal) {
		t.Errorf("relay into a directory of another user's: %q; want a refusal naming %q", out, wantRefusal)
	}
	for _, p := range []string{logT, pidT} {
		if b, _ := os.ReadFile(p); string(b) != "orig" {
			t.Errorf("%s, linked from the keeper's directory, now holds %q", p, b)
		}
	}
	if _, err := os.Lstat(lockT); err == nil {
		t.Errorf("%s, linked from the keeper's directory as its lock, was made", lockT)
	}

	for _, link := range []string{".log", ".pid", ".lock"} {
		os.Remove(victim.sock() + link)
	}
	listenAs(t, attacker, victim.sock())
	if out := relayAs(t, victim); !strings.HasPrefix(out, "error:") || !strings.Contains(out, wantRefusal) {
		t.Fatalf("relay to another user's listener in the keeper's place: %q; want a refusal naming %q", out, wantRefusal)
	}
}

// TestKeeperSocketSwappedRefused: the keeper runs, then its socket is
// replaced by one another user listens on (as whoever owned the directory
// could do). The next relay sends that listener nothing: it checks the
// listener's uid before a byte; and the keeper makes its socket again.
func TestKeeperSocketSwappedRefused(t *testing.T) {
	victim, attacker := newUser(t), newUser(t)
	var seen []int
	stopKeepers(t, victim.sock()+".pid", &seen)
	keeper := connectedPid(t, relayAs(t, victim), victim)
	seen = append(seen, keeper)

	adir, err := os.MkdirTemp("", "corkattacker")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(adir) })
	os.Chmod(adir, 0o777)
	evil := filepath.Join(adir, "evil.sock")
	listenAs(t, attacker, evil)
	evilID, err := fileID(evil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(evil, victim.sock()); err != nil {
		t.Fatal(err)
	}
	out := relayAs(t, victim)
	if strings.HasPrefix(out, fmt.Sprintf("connected uid=%d ", attacker.uid)) {
		t.Fatalf("relay after the swap reached the other user's listener: %q", out)
	}
	// Either the check refused it, or the keeper had made its socket again.
	if refused := fmt.Sprintf("served by uid %d (%s)", attacker.uid, attacker.name); !strings.Contains(out, refused) && connectedPid(t, out, victim) != keeper {
		t.Fatalf("relay after the swap: %q; want a refusal naming %q or the keeper (pid %d)", out, refused, keeper)
	}
	waitFor(t, "the keeper to make its socket again", 10*time.Second, func() bool {
		id, err := fileID(victim.sock())
		return err == nil && id != evilID
	})
	if pid := connectedPid(t, relayAs(t, victim), victim); pid != keeper {
		t.Fatalf("after the swap the relay reached keeper %d, not %d", pid, keeper)
	}
}

// TestKeeperSocketRemovedNoSecondKeeper: the keeper's socket is removed.
// The next relay reaches the same keeper, which made its socket again,
// and no second keeper starts to orphan the first's sessions.
func TestKeeperSocketRemovedNoSecondKeeper(t *testing.T) {
	victim := newUser(t)
	var seen []int
	stopKeepers(t, victim.sock()+".pid", &seen)
	keeper := connectedPid(t, relayAs(t, victim), victim)
	seen = append(seen, keeper)
	for i := range 2 {
		if err := os.Remove(victim.sock()); err != nil {
			t.Fatal(err)
		}
		pid := connectedPid(t, relayAs(t, victim), victim)
		seen = append(seen, pid)
		if pid != keeper {
			t.Fatalf("removal %d: the relay reached keeper %d, not the first (%d)", i+1, pid, keeper)
		}
	}

	// The whole directory removed, as a /tmp cleaner may: the keeper
	// makes it again, with its lock and socket.
	dir := filepath.Dir(victim.sock())
	os.RemoveAll(dir)
	waitFor(t, "the keeper to make its directory again", 10*time.Second, func() bool {
		_, err1 := os.Lstat(victim.sock())
		_, err2 := os.Lstat(victim.sock() + ".lock")
		return err1 == nil && err2 == nil
	})
	if pid := connectedPid(t, relayAs(t, victim), victim); pid != keeper {
		t.Fatalf("after the directory was removed the relay reached keeper %d, not the first (%d)", pid, keeper)
	}

	// Removed with a relay at once: the relay may start a keeper before
	// the first makes the directory again; then one of them stops.
	os.RemoveAll(dir)
	seen = append(seen, connectedPid(t, relayAs(t, victim), victim))
	waitFor(t, "one keeper left", 10*time.Second, func() bool {
		n := 0
		for _, pid := range seen {
			if alive(pid) && !slices.Contains(seen[:slices.Index(seen, pid)], pid) {
				n++
			}
		}
		return n == 1
	})
	if pid := connectedPid(t, relayAs(t, victim), victim); !alive(pid) || !slices.Contains(seen, pid) {
		t.Fatalf("after the race the relay reached keeper %d; keepers seen %v", pid, seen)
	}
}

// TestKeeperLockWaitBounded: a lock held by a process that never lets go
// (a relay stuck while starting the keeper) makes the relay fail with a
// message naming the lock, within a bound, instead of hanging.
func TestKeeperLockWaitBounded(t *testing.T) {
	victim := newUser(t)
	victim.makeDir(t)
	lock, err := os.OpenFile(victim.sock()+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	os.Chown(lock.Name(), victim.uid, victim.gid)
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out := relayAs(t, victim)
	if !strings.HasPrefix(out, "error:") || !strings.Contains(out, "kept.sock.lock") {
		t.Fatalf("relay with the lock held: %q after %s; want an error naming the lock", out, time.Since(start).Round(time.Millisecond))
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("relay with the lock held gave up after %s", d)
	}
}

// TestKeeperFilesNotFollowed: a symbolic link in the keeper's own
// directory, where its lock or log goes, is refused, never written
// through; so is one where the pid file goes.
func TestKeeperFilesNotFollowed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the keeper's directory must be root's, as t.TempDir is")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	sock := filepath.Join(dir, "kept.sock")
	var none []int
	stopKeepers(t, sock+".pid", &none)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	target := filepath.Join(t.TempDir(), "target")
	for _, name := range []string{".lock", ".log"} {
		os.WriteFile(target, []byte("orig"), 0o644)
		os.Remove(sock + ".lock")
		if err := os.Symlink(target, sock+name); err != nil {
			t.Fatal(err)
		}
		c, err := keptVia(sock, "info", log)()
		if err == nil {
			c.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("kept%s a link: %v; want a refusal", name, err)
		}
		if b, _ := os.ReadFile(target); string(b) != "orig" {
			t.Errorf("kept%s a link: its target now holds %q", name, b)
		}
		os.Remove(sock + name)
	}
	os.Symlink(target, sock+".pid")
	if err := writePidFile(sock + ".pid"); err == nil {
		t.Errorf("pid file a link: written")
	}
	if b, _ := os.ReadFile(target); string(b) != "orig" {
		t.Errorf("pid file a link: its target now holds %q", b)
	}
}

// TestKeeperDirChecks: what makes a directory unfit for the keeper, and
// that the runtime directory is used when it is the user's own.
func TestKeeperDirChecks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give directories away")
	}
	base := t.TempDir()
	mk := func(name string, mode os.FileMode, uid int) string {
		p := filepath.Join(base, name)
		os.Mkdir(p, mode)
		os.Chmod(p, mode)
		os.Chown(p, uid, uid)
		return p
	}
	os.Symlink(mk("real", 0o700, 4242), filepath.Join(base, "link"))
	os.Lchown(filepath.Join(base, "link"), 4243, 4243)
	os.WriteFile(filepath.Join(base, "file"), nil, 0o600)
	os.Chown(filepath.Join(base, "file"), 4243, 4243)
	for _, c := range []struct {
		dir, want string
	}{
		{mk("mine", 0o700, 4242), ""},
		{mk("open", 0o755, 4242), "mode 0755"},
		{mk("theirs", 0o700, 4243), "belongs to uid 4243"},
		// A squatter's link or file is named with its owner, as a
		// directory is.
		{filepath.Join(base, "link"), "symbolic link of uid 4243"},
		{filepath.Join(base, "file"), "file of uid 4243"},
	} {
		err := checkPrivateDir(c.dir, 4242)
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want %q", c.dir, err, c.want)
		}
	}

	runUser := t.TempDir()
	own := filepath.Join(runUser, "4242")
	os.Mkdir(own, 0o700)
	os.Chown(own, 4242, 4242)
	if got, want := keepSocketFor(4242, runUser), filepath.Join(own, "corkd", "kept.sock"); got != want {
		t.Errorf("with /run/user/4242 the user's: %s, want %s", got, want)
	}
	os.Chown(own, 4243, 4243)
	if got, want := keepSocketFor(4242, runUser), "/tmp/corkd-4242/kept.sock"; got != want {
		t.Errorf("with /run/user/4242 another's: %s, want %s", got, want)
	}
}

// keptCat connects to the keeper at sock as root and starts a kept cat on
// it, returning the attached connection, the keeper's pid and cat's.
func keptCat(t *testing.T, sock string) (c net.Conn, keeper, cat int) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	cred, err := listen.PeerCred(c.(*net.UnixConn))
	if err != nil {
		t.Fatal(err)
	}
	p := prototest.NewPeer(t, c)
	p.Hello()
	st := p.Exec(protocol.Exec{Argv: []string{"cat"}, TTY: true, Keep: true, Name: "cat", Size: protocol.WindowSize{Cols: 80, Rows: 24}})
	t.Cleanup(func() { syscall.Kill(st.PID, syscall.SIGKILL) })
	return c, int(cred.Pid), st.PID
}

// keeperLog returns what the keeper pid logged so far, through its own
// descriptor: the log file may have gone with its directory.
func keeperLog(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/fd/2", pid))
	return string(b)
}

// TestKeeperRuntimeDirRemovedKeepsSessions: logind removes /run/user/UID
// at logout, and the keeper cannot make its directory again. It stops
// listening but serves the sessions it has, until SIGTERM.
func TestKeeperRuntimeDirRemovedKeepsSessions(t *testing.T) {
	victim := newUser(t)
	runDir, err := os.MkdirTemp("", "corkrun")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	os.Chown(runDir, victim.uid, victim.gid)
	sock := filepath.Join(runDir, "corkd", "kept.sock")
	var seen []int
	stopKeepers(t, sock+".pid", &seen)
	testBinary(t)
	out, _ := victim.command("relay", "CORKD_KEEP_SOCKET="+sock).Output()
	keeper := connectedPid(t, strings.TrimSpace(string(out)), victim)
	seen = append(seen, keeper)
	_, pid, cat := keptCat(t, sock)
	if pid != keeper {
		t.Fatalf("reached keeper %d, not %d", pid, keeper)
	}

	if err := os.RemoveAll(runDir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the keeper to retire or exit", 10*time.Second, func() bool {
		return !alive(keeper) || strings.Contains(keeperLog(keeper), "accepts no more connections")
	})
	if !alive(keeper) || !alive(cat) {
		t.Fatalf("when its directory went: keeper alive %v, its session's program alive %v", alive(keeper), alive(cat))
	}

	syscall.Kill(keeper, syscall.SIGTERM)
	waitFor(t, "the retired keeper to stop on SIGTERM", 10*time.Second, func() bool { return !alive(keeper) && !alive(cat) })
}

// TestKeeperRaceLoserLeavesWinner: a /tmp cleaner removes the directory
// and a relay starts a second keeper before the first makes it again. The
// first retires without removing the second's socket or pid file, and
// keeps its session.
func TestKeeperRaceLoserLeavesWinner(t *testing.T) {
	victim := newUser(t)
	var seen []int
	stopKeepers(t, victim.sock()+".pid", &seen)
	first := connectedPid(t, relayAs(t, victim), victim)
	seen = append(seen, first)
	_, _, cat := keptCat(t, victim.sock())

	// The relay runs while the first keeper is stopped, so it surely wins.
	syscall.Kill(first, syscall.SIGSTOP)
	os.RemoveAll(filepath.Dir(victim.sock()))
	second := connectedPid(t, relayAs(t, victim), victim)
	seen = append(seen, second)
	syscall.Kill(first, syscall.SIGCONT)
	if second == first {
		t.Fatal("the relay reached the stopped keeper")
	}
	waitFor(t, "the first keeper to retire or exit", 10*time.Second, func() bool {
		return !alive(first) || strings.Contains(keeperLog(first), "accepts no more connections")
	})
	if !alive(first) || !alive(cat) {
		t.Fatalf("the first keeper alive %v, its session's program alive %v", alive(first), alive(cat))
	}
	b, err := os.ReadFile(victim.sock() + ".pid")
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(second) {
		t.Fatalf("pid file: %q, %v; want the second keeper's, %d", b, err, second)
	}
	for range 3 { // the second keeper would make a removed socket again
		if pid := connectedPid(t, relayAs(t, victim), victim); pid != second {
			t.Fatalf("the relay reached keeper %d, not the second (%d)", pid, second)
		}
	}
	if _, err := os.Lstat(victim.sock()); err != nil {
		t.Fatalf("the second keeper's socket: %v", err)
	}
}

// TestKeeperFoundAtTheOtherPlace: a keeper started while /run/user/UID
// did not exist listens under /tmp; once the user's runtime directory
// exists, a relay still reaches that keeper rather than start a second.
func TestKeeperFoundAtTheOtherPlace(t *testing.T) {
	victim := newUser(t)
	runDir := fmt.Sprintf("/run/user/%d", victim.uid)
	if _, err := os.Stat("/run/user"); err != nil {
		t.Skip("no /run/user")
	}
	var seen []int
	stopKeepers(t, victim.sock()+".pid", &seen)
	stopKeepers(t, filepath.Join(runDir, "corkd", "kept.sock.pid"), &seen)
	first := connectedPid(t, relayAs(t, victim), victim)
	seen = append(seen, first)

	if err := os.Mkdir(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	os.Chown(runDir, victim.uid, victim.gid)
	pid := connectedPid(t, relayAs(t, victim), victim)
	seen = append(seen, pid)
	if pid != first {
		t.Fatalf("with /run/user/%d made, the relay reached keeper %d, not the one under /tmp (%d)", victim.uid, pid, first)
	}
}

// TestKeeperRootListenerRefusedByUser: a user's relay sends nothing to a
// root process listening at its keeper's path: the user's keeper is the
// user's own.
func TestKeeperRootListenerRefusedByUser(t *testing.T) {
	victim := newUser(t)
	victim.makeDir(t)
	l, err := net.Listen("unix", victim.sock())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	os.Chmod(victim.sock(), 0o666)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if out := relayAs(t, victim); !strings.Contains(out, "served by uid 0") {
		t.Fatalf("relay with root listening at its keeper's path: %q; want a refusal naming uid 0", out)
	}
}

// TestKeeperHoldsNoInheritedDescriptor: a descriptor the relay inherited
// (here the write end of a pipe, as an exec's output may be) does not
// live on in the keeper it starts, so the pipe ends with the relay.
func TestKeeperHoldsNoInheritedDescriptor(t *testing.T) {
	victim := newUser(t)
	var seen []int
	stopKeepers(t, victim.sock()+".pid", &seen)
	testBinary(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := victim.command("relay")
	cmd.ExtraFiles = []*os.File{nil, w} // descriptor 4: 3 is the keeper's lock in the keeper
	out, err := cmd.Output()
	w.Close()
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	seen = append(seen, connectedPid(t, strings.TrimSpace(string(out)), victim))
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := r.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the pipe the relay inherited: read %d, %v; want EOF (no process left holding it)", n, err)
	}
}
