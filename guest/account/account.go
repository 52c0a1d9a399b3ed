// Package account resolves the user a session runs as from /etc/passwd and
// /etc/group, without PAM, NSS or a login shell.
package account

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// Account is everything a session needs to run as a user.
type Account struct {
	Name   string   // login name; for a uid with no passwd entry, the uid in decimal
	UID    uint32   //
	GID    uint32   // primary group
	Groups []uint32 // supplementary groups, the primary group among them
	Home   string   // home directory; "/" for a uid with no passwd entry
	Shell  string   // login shell; /bin/sh when the entry has none
}

// ErrUnknown is wrapped by the error Lookup returns for a name with no
// passwd entry.
var ErrUnknown = errors.New("unknown user")

// System is the machine's own /etc/passwd and /etc/group.
var System = Files{FS: os.DirFS("/")}

// Lookup resolves spec, a login name or a numeric uid, in System.
func Lookup(spec string) (*Account, error) { return System.Lookup(spec) }

// ByUID returns uid's own account in System (see Files.ByUID).
func ByUID(uid uint32) (*Account, error) { return System.ByUID(uid) }

// Current returns the account corkd itself runs as.
func Current() (*Account, error) {
	euid := uint32(os.Geteuid())
	if e := System.userByUID(euid); e != nil {
		return System.account(e), nil
	}
	// No entry: unlike a requested uid's, corkd's own gid is known.
	gid := uint32(os.Getegid())
	return &Account{Name: strconv.FormatUint(uint64(euid), 10), UID: euid, GID: gid, Groups: []uint32{gid}, Home: "/", Shell: "/bin/sh"}, nil
}

// Lookup resolves spec, a login name or a numeric uid.
//
// A numeric uid with no passwd entry is allowed, as docker and kubernetes
// allow it: the account gets gid = uid, no supplementary groups, HOME=/ and
// the uid as its name. A name with no entry is an error wrapping ErrUnknown.
func (f Files) Lookup(spec string) (*Account, error) {
	if spec == "" {
		return nil, fmt.Errorf("%w: empty user name", ErrUnknown)
	}
	if e := f.findUser(func(e *passwdEntry) bool { return e.name == spec }); e != nil {
		return f.account(e), nil
	}
	n, err := strconv.ParseUint(spec, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%w %q: no such entry in /etc/passwd", ErrUnknown, spec)
	}
	return f.ByUID(uint32(n))
}

// ByUID returns uid's own account: its first passwd entry, the one
// getpwuid(3) gives, whatever other entries share the uid. A uid with no
// entry gets gid = uid, no supplementary groups, HOME=/ and the uid as its
// name, as Lookup gives it.
func (f Files) ByUID(uid uint32) (*Account, error) {
	if e := f.userByUID(uid); e != nil {
		return f.account(e), nil
	}
	name := strconv.FormatUint(uint64(uid), 10)
	return &Account{Name: name, UID: uid, GID: uid, Groups: []uint32{uid}, Home: "/", Shell: "/bin/sh"}, nil
}

// userByUID returns uid's first passwd entry, or nil.
func (f Files) userByUID(uid uint32) *passwdEntry {
	return f.findUser(func(e *passwdEntry) bool { return e.uid == uid })
}

// account is e's account, with the groups /etc/group gives its name.
func (f Files) account(e *passwdEntry) *Account {
	a := &Account{Name: e.name, UID: e.uid, GID: e.gid, Home: e.home, Shell: e.shell}
	if a.Home == "" {
		a.Home = "/"
	}
	if a.Shell == "" {
		a.Shell = "/bin/sh"
	}
	// The supplementary groups must be listed explicitly: an empty list
	// would drop them, and none at all would keep corkd's (golang/go#15865).
	a.Groups = f.groupsOf(e.name, e.gid)
	return a
}

// Credential returns the credential that makes a child run as a: set on
// exec.Cmd's SysProcAttr, it has the Go runtime call setgroups (these
// groups), setgid and setuid, in that order, in the child before exec.
func (a *Account) Credential() *syscall.Credential {
	return &syscall.Credential{Uid: a.UID, Gid: a.GID, Groups: a.Groups}
}

// TTYGroup returns the gid of group "tty", which owns terminals on most
// systems, or a's own group when there is no such group.
func (a *Account) TTYGroup() uint32 {
	if gid, ok := System.groupID("tty"); ok {
		return gid
	}
	return a.GID
}
