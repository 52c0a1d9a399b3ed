package cli

import (
	"strings"
	"testing"

	"github.com/corkvm/cork/protocol"
)

func TestParseForward(t *testing.T) {
	tests := []struct {
		spec, address string
		want          forwardSpec
	}{
		{"8080:80", "127.0.0.1", forwardSpec{"tcp", "127.0.0.1:8080", protocol.NetTCP, "127.0.0.1:80", "80"}},
		{"5173", "127.0.0.1", forwardSpec{"tcp", "127.0.0.1:5173", protocol.NetTCP, "127.0.0.1:5173", "5173"}},
		{"5173", "::1", forwardSpec{"tcp", "[::1]:5173", protocol.NetTCP, "127.0.0.1:5173", "5173"}},
		{"8080:db:5432", "127.0.0.1", forwardSpec{"tcp", "127.0.0.1:8080", protocol.NetTCP, "db:5432", "db:5432"}},
		{"/tmp/db.sock:/run/postgresql/.s.PGSQL.5432", "127.0.0.1",
			forwardSpec{"unix", "/tmp/db.sock", protocol.NetUnix, "/run/postgresql/.s.PGSQL.5432", "/run/postgresql/.s.PGSQL.5432"}},
		{"/tmp/web.sock:80", "127.0.0.1", forwardSpec{"unix", "/tmp/web.sock", protocol.NetTCP, "127.0.0.1:80", "80"}},
		{"0:/run/x.sock", "127.0.0.1", forwardSpec{"tcp", "127.0.0.1:0", protocol.NetUnix, "/run/x.sock", "/run/x.sock"}},
	}
	for _, tt := range tests {
		got, err := parseForward(tt.spec, tt.address)
		if err != nil || *got != tt.want {
			t.Errorf("%q: %+v, %v; want %+v", tt.spec, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "http", "8080:", "8080:0", "0", "70000:80", "db.sock:/run/x.sock", "8080:db:", "8080:db:port", "+80:80"} {
		if _, err := parseForward(bad, "127.0.0.1"); err == nil || !strings.Contains(err.Error(), "want LOCAL:REMOTE") {
			t.Errorf("%q: %v, want an error showing the form", bad, err)
		}
	}
}

func TestParseRemote(t *testing.T) {
	for spec, want := range map[string]remoteSpec{
		"9000:127.0.0.1:5000": {9000, "127.0.0.1:5000"},
		"9000:5000":           {9000, "127.0.0.1:5000"},
		"0:[::1]:5000":        {0, "[::1]:5000"},
		"8080:proxy.lan:3128": {8080, "proxy.lan:3128"},
	} {
		if got, err := parseRemote(spec); err != nil || *got != want {
			t.Errorf("%q: %+v, %v; want %+v", spec, got, err, want)
		}
	}
	for _, bad := range []string{"", "9000", "x:5000", "9000:", "9000:host:", "9000:host:0", "70000:5000"} {
		if _, err := parseRemote(bad); err == nil || !strings.Contains(err.Error(), "-R") {
			t.Errorf("%q: %v, want an error naming -R", bad, err)
		}
	}
}

func TestAutoPortRules(t *testing.T) {
	a, err := newAutoForwards("127.0.0.1", "1024-65535", "5432,6000-6010")
	if err != nil {
		t.Fatal(err)
	}
	for port, want := range map[uint16]bool{22: false, 1023: false, 1024: true, 5173: true, 5432: false, 6005: false, 6011: true, 65535: true} {
		if got := a.rules.allow(port); got != want {
			t.Errorf("port %d allowed %v, want %v", port, got, want)
		}
	}
	for _, bad := range []string{"", "0", "80-22", "http", "1-70000", "5173,"} {
		if _, err := newAutoForwards("127.0.0.1", bad, ""); err == nil || !strings.Contains(err.Error(), "--auto-ports") {
			t.Errorf("--auto-ports %q: %v", bad, err)
		}
	}
}
