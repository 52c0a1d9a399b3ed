package agent

import "time"

// SessionMembers lets the tests see a session's processes as corkd does.
var SessionMembers = sessionMembers

// SetClientStall shortens how long a write waits on a client that does
// not read, for the length of a test.
func SetClientStall(t interface{ Cleanup(func()) }, d time.Duration) {
	old := clientStall.Swap(int64(d))
	t.Cleanup(func() { clientStall.Store(old) })
}
