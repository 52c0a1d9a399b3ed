package agent

import "time"

// SessionMembers lets the tests see a session's processes as corkd does.
var SessionMembers = sessionMembers

// SetTrackingHook has each session started call f with its program's pid
// before Shutdown can find it, and wait there until f returns.
func SetTrackingHook(f func(pid int)) {
	if f == nil {
		testHookTracking.Store(nil)
		return
	}
	testHookTracking.Store(&f)
}

// SetClientStall shortens how long a write waits on a client that does
// not read, for the length of a test.
func SetClientStall(t interface{ Cleanup(func()) }, d time.Duration) {
	old := clientStall.Swap(int64(d))
	t.Cleanup(func() { clientStall.Store(old) })
}
