package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// corkd serve --stdio (what cork --machine runs through smolvm machine
// exec) dies with its exec, and a kept session must not. So it hands kept
// sessions to a long-lived corkd in the guest, the keeper, listening on a
// unix socket, and starts it first when none runs: in a session of its
// own, its output to a log file beside the socket, not to the exec's pipes.

// defaultKeepSocket is where the keeper listens: under /run for root,
// under /tmp in a directory of the user's own otherwise (newer smolvm runs
// exec as the image's user).
func defaultKeepSocket() string {
	if s := os.Getenv("CORKD_KEEP_SOCKET"); s != "" {
		return s
	}
	if os.Geteuid() == 0 {
		return "/run/corkd/kept.sock"
	}
	return fmt.Sprintf("/tmp/corkd-%d/kept.sock", os.Geteuid())
}

// keeperStart bounds the wait for a keeper just started to listen.
const keeperStart = 5 * time.Second

// keptVia returns the connection to the keeper, starting it if none
// listens on sock.
func keptVia(sock, logLevel string, log *slog.Logger) func() (io.ReadWriteCloser, error) {
	return func() (io.ReadWriteCloser, error) {
		if c, err := net.Dial("unix", sock); err == nil {
			return c, nil
		}
		dir := filepath.Dir(sock)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		// One relay starts the keeper; the others wait for it.
		lock, err := os.OpenFile(sock+".lock", os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, err
		}
		defer lock.Close()
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
			return nil, err
		}
		defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
		if c, err := net.Dial("unix", sock); err == nil {
			return c, nil
		}
		if os.Getpid() == 1 {
			log.Warn("corkd is this exec's PID 1: when the exec ends, the keeper and its sessions end with its pid namespace")
		}
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		logf, err := os.OpenFile(sock+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		defer logf.Close()
		cmd := exec.Command(self, "serve", "--listen", "unix://"+sock, "--pid-file", sock+".pid", "--log-level", logLevel)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting the keeper: %w", err)
		}
		log.Info("started the corkd that keeps sessions", "pid", cmd.Process.Pid, "socket", sock)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		deadline := time.Now().Add(keeperStart)
		for {
			c, err := net.Dial("unix", sock)
			if err == nil {
				cmd.Process.Release()
				return c, nil
			}
			select {
			case err := <-exited:
				return nil, fmt.Errorf("the keeper exited at start (%v); see %s.log", err, sock)
			default:
			}
			if time.Now().After(deadline) {
				return nil, errors.New("the keeper did not listen within " + keeperStart.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
