package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVhostClientFlag: nic add --vhost-client[=true|false] sets the
// vNIC's vhost-user mode, its absence leaves the daemon's default, nic
// details prints the mode when the daemon reports it, and bad values are
// usage errors that send nothing.
func TestVhostClientFlag(t *testing.T) {
	tests := []struct {
		name          string
		defaultClient bool
		flags         []string
		wantClient    bool
		wantLine      string // in nic details; "" = no vhost-user line
	}{
		{"absent, server default", false, nil, false, ""},
		{"absent, client default", true, nil, true, "vhost-user client: true\n"},
		{"bare flag", false, []string{"--vhost-client"}, true, "vhost-user client: true\n"},
		{"=true", false, []string{"--vhost-client=true"}, true, "vhost-user client: true\n"},
		{"=false on a client default", true, []string{"--vhost-client=false"}, false, "vhost-user client: false\n"},
		{"=false on a server default", false, []string{"--vhost-client=false"}, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, serverOpts{vhostClient: tc.defaultClient})
			args := append([]string{"nic", "add", "--id", "vm-1", "--mac", macA, "--vni", "42"}, tc.flags...)
			if out := ts.mustRun(t, args...); out != "/run/butterfly/qemu-vhost-vm-1\n" {
				t.Errorf("nic add printed %q", out)
			}
			n, ok := ts.dp.NIC("vm-1")
			if !ok || n.VhostClient != tc.wantClient {
				t.Errorf("dataplane vNIC %+v, want VhostClient %t", n, tc.wantClient)
			}
			details := ts.mustRun(t, "nic", "details", "vm-1")
			if got := strings.Contains(details, "vhost-user client"); got != (tc.wantLine != "") ||
				(tc.wantLine != "" && !strings.HasSuffix(details, tc.wantLine)) {
				t.Errorf("nic details:\n%swant last line %q", details, tc.wantLine)
			}
		})
	}
	ts := startServer(t, serverOpts{})
	for _, bad := range [][]string{
		{"--vhost-client=yes"},
		{"--vhost-client", "true"}, // a bool-like flag takes its value after '='
	} {
		args := append([]string{"nic", "add", "--id", "vm-1", "--mac", macA, "--vni", "42"}, bad...)
		if r := ts.run(args...); r.code == 0 || r.stderr == "" {
			t.Errorf("nic add %q: exit %d, stderr %q; want a usage error", bad, r.code, r.stderr)
		}
	}
	if r := ts.run("nic", "add", "--id", "t", "--mac", macA, "--vni", "42", "--type", "TAP", "--vhost-client"); r.code == 0 ||
		!strings.Contains(r.stderr, "vhost_user_client is for VHOST_USER_SERVER nics") {
		t.Errorf("TAP with --vhost-client: exit %d, stderr %q", r.code, r.stderr)
	}
	if ids := ts.dp.NICIDs(); len(ids) != 0 {
		t.Errorf("refused requests created vNICs %q", ids)
	}
	if r := ts.run("nic", "update", "--id", "vm-1", "--vhost-client"); r.code == 0 {
		t.Errorf("nic update accepted --vhost-client: %+v", r)
	}
}

// TestVhostClientDumpReplay: dump prints vhost_user_client only where the
// daemon reports it (a mode other than its default), so a dump of a default
// daemon's server-mode vNICs has no extension field and loads in the
// original's tools; a dump replayed on a daemon with the same default, or
// a client-default daemon's dump on any daemon, recreates every vhost-user
// vNIC in its own mode, and the second dump is the same text.
func TestVhostClientDumpReplay(t *testing.T) {
	tests := []struct {
		name                string
		from, to            bool // the daemons' default modes (true = client)
		wantTrue, wantFalse int  // vhost_user_client lines in the dump
	}{
		{"server default, same default", false, false, 1, 0},
		{"client default, same default", true, true, 1, 1},
		{"client default on a server default", true, false, 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := startServer(t, serverOpts{vhostClient: tc.from})
			a.mustRun(t, "nic", "add", "--id", "srv", "--mac", macA, "--vni", "1", "--vhost-client=false")
			a.mustRun(t, "nic", "add", "--id", "cli", "--mac", macB, "--vni", "1", "--vhost-client=true")
			a.mustRun(t, "nic", "add", "--id", "tap", "--mac", macB, "--vni", "1", "--type", "TAP")
			first := a.mustRun(t, "dump")
			if n, m := strings.Count(first, "vhost_user_client: true"), strings.Count(first, "vhost_user_client: false"); n != tc.wantTrue || m != tc.wantFalse {
				t.Errorf("dump has %d vhost_user_client: true and %d false, want %d and %d:\n%s", n, m, tc.wantTrue, tc.wantFalse, first)
			}
			file := filepath.Join(t.TempDir(), "dump.txt")
			if err := os.WriteFile(file, []byte(first), 0o644); err != nil {
				t.Fatal(err)
			}
			b := startServer(t, serverOpts{vhostClient: tc.to})
			b.mustRun(t, "request", file)
			for id, want := range map[string]bool{"srv": false, "cli": true, "tap": false} {
				if n, _ := b.dp.NIC(id); n.VhostClient != want {
					t.Errorf("%s has VhostClient %t after the replay, want %t", id, n.VhostClient, want)
				}
			}
			if tc.from == tc.to {
				if second := b.mustRun(t, "dump"); second != first {
					t.Errorf("dump after replay differs:\n%s", lineDiff(first, second))
				}
			}
		})
	}
}

// TestDumpWithoutExtensions: a dump of vNICs that use no extension (server
// mode on a server-default daemon) names no extension field, so that the
// original's client can replay it.
func TestDumpWithoutExtensions(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.mustRun(t, "nic", "add", "--id", "vm-1", "--mac", macA, "--vni", "42")
	ts.mustRun(t, "nic", "add", "--id", "vm-2", "--mac", macB, "--vni", "42", "--type", "TAP")
	dump := ts.mustRun(t, "dump")
	for _, field := range []string{"vhost_user_client", "fw_import"} {
		if strings.Contains(dump, field) {
			t.Errorf("dump names the extension field %s:\n%s", field, dump)
		}
	}
}
