//go:build linux || darwin

// Package ttymodes carries a terminal's modes in an exec request: the host
// reads its terminal's settings, the guest applies them to the session's
// PTY before the program starts, as sshd applies the modes of an ssh
// pty-req (RFC 4254 section 8). Without them the guest PTY keeps the
// kernel's defaults: with IUTF8 off, Backspace after "é" erases one byte
// of two; with another erase character, Backspace types ^?.
//
// Modes travel by the mnemonics of RFC 4254 section 8 (and IUTF8, RFC 8160):
// a control character's byte, or 0 and 1 for a flag. A side applies the
// names its system has and ignores the others.
package ttymodes

import "golang.org/x/sys/unix"

type field uint8

const (
	cc field = iota
	iflag
	oflag
	lflag
	cflag
	csize // a CSIZE value (CS7, CS8): 1 when the size is this one
)

type mode struct {
	name  string
	field field
	value uint64 // the Cc index, the flag's bit, or the CSIZE value
}

// Encode returns t's modes by name.
func Encode(t *unix.Termios) map[string]uint32 {
	m := make(map[string]uint32, len(modes))
	for _, md := range modes {
		var v uint32
		switch md.field {
		case cc:
			v = uint32(t.Cc[md.value])
		case iflag:
			v = bit(t.Iflag, md.value)
		case oflag:
			v = bit(t.Oflag, md.value)
		case lflag:
			v = bit(t.Lflag, md.value)
		case cflag:
			v = bit(t.Cflag, md.value)
		case csize:
			if uint64(t.Cflag)&unix.CSIZE == md.value {
				v = 1
			}
		}
		m[md.name] = v
	}
	return m
}

// Apply sets on t each mode of m that this system has; it ignores names it
// does not know, as sshd ignores opcodes it does not know.
func Apply(t *unix.Termios, m map[string]uint32) {
	for _, md := range modes {
		v, ok := m[md.name]
		if !ok {
			continue
		}
		switch md.field {
		case cc:
			t.Cc[md.value] = uint8(v)
		case iflag:
			setBit(&t.Iflag, md.value, v != 0)
		case oflag:
			setBit(&t.Oflag, md.value, v != 0)
		case lflag:
			setBit(&t.Lflag, md.value, v != 0)
		case cflag:
			setBit(&t.Cflag, md.value, v != 0)
		case csize:
			if v != 0 {
				setBit(&t.Cflag, unix.CSIZE, false)
				setBit(&t.Cflag, md.value, true)
			}
		}
	}
}

func bit[T ~uint32 | ~uint64](f T, b uint64) uint32 {
	if uint64(f)&b != 0 {
		return 1
	}
	return 0
}

func setBit[T ~uint32 | ~uint64](f *T, b uint64, on bool) {
	if on {
		*f |= T(b)
	} else {
		*f &^= T(b)
	}
}
