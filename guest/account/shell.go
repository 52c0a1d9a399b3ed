package account

import (
	"bufio"
	"os"
	"strings"
)

// passwdFile is read for the login shell, which os/user does not expose.
var passwdFile = "/etc/passwd"

// shellOf returns the login shell of user name from /etc/passwd, or /bin/sh.
func shellOf(name string) string {
	f, err := os.Open(passwdFile)
	if err != nil {
		return "/bin/sh"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Split(s.Text(), ":")
		if len(fields) == 7 && fields[0] == name && fields[6] != "" {
			return fields[6]
		}
	}
	return "/bin/sh"
}
