package agent

// SessionMembers lets the tests see a session's processes as corkd does.
var SessionMembers = sessionMembers

// SetTrackingHook has each session started call f with its program's pid
// before Shutdown can find it, and wait there until f returns.
func SetTrackingHook(f func(pid int)) { testHookTracking = f }
