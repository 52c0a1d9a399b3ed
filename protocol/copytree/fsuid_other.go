//go:build !linux

package copytree

import "os"

// fsUID is the uid the calling thread's file operations run as.
func fsUID() uint32 { return uint32(os.Geteuid()) }
