package agent

import (
	"cmp"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/guest/procfs"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/streams"
)

// WatchInterval is how often corkd reads the guest's listening sockets for
// a cork forward --auto. The host never polls: corkd sends only changes.
const WatchInterval = time.Second

// procNet is where the kernel lists TCP sockets; a variable for tests.
var procNet = "/proc/net"

// watchPorts sends m the ports that acct's programs (every program's, for
// root) listen on, at once and whenever they change, until the connection
// ends.
func watchPorts(m *streams.Mux, acct *account.Account, log *slog.Logger) {
	tick := time.NewTicker(WatchInterval)
	defer tick.Stop()
	var last []protocol.Port
	for first := true; ; first = false {
		ports := listeningPorts(procNet, acct.UID, acct.UID == 0)
		if first || !slices.Equal(ports, last) {
			if m.WriteJSON(protocol.TypePorts, &protocol.Ports{Ports: ports}) != nil {
				return
			}
			log.Debug("listening ports", "ports", len(ports))
			last = ports
		}
		select {
		case <-tick.C:
		case <-m.Done():
			return
		}
	}
}

// listeningPorts reads dir's tcp and tcp6 tables: the ports listened on
// by uid (by anyone, with all), sorted, at most protocol.MaxPorts. A port
// IPv4 listens on is reached at 127.0.0.1, one only IPv6 does at ::1.
func listeningPorts(dir string, uid uint32, all bool) []protocol.Port {
	found := map[uint16]string{}
	for _, table := range []struct{ file, host string }{{"tcp6", "::1"}, {"tcp", "127.0.0.1"}} {
		f, err := os.Open(dir + "/" + table.file)
		if err != nil {
			continue // no IPv6 in this kernel
		}
		for _, port := range parseListening(f, uid, all) {
			found[port] = table.host
		}
		f.Close()
	}
	ports := make([]protocol.Port, 0, len(found))
	for port, host := range found {
		ports = append(ports, protocol.Port{Port: port, Host: host})
	}
	slices.SortFunc(ports, func(a, b protocol.Port) int { return cmp.Compare(a.Port, b.Port) })
	if len(ports) > protocol.MaxPorts {
		ports = ports[:protocol.MaxPorts]
	}
	return ports
}

// parseListening returns the ports of r's table (the format of
// /proc/net/tcp) in state LISTEN on a loopback or wildcard address, whose
// socket is uid's (anyone's, with all).
func parseListening(r io.Reader, uid uint32, all bool) []uint16 {
	var ports []uint16
	procfs.ScanTCP(r, func(s procfs.TCPSocket) bool {
		addr := s.Local.Addr().Unmap()
		if s.State == procfs.TCPListen && s.Local.Port() != 0 && (addr.IsLoopback() || addr.IsUnspecified()) && (all || s.UID == uid) {
			ports = append(ports, s.Local.Port())
		}
		return true
	})
	return ports
}
