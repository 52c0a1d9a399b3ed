// Command mkinitramfs writes a newc cpio archive, the format the kernel
// unpacks as its initramfs, from a list in the format of the kernel's own
// gen_init_cpio, so that no root, cpio or fakeroot is needed:
//
//	dir   NAME MODE UID GID
//	file  NAME LOCATION MODE UID GID
//	slink NAME TARGET MODE UID GID
//	nod   NAME MODE UID GID c|b MAJOR MINOR
//
// Modes are octal. Blank lines and lines starting with # are skipped.
//
//	mkinitramfs -o initramfs.cpio < list
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
)

func main() {
	out := flag.String("o", "", "output file")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "usage: mkinitramfs -o FILE < list")
		os.Exit(2)
	}
	f, err := os.Create(*out)
	if err != nil {
		fatal(err)
	}
	w := &writer{w: bufio.NewWriter(f)}
	s := bufio.NewScanner(os.Stdin)
	for line := 1; s.Scan(); line++ {
		text := strings.TrimSpace(s.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if err := w.entry(strings.Fields(text)); err != nil {
			fatal(fmt.Errorf("line %d (%q): %v", line, text, err))
		}
	}
	if err := s.Err(); err != nil {
		fatal(err)
	}
	if err := w.close(); err != nil {
		fatal(err)
	}
	if err := f.Close(); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "mkinitramfs: %v\n", err)
	os.Exit(1)
}

// File type bits of a cpio mode.
const (
	typeDir  = 0o040000
	typeReg  = 0o100000
	typeLink = 0o120000
	typeChr  = 0o020000
	typeBlk  = 0o060000
)

type writer struct {
	w   *bufio.Writer
	ino uint32
	off int64
}

func (w *writer) entry(f []string) error {
	num := func(s string, base int) (uint32, error) {
		n, err := strconv.ParseUint(s, base, 32)
		return uint32(n), err
	}
	need := map[string]int{"dir": 5, "file": 6, "slink": 6, "nod": 8}
	if n, ok := need[f[0]]; !ok {
		return fmt.Errorf("unknown entry type %q", f[0])
	} else if len(f) != n {
		return fmt.Errorf("%s takes %d fields, got %d", f[0], n-1, len(f)-1)
	}
	i := 2
	if f[0] == "file" || f[0] == "slink" {
		i = 3
	}
	mode, err1 := num(f[i], 8)
	uid, err2 := num(f[i+1], 10)
	gid, err3 := num(f[i+2], 10)
	for _, err := range []error{err1, err2, err3} {
		if err != nil {
			return err
		}
	}
	name := strings.TrimPrefix(f[1], "/")
	switch f[0] {
	case "dir":
		return w.header(name, typeDir|mode, uid, gid, 0, 0, nil)
	case "slink":
		return w.header(name, typeLink|mode, uid, gid, 0, 0, []byte(f[2]))
	case "file":
		data, err := os.ReadFile(f[2])
		if err != nil {
			return err
		}
		return w.header(name, typeReg|mode, uid, gid, 0, 0, data)
	default: // nod
		maj, err := num(f[6], 10)
		if err != nil {
			return err
		}
		min, err := num(f[7], 10)
		if err != nil {
			return err
		}
		t := uint32(typeChr)
		if f[5] == "b" {
			t = typeBlk
		}
		return w.header(name, t|mode, uid, gid, maj, min, nil)
	}
}

// header writes one newc entry: "070701", thirteen 8-digit hex fields, the
// NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes.
func (w *writer) header(name string, mode, uid, gid, rmaj, rmin uint32, data []byte) error {
	w.ino++
	nlink := uint32(1)
	if mode&0o170000 == typeDir {
		nlink = 2
	}
	fields := []uint32{w.ino, mode, uid, gid, nlink, 0, uint32(len(data)), 0, 0, rmaj, rmin, uint32(len(name) + 1), 0}
	var b strings.Builder
	b.WriteString("070701")
	for _, v := range fields {
		fmt.Fprintf(&b, "%08x", v)
	}
	b.WriteString(name)
	b.WriteByte(0)
	if err := w.write([]byte(b.String())); err != nil {
		return err
	}
	if err := w.write(data); err != nil {
		return err
	}
	return nil
}

func (w *writer) write(p []byte) error {
	if _, err := w.w.Write(p); err != nil {
		return err
	}
	w.off += int64(len(p))
	pad := (4 - w.off%4) % 4
	w.off += pad
	_, err := w.w.Write(make([]byte, pad))
	return err
}

func (w *writer) close() error {
	if err := w.header("TRAILER!!!", 0, 0, 0, 0, 0, nil); err != nil {
		return err
	}
	return w.w.Flush()
}
