package agent_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/protocol"
)

// rssKiB is this process's resident memory.
func rssKiB() int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// TestMeasureKeptMemory measures what 10 kept 200x50 sessions with 3,000
// coloured lines of output each cost, and the RSS left after they are
// killed and removed. It prints figures for the README rather than
// checking them: CORK_MEASURE_MEMORY=1 go test -v -run TestMeasureKeptMemory
// ./guest/agent/
func TestMeasureKeptMemory(t *testing.T) {
	if os.Getenv("CORK_MEASURE_MEMORY") == "" {
		t.Skip("a measurement; set CORK_MEASURE_MEMORY=1 to run it")
	}
	srv := newServer(t, agent.Config{FreeMemoryAfter: agent.DefaultFreeMemoryAfter})
	start := rssKiB()
	fill := `awk 'BEGIN { for (l = 0; l < 3000; l++) { for (i = 0; i < 190; i++) printf "\033[38;2;%d;%d;7;48;2;%d;1;2m%c", i, l%256, (i+l)%256, 97+(i+l)%26; printf "\r\n" }; print "done"; system("sleep 600") }'`
	var ids []string
	for range 10 {
		p := dial(t, srv, -1)
		req := keep("", "sh", "-c", fill)
		req.Size = protocol.WindowSize{Cols: 200, Rows: 50}
		ids = append(ids, p.Exec(req).Session)
		readUntil(t, p, "done")
		p.Conn.Close()
	}
	for _, id := range ids { // a peek catches each screen up
		q := dial(t, srv, -1)
		q.Send(protocol.TypePeek, &protocol.Peek{Session: id})
		q.Expect(protocol.TypeSnapshot)
	}
	full := rssKiB()
	t.Logf("10 sessions: RSS %d KiB (%d KiB each), live heap %d KiB", full, (full-start)/10, liveHeap()>>10)
	for _, id := range ids {
		q := dial(t, srv, -1)
		q.Send(protocol.TypeKill, &protocol.Kill{Session: id, Signal: "KILL"})
		q.Expect(protocol.TypeDone)
	}
	waitFor(t, "the sessions to exit", 10*time.Second, func() bool { return srv.Active() == 0 })
	time.Sleep(3 * time.Second) // past the idle agent's return of memory
	for _, id := range ids {
		q := dial(t, srv, -1)
		q.Send(protocol.TypeRemove, &protocol.Remove{Session: id})
		q.Expect(protocol.TypeDone)
	}
	removed := rssKiB()
	for i := range 4 {
		time.Sleep(5 * time.Second)
		t.Logf("%2d s after rm: RSS %d KiB", 5*(i+1), rssKiB())
	}
	t.Logf("RSS at start %d KiB, at rm %d KiB; live heap at the end %d KiB", start, removed, liveHeap()>>10)
}
