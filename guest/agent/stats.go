package agent

import (
	"os"
	"runtime"

	"github.com/corkvm/cork/guest/procfs"
)

// Stats is what corkd reports about itself on SIGUSR1.
type Stats struct {
	Sessions   int
	Goroutines int
	FDs        int
	RSSKiB     int
	Resizes    uint64 // window sizes applied to terminals since start
}

// ReadStats reads the process's figures.
func (s *Server) ReadStats() Stats {
	st := Stats{Sessions: s.Active(), Goroutines: runtime.NumGoroutine(), Resizes: s.resizes.Load()}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		st.FDs = len(ents)
	}
	st.RSSKiB, _ = procfs.StatusKiB(0, "VmRSS")
	return st
}
