package ttymodes

import "golang.org/x/sys/unix"

// modes are the RFC 4254 modes macOS has (not VSWTCH, IUCLC, XCASE or
// OLCUC).
var modes = []mode{
	{"VINTR", cc, unix.VINTR}, {"VQUIT", cc, unix.VQUIT}, {"VERASE", cc, unix.VERASE},
	{"VKILL", cc, unix.VKILL}, {"VEOF", cc, unix.VEOF}, {"VEOL", cc, unix.VEOL},
	{"VEOL2", cc, unix.VEOL2}, {"VSTART", cc, unix.VSTART}, {"VSTOP", cc, unix.VSTOP},
	{"VSUSP", cc, unix.VSUSP}, {"VDSUSP", cc, unix.VDSUSP}, {"VREPRINT", cc, unix.VREPRINT},
	{"VWERASE", cc, unix.VWERASE}, {"VLNEXT", cc, unix.VLNEXT}, {"VDISCARD", cc, unix.VDISCARD},
	{"VSTATUS", cc, unix.VSTATUS},
	{"IGNPAR", iflag, unix.IGNPAR}, {"PARMRK", iflag, unix.PARMRK}, {"INPCK", iflag, unix.INPCK},
	{"ISTRIP", iflag, unix.ISTRIP}, {"INLCR", iflag, unix.INLCR}, {"IGNCR", iflag, unix.IGNCR},
	{"ICRNL", iflag, unix.ICRNL}, {"IXON", iflag, unix.IXON}, {"IXANY", iflag, unix.IXANY},
	{"IXOFF", iflag, unix.IXOFF}, {"IMAXBEL", iflag, unix.IMAXBEL}, {"IUTF8", iflag, unix.IUTF8},
	{"ISIG", lflag, unix.ISIG}, {"ICANON", lflag, unix.ICANON}, {"ECHO", lflag, unix.ECHO},
	{"ECHOE", lflag, unix.ECHOE}, {"ECHOK", lflag, unix.ECHOK}, {"ECHONL", lflag, unix.ECHONL},
	{"NOFLSH", lflag, unix.NOFLSH}, {"TOSTOP", lflag, unix.TOSTOP}, {"IEXTEN", lflag, unix.IEXTEN},
	{"ECHOCTL", lflag, unix.ECHOCTL}, {"ECHOKE", lflag, unix.ECHOKE}, {"PENDIN", lflag, unix.PENDIN},
	{"OPOST", oflag, unix.OPOST}, {"ONLCR", oflag, unix.ONLCR}, {"OCRNL", oflag, unix.OCRNL},
	{"ONOCR", oflag, unix.ONOCR}, {"ONLRET", oflag, unix.ONLRET},
	{"CS7", csize, unix.CS7}, {"CS8", csize, unix.CS8},
	{"PARENB", cflag, unix.PARENB}, {"PARODD", cflag, unix.PARODD},
}
