package cli

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

func TestParseForward(t *testing.T) {
	tests := []struct {
		spec, address string
		want          forwardSpec
	}{
		{"8080:80", "127.0.0.1", forwardSpec{"tcp", "127.0.0.1:8080", protocol.NetTCP, "127.0.0.1:80", "80"}},
		{"5173", "127.0.0.1", forwardSpec{"tcp", "127.0.0.1:5173", protocol.NetTCP, "127.0.0.1:5173", "5173"}},
		{"5173", "::1", forwardSpec{"tcp", "[::1]:5173", protocol.NetTCP, "127.0.0.1:5173", "5173"}},
		{"8080:db:5432", "127.0.0.1", forwardSpec{"tcp", "127.0.0.1:8080", protocol.NetTCP, "db:5432", "db:5432"}},
		{"/tmp/db.sock:/run/postgresql/.s.PGSQL.5432", "127.0.0.1",
			forwardSpec{"unix", "/tmp/db.sock", protocol.NetUnix, "/run/postgresql/.s.PGSQL.5432", "/run/postgresql/.s.PGSQL.5432"}},
		{"/tmp/web.sock:80", "127.0.0.1", forwardSpec{"unix", "/tmp/web.sock", protocol.NetTCP, "127.0.0.1:80", "80"}},
		{"0:/run/x.sock", "127.0.0.1", forwardSpec{"tcp", "127.0.0.1:0", protocol.NetUnix, "/run/x.sock", "/run/x.sock"}},
	}
	for _, tt := range tests {
		got, err := parseForward(tt.spec, tt.address)
		if err != nil || *got != tt.want {
			t.Errorf("%q: %+v, %v; want %+v", tt.spec, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "http", "8080:", "8080:0", "0", "70000:80", "db.sock:/run/x.sock", "8080:db:", "8080:db:port", "+80:80"} {
		if _, err := parseForward(bad, "127.0.0.1"); err == nil || !strings.Contains(err.Error(), "want LOCAL:REMOTE") {
			t.Errorf("%q: %v, want an error showing the form", bad, err)
		}
	}
}

func TestParseRemote(t *testing.T) {
	for spec, want := range map[string]remoteSpec{
		"9000:127.0.0.1:5000":       {port: 9000, hostNet: "tcp", host: "127.0.0.1:5000", guestFor: "9000"},
		"9000:5000":                 {port: 9000, hostNet: "tcp", host: "127.0.0.1:5000", guestFor: "9000"},
		"0:[::1]:5000":              {hostNet: "tcp", host: "[::1]:5000", guestFor: "0"},
		"8080:proxy.lan:3128":       {port: 8080, hostNet: "tcp", host: "proxy.lan:3128", guestFor: "8080"},
		"/run/x.sock:5000":          {path: "/run/x.sock", hostNet: "tcp", host: "127.0.0.1:5000", guestFor: "/run/x.sock"},
		"/run/x.sock:db:5432":       {path: "/run/x.sock", hostNet: "tcp", host: "db:5432", guestFor: "/run/x.sock"},
		"9000:/tmp/h.sock":          {port: 9000, hostNet: "unix", host: "/tmp/h.sock", guestFor: "9000"},
		"/run/x.sock:/tmp/a:b.sock": {path: "/run/x.sock", hostNet: "unix", host: "/tmp/a:b.sock", guestFor: "/run/x.sock"},
	} {
		if got, err := parseRemote(spec); err != nil || *got != want {
			t.Errorf("%q: %+v, %v; want %+v", spec, got, err, want)
		}
	}
	for _, bad := range []string{"", "9000", "x:5000", "9000:", "9000:0", "9000:host:", "9000:host:0", "70000:5000", "run/x.sock:5000", "/run/x.sock", "/run/x.sock:tmp/h.sock"} {
		if _, err := parseRemote(bad); err == nil || !strings.Contains(err.Error(), "-R") {
			t.Errorf("%q: %v, want an error naming -R", bad, err)
		}
	}
}

// The host's socket is made mode 0600, whatever cork's umask: never wider
// for a moment, which a chmod after the bind would allow. A watcher
// stats the path as fast as it can while cork makes it again and again.
func TestForwardHostSocketPrivateFromTheStart(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0))
	sock := filepath.Join(t.TempDir(), "h.sock")
	f := &forwardSpec{localNet: "unix", local: sock}
	wider := make(chan os.FileMode, 1)
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if st, err := os.Lstat(sock); err == nil && st.Mode().Perm() != 0o600 {
				select {
				case wider <- st.Mode().Perm():
				default:
				}
			}
		}
	}()
	for range 2000 {
		l, err := f.listen()
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
	close(stop)
	<-watched
	select {
	case mode := <-wider:
		t.Fatalf("the host's socket had mode %o for a moment", mode)
	default:
	}
	l, err := f.listen()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if st, err := os.Lstat(sock); err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("the host's socket: %v, %v; want a socket of mode 0600", st.Mode(), err)
	}
	if _, err := f.listen(); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("a second listen at the same path: %v", err)
	}
}

