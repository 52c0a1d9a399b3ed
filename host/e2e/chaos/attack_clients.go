//go:build linux

package main

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/corkvm/cork/protocol"
)

// The client attacks: attachers and watchers that never read a flood of
// output, and clients killed in the middle of resuming.

// flood prints about 175 KB/s, near what a busy TUI writes.
const flood = `i=0; while :; do seq $i $((i+500)); i=$((i+501)); sleep 0.02; done`

func attackStall(a attackArgs, t *tally) {
	name := a.name + "-flood"
	p, _, err := keep(a.sock, name, smallSize, "sh", "-c", flood)
	if err != nil {
		t.fail("keep", err)
		return
	}
	p.close()
	var wg sync.WaitGroup
	for i := range a.n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stallOn(a, t, &protocol.Attach{Session: name, Size: smallSize, ReadOnly: i%2 == 1})
		}()
		time.Sleep(200 * time.Millisecond) // takeovers one after another
	}
	// While they stall: does the flood's own uid still get its screen?
	for !a.pastEnd() {
		began := time.Now()
		var snap protocol.Snapshot
		if err := request(a.sock, protocol.TypePeek, &protocol.Peek{Session: name}, protocol.TypeSnapshot, &snap, screenTimeout); err != nil {
			t.fail("peek while stalled", err)
		} else {
			t.took("peek while stalled", time.Since(began))
		}
		time.Sleep(time.Second)
	}
	wg.Wait()
}

// stallOn attaches and never reads until the attack ends.
func stallOn(a attackArgs, t *tally, at *protocol.Attach) {
	p, err := dialHello(a.sock)
	if err != nil {
		t.fail("stall dial", err)
		return
	}
	defer p.close()
	if uc, ok := p.conn.(interface{ SetReadBuffer(int) error }); ok {
		uc.SetReadBuffer(4096)
	}
	if err := p.send(protocol.TypeAttach, at); err != nil {
		t.fail("stall attach", err)
		return
	}
	t.add(map[bool]string{false: "attachers not reading", true: "watchers not reading"}[at.ReadOnly], 1)
	time.Sleep(time.Until(a.until))
}

// counting prints numbers as fast as a shell can, with a breath every
// hundred: resumes happen mid-stream.
const counting = `i=0; while :; do echo $i; i=$((i+1)); [ $((i % 100)) = 0 ] && sleep 0.01; done`

func attackResume(a attackArgs, t *tally) {
	name := a.name + "-count"
	p, _, err := keep(a.sock, name, smallSize, "sh", "-c", counting)
	if err != nil {
		t.fail("keep", err)
		return
	}
	p.close()
	self, err := os.Executable()
	if err != nil {
		t.fail("self", err)
		return
	}
	rng := rand.New(rand.NewPCG(a.seed, 2))
	// Spread over the first third, before the connections attack.
	gap := time.Until(a.until) / 3 / time.Duration(a.n+1)
	for i := 0; i < a.n && !a.pastEnd(); i++ {
		time.Sleep(gap)
		if i%3 == 2 {
			cutMidResume(a, t, name, rng)
			continue
		}
		c := attackArgs{kind: "resume-client", sock: a.sock, home: a.home, until: a.until, seed: uint64(i), session: name}
		cmd := exec.Command(self, c.argv()...)
		if err := cmd.Start(); err != nil {
			t.fail("resume client", err)
			continue
		}
		time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
		cmd.Process.Kill()
		if cmd.Wait() == nil {
			t.add("resume clients ended before their kill", 1)
		} else {
			t.add("resume clients killed", 1)
		}
	}
}

// cutMidResume sends an Attach resuming somewhere and cuts the connection
// with corkd's answer unread.
func cutMidResume(a attackArgs, t *tally, name string, rng *rand.Rand) {
	p, err := dialHello(a.sock)
	if err != nil {
		t.fail("cut dial", err)
		return
	}
	from := uint64(rng.IntN(1 << 20))
	p.send(protocol.TypeAttach, &protocol.Attach{Session: name, Resume: &from, Size: smallSize})
	time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
	p.close()
	t.add("resumes cut", 1)
}

// resumeClient resumes the session from an offset of its seed and reads
// until it is killed, or the attack's end.
func resumeClient(a attackArgs, t *tally) {
	p, err := dialHello(a.sock)
	if err != nil {
		os.Exit(1)
	}
	from := a.seed * 997 % 100000
	p.send(protocol.TypeAttach, &protocol.Attach{Session: a.session, Resume: &from, Size: smallSize})
	p.conn.SetReadDeadline(a.until)
	for {
		if _, _, err := p.r.NextShared(); err != nil {
			os.Exit(1)
		}
	}
}
