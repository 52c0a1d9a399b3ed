//go:build linux

package main

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/corkvm/cork/protocol"
)

// The screen attacks make corkd's emulator work: sizes far beyond any
// terminal, and output that is slow to emulate. Each session is peeked,
// attached to (a redraw) and watched, each timed.

var hugeSize = protocol.WindowSize{Cols: math.MaxUint16, Rows: math.MaxUint16}

var smallSize = protocol.WindowSize{Cols: 80, Rows: 24}

// screenTimeout bounds a peek, a redraw or a watcher's first screen: far
// longer than any should take, short enough to end the attack.
const screenTimeout = 30 * time.Second

// sleepArg is how long an attack's program stays after its output: past
// the attack's end, for the harness to kill it.
func (a attackArgs) sleepArg() string {
	return fmt.Sprint(int(time.Until(a.until).Seconds()) + 60)
}

func attackHuge(a attackArgs, t *tally) {
	var wg sync.WaitGroup
	for i := range a.n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("%s-huge-%d", a.name, i)
			size := hugeSize
			if i%2 == 1 {
				size = smallSize // then resized to the huge size
			}
			p, _, err := keep(a.sock, name, size, "sh", "-c", "seq 1 5000; exec sleep "+a.sleepArg())
			if err != nil {
				t.fail("keep", err)
				return
			}
			p.send(protocol.TypeResize, protocol.EncodeResize(hugeSize))
			p.outputUntil(5000*5, screenTimeout)
			p.close()
			screenWork(a, t, name, hugeSize)
		}()
	}
	wg.Wait()
}

// slowOutput are programs whose output is slow to emulate.
var slowOutput = map[string]struct {
	program string
	bytes   int
}{
	"vt":         {`head -c 262144 /dev/zero | tr '\0' '\v'`, 262144},
	"ff":         {`head -c 262144 /dev/zero | tr '\0' '\f'`, 262144},
	"ind-nel-ri": {`yes "$(printf '\033D\033E\033M')" | tr -d '\n' | head -c 262144`, 262144},
	"region":     {`printf '\033[2;3r'; head -c 262144 /dev/zero | tr '\0' '\n'`, 262144},
	"marks":      {`printf a; yes "$(printf '\314\201')" | tr -d '\n' | head -c 1000000`, 1000001},
	"csi-repeat": {`printf 'x\033[9999999999999\177999999b'`, 24},
}

func attackSlow(a attackArgs, t *tally) {
	var wg sync.WaitGroup
	for kind, out := range slowOutput {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := a.name + "-" + kind
			p, _, err := keep(a.sock, name, smallSize, "sh", "-c", out.program+"; exec sleep "+a.sleepArg())
			if err != nil {
				t.fail("keep "+kind, err)
				return
			}
			began := time.Now()
			if _, err := p.outputUntil(out.bytes, screenTimeout); err != nil {
				t.fail("output "+kind, err)
			}
			t.took("output "+kind, time.Since(began))
			p.close()
			for round := 0; round < a.n && !a.pastEnd(); round++ {
				screenWork(a, t, name, smallSize)
			}
		}()
	}
	wg.Wait()
}

// screenWork peeks at the session, attaches to it for a redraw and
// watches it, each timed under screenTimeout.
func screenWork(a attackArgs, t *tally, name string, size protocol.WindowSize) {
	began := time.Now()
	var snap protocol.Snapshot
	if err := request(a.sock, protocol.TypePeek, &protocol.Peek{Session: name, ANSI: true}, protocol.TypeSnapshot, &snap, screenTimeout); err != nil {
		t.fail("peek", err)
	} else {
		t.took("peek", time.Since(began))
		t.add("peeks", 1)
	}
	for _, readOnly := range []bool{false, true} {
		what := map[bool]string{false: "redraw", true: "watch"}[readOnly]
		began := time.Now()
		if err := firstScreen(a.sock, &protocol.Attach{Session: name, Size: size, ReadOnly: readOnly}); err != nil {
			t.fail(what, err)
			continue
		}
		t.took(what, time.Since(began))
		t.add(what+"s", 1)
	}
}

// firstScreen attaches and waits for the Restore frame that draws the
// screen, then leaves.
func firstScreen(sock string, at *protocol.Attach) error {
	p, err := dialHello(sock)
	if err != nil {
		return err
	}
	defer p.close()
	if err := p.send(protocol.TypeAttach, at); err != nil {
		return err
	}
	if err := p.expect(protocol.TypeAttached, screenTimeout, nil); err != nil {
		return err
	}
	return p.expect(protocol.TypeRestore, screenTimeout, nil)
}