// fakeCorkd listens on a unix socket and runs serve on each connection.
func fakeCorkd(t *testing.T, serve func(r *protocol.Reader, w *protocol.Writer)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "corkd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	prototest.Serve(t, l, func(c net.Conn) {
		serve(protocol.NewReader(c), protocol.NewWriter(c))
		io.Copy(io.Discard, c) // never answers more
	})
	return "unix://" + sock
}

// An interrupt ends cork forward while it waits for corkd: for its hello,
// or for the answer to a -R.
func TestForwardInterruptedWhileWaiting(t *testing.T) {
	silent := func(r *protocol.Reader, w *protocol.Writer) {}
	noListening := func(r *protocol.Reader, w *protocol.Writer) {
		r.Next()
		w.WriteJSON(protocol.TypeHello, &protocol.Hello{MinVersion: 1, MaxVersion: 2, Version: 2, Software: "fake",
			Capabilities: []string{protocol.CapForward}})
		r.Next()
		w.WriteJSON(protocol.TypeForwarding, &protocol.Forwarding{MaxStreams: 8})
	}
	for name, serve := range map[string]func(*protocol.Reader, *protocol.Writer){"hello": silent, "listen": noListening} {
		t.Run(name, func(t *testing.T) {
			waiting := make(chan struct{})
			url := fakeCorkd(t, func(r *protocol.Reader, w *protocol.Writer) {
				serve(r, w)
				close(waiting)
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan int, 1)
			go func() {
				done <- runForwards(ctx, &target{connect: url, timeout: 10 * time.Second}, "", nil, []*remoteSpec{{port: 0, host: "127.0.0.1:1"}}, nil)
			}()
			<-waiting
			cancel()
			select {
			case code := <-done:
				if code != ExitCorkError {
					t.Fatalf("exit %d", code)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("cork forward still waiting for corkd 10s after the interrupt")
			}
		})
	}
}

// What the guest says reaches the operator's terminal made printable: a
// listener's address with an escape sequence in it is not sent raw.
func TestForwardGuestTextPrintable(t *testing.T) {
	listened := make(chan struct{})
	url := fakeCorkd(t, func(r *protocol.Reader, w *protocol.Writer) {
		r.Next()
		w.WriteJSON(protocol.TypeHello, &protocol.Hello{MinVersion: 1, MaxVersion: 2, Version: 2, Software: "fake",
			Capabilities: []string{protocol.CapForward}})
		r.Next()
		w.WriteJSON(protocol.TypeForwarding, &protocol.Forwarding{MaxStreams: 8})
		r.Next()
		w.WriteJSON(protocol.TypeListening, &protocol.Listening{ID: 1, Address: "127.0.0.1:1\x1b]0;title\x07"})
		close(listened)
	})
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = pw
	defer func() { os.Stdout = stdout }()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- runForwards(ctx, &target{connect: url, timeout: 10 * time.Second}, "", nil, []*remoteSpec{{port: 0, host: "127.0.0.1:1"}}, nil)
		pw.Close()
	}()
	<-listened
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Forwarding from guest") {
				line <- sc.Text()
			}
		}
	}()
	select {
	case l := <-line:
		if strings.ContainsAny(l, "\x1b\x07") || !strings.HasPrefix(l, "Forwarding from guest 127.0.0.1:1") {
			t.Fatalf("printed %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Forwarding line within 10s")
	}
	cancel()
	<-done
}

func TestAutoPortRules(t *testing.T) {
	a, err := newAutoForwards("127.0.0.1", "1024-65535", "5432,6000-6010")
	if err != nil {
		t.Fatal(err)
	}
	for port, want := range map[uint16]bool{22: false, 1023: false, 1024: true, 5173: true, 5432: false, 6005: false, 6011: true, 65535: true} {
		if got := a.rules.allow(port); got != want {
			t.Errorf("port %d allowed %v, want %v", port, got, want)
		}
	}
	for _, bad := range []string{"", "0", "80-22", "http", "1-70000", "5173,"} {
		if _, err := newAutoForwards("127.0.0.1", bad, ""); err == nil || !strings.Contains(err.Error(), "--auto-ports") {
			t.Errorf("--auto-ports %q: %v", bad, err)
		}
	}
}
