package agent

// SessionMembers lets the tests see a session's processes as corkd does.
var SessionMembers = sessionMembers
