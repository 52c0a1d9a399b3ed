package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/corkvm/cork/guest/agent"
)

// forwardFlags adds serve's forwarding flags to fs; the function it returns
// reads them once fs is parsed.
func forwardFlags(fs *pflag.FlagSet) func() (agent.ForwardConfig, error) {
	mode := fs.String("forwarding", string(agent.ForwardLocal), "what cork forward may do: none, local (the host reaches the guest's ports and sockets) or all (and guest listeners reach the host: cork forward -R)")
	perConn := fs.Int("max-streams-per-conn", agent.DefaultMaxStreamsPerConn, "forwarded connections open at once on one cork forward")
	perUID := fs.Int("max-streams-per-uid", agent.DefaultMaxStreamsPerUID, "forwarded connections open at once as one uid, across every cork forward")
	total := fs.Int("max-streams", agent.DefaultMaxStreams, fmt.Sprintf("forwarded connections open at once in all, at most %d (each can hold about %d KiB of corkd's memory: a 256 KiB window, two 32 KiB copy buffers and a 32 KiB frame)", agent.MostStreams, agent.StreamMemory>>10))
	return func() (agent.ForwardConfig, error) {
		c := agent.ForwardConfig{Mode: agent.ForwardMode(*mode), MaxStreamsPerConn: *perConn, MaxStreamsPerUID: *perUID, MaxStreams: *total}
		switch c.Mode {
		case agent.ForwardNone, agent.ForwardLocal, agent.ForwardAll:
		default:
			return c, fmt.Errorf("--forwarding %q: want none, local or all", *mode)
		}
		if *perConn < 1 || *perConn > 4096 || *perUID < 1 || *total < 1 || *total > agent.MostStreams {
			return c, fmt.Errorf("--max-streams-per-conn %d, --max-streams-per-uid %d, --max-streams %d: want 1 to 4096, at least 1, and 1 to %d",
				*perConn, *perUID, *total, agent.MostStreams)
		}
		return c, nil
	}
}
