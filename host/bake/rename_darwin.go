package bake

import "golang.org/x/sys/unix"

// renameNoReplace renames from to to, failing with EEXIST if to exists.
func renameNoReplace(from, to string) error {
	return unix.RenamexNp(from, to, unix.RENAME_EXCL)
}

// renameExchange swaps from and to, both of which exist, in one step.
func renameExchange(from, to string) error {
	return unix.RenamexNp(from, to, unix.RENAME_SWAP)
}
