package agent

import (
	"bufio"
	"cmp"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corkvm/cork/guest/account"
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
	sc := bufio.NewScanner(r)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[3] != "0A" {
			continue
		}
		addr, hexPort, ok := strings.Cut(f[1], ":")
		port, err := strconv.ParseUint(hexPort, 16, 16)
		if !ok || err != nil || port == 0 || !loopbackOrAny(addr) {
			continue
		}
		owner, err := strconv.ParseUint(f[7], 10, 32)
		if err != nil || (!all && uint32(owner) != uid) {
			continue
		}
		ports = append(ports, uint16(port))
	}
	return ports
}

// loopbackOrAny reports whether addr, an address as /proc/net/tcp{,6}
// prints it (32-bit words in the kernel's byte order, little-endian
// here), is the wildcard or a loopback address: one corkd can dial.
func loopbackOrAny(addr string) bool {
	switch addr {
	case "00000000", "00000000000000000000000000000000", // 0.0.0.0, ::
		"00000000000000000000000001000000": // ::1
		return true
	}
	// 127.0.0.0/8, plain or IPv4-mapped: the last byte of the word.
	return len(addr) == 8 && strings.HasSuffix(addr, "7F") ||
		len(addr) == 32 && strings.HasPrefix(addr, "0000000000000000FFFF0000") && strings.HasSuffix(addr, "7F")
}
