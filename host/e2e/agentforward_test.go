//go:build linux

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/host/e2e/termtest"
)

// cork exec -A with the real tools: an ssh-agent on the host holding a
// key that exists nowhere else, ssh-add -l in the guest session listing
// it, and ssh signing through it to a private sshd on loopback.

// sshWorld is a user with no key of its own, an ssh-agent holding the
// key that user's authorized_keys names, and an sshd that accepts it.
type sshWorld struct {
	user, dir   string // dir: 0755, the user's home is in it
	agentSock   string
	fingerprint string
	port        string
}

func requireSSH(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a user and runs sshd")
	}
	for _, tool := range []string{"ssh-agent", "ssh-add", "ssh-keygen", "ssh", "useradd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s (apt-get install openssh-client openssh-server)", tool)
		}
	}
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		t.Skip("no /usr/sbin/sshd (apt-get install openssh-server)")
	}
}

func newSSHWorld(t *testing.T) *sshWorld {
	requireSSH(t)
	dir, err := os.MkdirTemp("", "cork-ssh-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	w := &sshWorld{user: fmt.Sprintf("corka%d", time.Now().UnixNano()%1e8), dir: dir}
	home := filepath.Join(dir, "home")
	mustRun(t, "useradd", "-M", "-d", home, "-s", "/bin/sh", "-p", "*", w.user)
	t.Cleanup(func() { removeUser(w.user) })
	key := filepath.Join(dir, "key") // root's: the user never reads it
	mustRun(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
	mustRun(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "host_key"))
	os.MkdirAll(home, 0o755)
	pub, _ := os.ReadFile(key + ".pub")
	os.WriteFile(filepath.Join(home, "authorized_keys"), pub, 0o644)
	mustRun(t, "chown", "-R", w.user, home)
	fp, _ := exec.Command("ssh-keygen", "-lf", key+".pub").Output()
	w.fingerprint = strings.Fields(string(fp))[1]
	w.startAgent(t, key)
	w.startSSHD(t)
	return w
}

// startAgent runs ssh-agent in the foreground and adds key to it.
func (w *sshWorld) startAgent(t *testing.T, key string) {
	w.agentSock = filepath.Join(w.dir, "agent.sock")
	cmd := exec.Command("ssh-agent", "-D", "-a", w.agentSock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	termtest.WaitFor(t, "ssh-agent listening", 20*time.Second, func() bool { _, err := os.Stat(w.agentSock); return err == nil })
	add := exec.Command("ssh-add", key)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+w.agentSock)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v: %s", err, out)
	}
}

