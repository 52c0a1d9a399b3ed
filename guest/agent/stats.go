package agent

import (
	"os"
	"runtime"

	"github.com/corkvm/cork/guest/procfs"
)

// Stats is what corkd reports about itself on SIGUSR1.
type Stats struct {
	Sessions   int
	Pending    int // connections not yet admitted to a session
	Goroutines int
	Threads    int
	FDs        int
	RSSKiB     int
	Resizes    uint64 // window sizes applied to terminals since start
}

// ReadStats reads the process's figures.
func (s *Server) ReadStats() Stats {
	st := Stats{Sessions: s.Active(), Pending: s.conns.count(), Goroutines: runtime.NumGoroutine(), Resizes: s.resizes.Load()}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		st.FDs = len(ents)
	}
	st.Threads, _ = procfs.StatusKiB(0, "Threads") // a count, with no unit to trim
	st.RSSKiB, _ = procfs.StatusKiB(0, "VmRSS")
	return st
}
