package cli

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/protocol"
)

// portRange is FROM-TO, both included.
type portRange struct{ from, to uint16 }

// portRules say which of the guest's listening ports --auto carries: those
// in an include range (default 1024-65535, as lima ignores the privileged
// ports) and in no ignore range.
type portRules struct {
	include, ignore []portRange
}

// parsePortRanges parses PORT or FROM-TO, comma-separated.
func parsePortRanges(flag, s string) ([]portRange, error) {
	var rs []portRange
	for _, part := range strings.Split(s, ",") {
		from, to, isRange := strings.Cut(part, "-")
		if !isRange {
			to = from
		}
		a, errA := strconv.ParseUint(from, 10, 16)
		b, errB := strconv.ParseUint(to, 10, 16)
		if errA != nil || errB != nil || a == 0 || a > b {
			return nil, fmt.Errorf("%s %q: want PORT or FROM-TO, comma-separated, for example 3000-9999,5173", flag, s)
		}
		rs = append(rs, portRange{uint16(a), uint16(b)})
	}
	return rs, nil
}

func (r *portRules) allow(port uint16) bool {
	in := func(rs []portRange) bool {
		for _, x := range rs {
			if port >= x.from && port <= x.to {
				return true
			}
		}
		return false
	}
	return in(r.include) && !in(r.ignore)
}

// autoForwards follows the guest's listening ports (cork forward --auto):
// each port the rules allow gets a host listener, on the same port when it
// is free and on one the system picks otherwise, printed as it comes and
// goes.
type autoForwards struct {
	fw      *client.Forwarder
	address string
	rules   portRules

	mu     sync.Mutex
	open   map[uint16]net.Listener // by guest port
	closed bool
}

// newAutoForwards listens on address for the ports the rules allow: the
// ranges in include (--auto-ports) and none in ignore (--auto-ignore).
func newAutoForwards(address, include, ignore string) (*autoForwards, error) {
	a := &autoForwards{address: address, open: map[uint16]net.Listener{}}
	var err error
	if a.rules.include, err = parsePortRanges("--auto-ports", include); err != nil {
		return nil, err
	}
	if ignore != "" {
		if a.rules.ignore, err = parsePortRanges("--auto-ignore", ignore); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// apply makes the host's listeners match ports, corkd's latest report.
func (a *autoForwards) apply(ports []protocol.Port) {
	want := map[uint16]protocol.Port{}
	for _, p := range ports {
		if a.rules.allow(p.Port) {
			want[p.Port] = p
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	for port, l := range a.open {
		if _, ok := want[port]; !ok {
			l.Close()
			delete(a.open, port)
			fmt.Printf("Stopped forwarding from %s -> %d\n", l.Addr(), port)
		}
	}
	for port, p := range want {
		if a.open[port] != nil {
			continue
		}
		l, err := a.listen(port)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cork: forward guest port %d: %v\n", port, err)
			continue
		}
		a.open[port] = l
		fmt.Printf("Forwarding from %s -> %d\n", l.Addr(), port)
		remote := net.JoinHostPort(p.Host, strconv.Itoa(int(port)))
		go a.fw.Serve(l, protocol.NetTCP, remote, func(err error) {
			fmt.Fprintf(os.Stderr, "cork: forward %s -> %d: %v\n", l.Addr(), port, err)
		})
	}
}

// listen takes port on the host, or the next free one when it is taken
// (within 100), or any the system picks.
func (a *autoForwards) listen(port uint16) (net.Listener, error) {
	for p := int(port); p <= min(int(port)+100, 65535); p++ {
		if l, err := net.Listen("tcp", net.JoinHostPort(a.address, strconv.Itoa(p))); err == nil {
			return l, nil
		}
	}
	return net.Listen("tcp", net.JoinHostPort(a.address, "0"))
}

// close closes every listener.
func (a *autoForwards) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	for port, l := range a.open {
		l.Close()
		delete(a.open, port)
	}
}
