package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/corkvm/cork/protocol"
)

// A /proc/net/tcp and tcp6 as the kernel prints them: listeners on
// loopback, on every address, on another address, and sockets that are
// not listening, of two uids.
const (
	procTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1435 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 11 1 0 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12 1 0 100 0 0 10 0
   2: 0A00020F:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 13 1 0 100 0 0 10 0
   3: 0100007F:1435 0100007F:D3A2 01 00000000:00000000 00:00000000 00000000  1000        0 14 1 0 100 0 0 10 0
   4: 0200007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 15 1 0 100 0 0 10 0
`
	procTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:22B8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 21 1 0 100 0 0 10 0
   1: 00000000000000000000000000000000:1435 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 22 1 0 100 0 0 10 0
   2: 20010DB8000000000000000000000001:1388 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 23 1 0 100 0 0 10 0
`
)

func writeProcNet(t *testing.T) string {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tcp"), []byte(procTCP), 0o644)
	os.WriteFile(filepath.Join(dir, "tcp6"), []byte(procTCP6), 0o644)
	return dir
}

func TestListeningPortsOfTheUser(t *testing.T) {
	got := listeningPorts(writeProcNet(t), 1000, false)
	// 5173 on 127.0.0.1 and on ::, 3000 on 127.0.0.2, 8888 on ::1 alone;
	// not root's 8080, nor 9090 and 5000 on addresses corkd cannot dial
	// as loopback, nor the connected socket.
	want := []protocol.Port{{Port: 3000, Host: "127.0.0.1"}, {Port: 5173, Host: "127.0.0.1"}, {Port: 8888, Host: "::1"}}
	if !slices.Equal(got, want) {
		t.Fatalf("ports %v, want %v", got, want)
	}
}

func TestListeningPortsOfEveryoneForRoot(t *testing.T) {
	var ports []uint16
	for _, p := range listeningPorts(writeProcNet(t), 0, true) {
		ports = append(ports, p.Port)
	}
	if want := []uint16{3000, 5173, 8080, 8888}; !slices.Equal(ports, want) {
		t.Fatalf("ports %v, want %v", ports, want)
	}
}

func TestListeningPortsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("  sl  local_address rem_address   st\n")
	for port := 1; port <= protocol.MaxPorts+10; port++ {
		fmt.Fprintf(&b, "   0: 0100007F:%04X 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n", port)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tcp"), []byte(b.String()), 0o644)
	if n := len(listeningPorts(dir, 0, true)); n != protocol.MaxPorts {
		t.Fatalf("%d ports reported, want the bound %d", n, protocol.MaxPorts)
	}
}
