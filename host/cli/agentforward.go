package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/corkvm/cork/host/client"
)

// forwardAgent carries the host's ssh agent ($SSH_AUTH_SOCK) into the
// guest for a session as user, as ssh -A: on a connection of its own
// beside the session's, corkd makes a socket only user (and root) can
// reach. It returns the socket's path in the guest, for the session's
// SSH_AUTH_SOCK, and the function that ends the forwarding, which removes
// the socket: call it when the session ends.
//
// With session set (cork attach -A), the kept session named so gets its
// socket again, where cork exec -A put it, and user is not used.
func forwardAgent(t *target, user, session string) (string, func(), error) {
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return "", nil, errors.New("SSH_AUTH_SOCK is not set: there is no ssh agent to forward (start ssh-agent, or leave out -A)")
	}
	conn, smolvmErr, err := t.dial(context.Background())
	if err != nil {
		return "", nil, err
	}
	dial := func() (net.Conn, error) { return net.DialTimeout("unix", sock, 10*time.Second) }
	var fw *client.Forwarder
	if session != "" {
		fw, err = client.ForwardAgentTo(conn, "cork "+Version, session, dial)
	} else {
		fw, err = client.ForwardAgent(conn, "cork "+Version, user, dial)
	}
	if err != nil {
		reportSmolvm(smolvmErr)
		return "", nil, fmt.Errorf("forwarding the ssh agent: %w", err)
	}
	return fw.AgentSocket(), func() { fw.Close() }, nil
}
