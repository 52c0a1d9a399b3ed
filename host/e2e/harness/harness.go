//go:build linux

// Package harness builds cork's binaries and starts corkd, for the
// end-to-end tests, the benchmark and the VM test: one way to do both.
package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// Binaries are the programs Build makes, by path.
type Binaries struct {
	Dir        string
	Cork       string
	Corkd      string
	CorkdARM64 string // corkd for linux/arm64, for baking multi-platform images
	Probe      string // reports its terminal's size (host/e2e/probe)
	Standin    string // the smolvm machine exec stand-in
	Forkresize string // the fork-per-resize workaround, for the benchmark
	Barerelay  string // a bare relay pair, the benchmark's ceiling for any agent and client
	Goempty    string // a Go program that does nothing, the benchmark's start-up floor for Go
}

// Build compiles every binary into dir as a release is built: static,
// stripped, with -trimpath.
func Build(dir string) (*Binaries, error) {
	b := &Binaries{Dir: dir}
	for _, p := range []struct {
		dst  *string
		pkg  string
		arch string
	}{
		{&b.Cork, "host/cmd/cork", ""}, {&b.Corkd, "guest/cmd/corkd", ""}, {&b.CorkdARM64, "guest/cmd/corkd", "arm64"},
		{&b.Probe, "host/e2e/probe", ""}, {&b.Standin, "host/e2e/smolvm-standin", ""},
		{&b.Forkresize, "host/e2e/bench/forkresize", ""}, {&b.Barerelay, "host/e2e/bench/barerelay", ""},
		{&b.Goempty, "host/e2e/bench/goempty", ""},
	} {
		name := filepath.Base(p.pkg)
		env := []string{"CGO_ENABLED=0"}
		if p.arch != "" {
			name += "-" + p.arch
			env = append(env, "GOARCH="+p.arch)
		}
		*p.dst = filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", *p.dst, "github.com/corkvm/cork/"+p.pkg)
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building %s: %v\n%s", p.pkg, err, out)
		}
	}
	return b, nil
}

// Agent is a corkd serving a unix socket.
type Agent struct {
	URL    string // unix:///path
	Sock   string
	Cmd    *exec.Cmd
	exited chan struct{}
}

// StartAgent starts corkd on the unix socket sock with more serve flags,
// its log to stderr, and returns once it accepts connections.
func StartAgent(corkd, sock string, stderr io.Writer, args ...string) (*Agent, error) {
	a := &Agent{URL: "unix://" + sock, Sock: sock, exited: make(chan struct{})}
	a.Cmd = exec.Command(corkd, append([]string{"serve", "--listen", a.URL}, args...)...)
	a.Cmd.Stderr = stderr
	if err := a.Cmd.Start(); err != nil {
		return nil, err
	}
	go func() { a.Cmd.Wait(); close(a.exited) }()
	if err := WaitListening(sock, a.exited, 10*time.Second); err != nil {
		a.Stop()
		return nil, fmt.Errorf("corkd %w", err)
	}
	return a, nil
}

// WaitListening returns once something accepts connections on the unix
// socket sock, or an error when exited (nil: never) is closed first or
// timeout passes.
func WaitListening(sock string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before it listened")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("did not listen within %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Exited is closed when corkd has exited.
func (a *Agent) Exited() <-chan struct{} { return a.exited }

// Stop kills corkd and removes its socket.
func (a *Agent) Stop() {
	a.Cmd.Process.Kill()
	<-a.exited
	os.Remove(a.Sock)
}

// Buffer is a bytes.Buffer safe for one writer and many readers: a
// program's output that a test watches while it runs.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CutProxy stands between cork and corkd on a unix socket and cuts every
// connection through it on demand: a network that drops, without cork or
// corkd dying.
type CutProxy struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	n     int
}

// NewCutProxy listens on sock and connects each client to target.
func NewCutProxy(sock, target string) (*CutProxy, error) {
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	p := &CutProxy{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.n++
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return p, nil
}

// URL is the proxy's address for cork --connect.
func (p *CutProxy) URL() string { return "unix://" + p.l.Addr().String() }

// Accepted counts the connections made through the proxy.
func (p *CutProxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// Cut closes every connection through the proxy.
func (p *CutProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Close stops the proxy and cuts its connections.
func (p *CutProxy) Close() {
	p.l.Close()
	p.Cut()
}