// startSSHD runs a private sshd on a free loopback port that lets the
// user in by key alone.
func (w *sshWorld) startSSHD(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, w.port, _ = net.SplitHostPort(l.Addr().String())
	l.Close()
	cfg := filepath.Join(w.dir, "sshd_config")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %s/host_key
PidFile %s/sshd.pid
AuthorizedKeysFile %%h/authorized_keys
AllowUsers %s
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
`, w.port, w.dir, w.dir, w.user)), 0o644)
	os.MkdirAll("/run/sshd", 0o755)
	logs := &harness.Buffer{}
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", cfg)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("sshd log:\n%s", logs.String())
		}
	})
	termtest.WaitFor(t, "sshd listening", 20*time.Second, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+w.port)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func TestExecForwardAgent(t *testing.T) {
	w := newSSHWorld(t)
	a := startAgent(t)
	release := filepath.Join(w.dir, "release")
	script := fmt.Sprintf(`echo "sock=$SSH_AUTH_SOCK"; ssh-add -l
ssh -p %s -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR %s@127.0.0.1 echo signed by the host agent
echo done
while [ ! -e %s ]; do sleep 0.05; done`, w.port, w.user, release)
	cmd := exec.Command(bin.Cork, corkExec(a, "-A", "-u", w.user, "--", "sh", "-c", script)...)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+w.agentSock)
	stderr := &harness.Buffer{}
	cmd.Stderr = stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "done" {
		lines = append(lines, sc.Text())
	}
	got := strings.Join(lines, "\n")
	sock, _ := strings.CutPrefix(lines[0], "sock=")
	if sock == "" || !strings.Contains(got, w.fingerprint) || !strings.Contains(got, "signed by the host agent") {
		t.Fatalf("in the session:\n%s\nstderr:\n%s", got, stderr.String())
	}

	// Another user in the guest cannot reach the socket.
	other, _ := exec.Command(bin.Cork, corkExec(a, "-u", "nobody", "-e", "SSH_AUTH_SOCK="+sock, "--", "ssh-add", "-l")...).CombinedOutput()
	if !strings.Contains(string(other), "Permission denied") {
		t.Fatalf("nobody with %s: %s", sock, other)
	}

	os.WriteFile(release, nil, 0o644)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("cork exec -A: %v; stderr:\n%s", err, stderr.String())
	}
	termtest.WaitFor(t, "the agent socket's directory removed", 20*time.Second, func() bool {
		_, err := os.Lstat(filepath.Dir(sock))
		return os.IsNotExist(err)
	})

	// In-band, through the smolvm stand-in: the agent's connection is a
	// second smolvm machine exec beside the session's.
	machine := exec.Command(bin.Cork, machineExec("-A", "-u", w.user, "--", "ssh-add", "-l")...)
	machine.Env = cmd.Env
	if out, err := machine.CombinedOutput(); err != nil || !strings.Contains(string(out), w.fingerprint) {
		t.Fatalf("--machine -A: %v: %s", err, out)
	}
}

// Without an agent on the host, -A says so instead of starting a session
// whose ssh would fail later.
func TestExecForwardAgentWithoutAgent(t *testing.T) {
	a := startAgent(t)
	cmd := exec.Command(bin.Cork, corkExec(a, "-A", "--", "true")...)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK=")
	out, err := cmd.CombinedOutput()
	if code := exitCode(err); code != 125 || !strings.Contains(string(out), "SSH_AUTH_SOCK is not set") {
		t.Fatalf("exit %d: %s", code, out)
	}
}

// cork attach -A gives a kept session started with cork exec -A its agent
// back, at the SSH_AUTH_SOCK it started with, after the first cork died.
func TestAttachForwardAgent(t *testing.T) {
	w := newSSHWorld(t)
	a := startAgent(t)
	t.Setenv("SSH_AUTH_SOCK", w.agentSock)
	name := fmt.Sprintf("agented%d", time.Now().UnixNano()%1e6)
	release := filepath.Join(w.dir, "home", "go")
	script := fmt.Sprintf(`echo "sock=$SSH_AUTH_SOCK"; while [ ! -e %s ]; do sleep 0.05; done; ssh-add -l; sleep 600`, release)
	first := termtest.Start(t, 24, 100, bin.Cork, corkExec(a, "-t", "--keep", "--name", name, "-A", "-u", w.user, "--", "sh", "-c", script)...)
	line := first.WaitLine(t, "the session's SSH_AUTH_SOCK", func(l string) bool { return strings.HasPrefix(l, "sock=/") })
	sock := strings.TrimPrefix(line, "sock=")
	syscall.Kill(first.Pid(), syscall.SIGKILL)
	t.Cleanup(func() { exec.Command(bin.Cork, "kill", "--connect", a.url, "--signal", "KILL", name).Run() })
	termtest.WaitFor(t, "the agent socket removed with the first cork", 20*time.Second, func() bool {
		_, err := os.Lstat(filepath.Dir(sock))
		return os.IsNotExist(err)
	})

	again := termtest.Start(t, 24, 100, bin.Cork, "attach", "--connect", a.url, "-A", name)
	termtest.WaitFor(t, "the socket made again", 20*time.Second, func() bool { _, err := os.Lstat(sock); return err == nil })
	os.WriteFile(release, nil, 0o644)
	again.WaitLine(t, "ssh-add -l listing the host's key", func(l string) bool { return strings.Contains(l, w.fingerprint) })
}
