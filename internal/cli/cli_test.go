package cli

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/version"
)

// configure builds a configuration with every kind of vNIC and rule.
func configure(t *testing.T, ts *testServer) {
	t.Helper()
	for _, line := range []string{
		"nic add --ip 10.0.0.1 --mac 01:02:03:04:05:06 --vni 1 --id nic01",
		"nic add --ip 10.0.0.1 --mac 01:02:03:04:05:06 --vni 2 --id nic02 --enable-antispoof",
		"nic add --ip 10.0.0.1 --mac 01:02:03:04:05:06 --vni 3 --id nic03 --bypass-filtering",
		"nic add --ip 10.0.0.2 --ip 2001:db8::2 --mac 01:02:03:04:05:07 --vni 1 --id nic04 --sg sg-a --sg sg-b --packet-trace true --trace-path /var/tmp/nic04.pcap",
		"nic add --mac 01:02:03:04:05:08 --vni 4 --id tap05 --type TAP --packet-trace false",
		"sg add sg-a sg-b sg-c",
		"nic sg add nic01 sg-a",
		"sg member add sg-a 10.0.0.1 + sg member add sg-a 2001:0db8::0001",
		"sg rule add sg-a --ip-proto tcp --port-start 22 --port-end 80 --cidr 42.0.0.1/32",
		"sg rule add sg-b --ip-proto all --cidr 0.0.0.0/0",
		"sg rule add sg-c --ip-proto udp --port 8000 --cidr ::/0 + sg rule add sg-c --dir out --ip-proto icmp --sg-members sg-a",
		`sg rule add sg-d --ip-proto 58 --sg-members "sg \"quoted\""`,
	} {
		ts.mustRun(t, splitLine(t, line)...)
	}
}

// TestDumpRoundTrip checks that dump -> fresh daemon -> request -> dump
// gives the same text, and that the dump keeps the vNIC types.
func TestDumpRoundTrip(t *testing.T) {
	a := startServer(t, serverOpts{})
	configure(t, a)
	dump1 := a.mustRun(t, "dump")
	compareGolden(t, filepath.Join("testdata", "dump.golden"), dump1)
	if !strings.Contains(dump1, "type: TAP") {
		t.Errorf("dump lost the TAP type:\n%s", dump1)
	}

	file := filepath.Join(t.TempDir(), "dump.req")
	if err := os.WriteFile(file, []byte(dump1), 0o644); err != nil {
		t.Fatal(err)
	}
	b := startServer(t, serverOpts{})
	if out := b.mustRun(t, "request", file); out != "" {
		t.Errorf("request printed %q without --stdout", out)
	}
	dump2 := b.mustRun(t, "dump")
	if dump1 != dump2 {
		t.Errorf("second dump differs:\n%s", lineDiff(dump1, dump2))
	}
	// The replayed daemon holds the same objects, not only the same text.
	for _, args := range [][]string{{"nic", "list"}, {"sg", "list"}, {"sg", "rule", "list", "sg-c"}, {"nic", "details", "nic04"}} {
		if x, y := a.mustRun(t, args...), b.mustRun(t, args...); x != y {
			t.Errorf("%v differs after replay:\n%s\nvs\n%s", args, x, y)
		}
	}
}

func TestRequestStdout(t *testing.T) {
	ts := startServer(t, serverOpts{})
	file := filepath.Join(t.TempDir(), "req.txt")
	req := `# A request written by hand, in the style of the original's examples.
messages {
  revision: 0
  message_0 {
    message_id: "first"
    request {
      nic_add {
        id: "nic-1"
        mac: "52:54:00:12:34:01"
        vni: 42
        ip: "42.0.0.1"
        security_group: "sg-1"
        ip_anti_spoof: true
      }
    }
  }
}
messages { revision: 0 message_0 { request { nic_update: { id: "nic-1" ip: "" } } } }
messages { revision: 0 message_0 { request { nic_details: "" } } }
messages { revision: 0 message_0 { request { sg_rule_list: "none" } } }
`
	if err := os.WriteFile(file, []byte(req), 0o644); err != nil {
		t.Fatal(err)
	}
	r := ts.run("request", file, "--stdout")
	if r.code != 1 {
		t.Errorf("exit %d, want 1 (the last message fails)", r.code)
	}
	if want := "error in response\ndescription: Security Group not found: none\nerror in command: request\n"; r.stderr != want {
		t.Errorf("stderr = %q, want %q", r.stderr, want)
	}
	compareGolden(t, filepath.Join("testdata", "request.golden"), r.stdout)

	bad := filepath.Join(t.TempDir(), "bad.txt")
	if err := os.WriteFile(bad, []byte("messages { revision: 0 message_0 { request { nic_list: maybe } } }"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = ts.run("request", bad)
	if r.code != 1 || !strings.Contains(r.stderr, "is not a proto.Messages in text format") {
		t.Errorf("bad file: exit %d, stderr %q", r.code, r.stderr)
	}
	// A message missing a required field is refused before sending.
	if err := os.WriteFile(bad, []byte("messages { message_0 { request { nic_list: true } } }"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r = ts.run("request", bad); r.code != 1 || !strings.Contains(r.stderr, "revision") {
		t.Errorf("missing revision: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{
		{"-V"},
		{"--version"},
		// -V anywhere on the line wins: nothing of the chain runs.
		{"nic", "update", "--id", "nic01", "+", "--version", "+", "-V"},
	} {
		var out, errb bytes.Buffer
		if code := runCLI(args, &out, &errb); code != 0 {
			t.Errorf("%v: exit %d, stderr %q", args, code, errb.String())
		}
		if got, want := out.String(), version.String()+"\n"; got != want {
			t.Errorf("%v: stdout %q, want %q", args, got, want)
		}
		if !strings.HasPrefix(out.String(), `butterfly version: "`) || !strings.Contains(out.String(), `proto revision: "6"`) {
			t.Errorf("version line %q is not in the original's format", out.String())
		}
	}
}

func TestNoCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runCLI(nil, &out, &errb); code != 1 {
		t.Errorf("no arguments: exit %d, want 1", code)
	}
	if !strings.Contains(errb.String(), "missing command") {
		t.Errorf("stderr %q", errb.String())
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		var out, errb bytes.Buffer
		if code := runCLI([]string{"completion", shell}, &out, &errb); code != 0 {
			t.Errorf("completion %s: exit %d, stderr %q", shell, code, errb.String())
		}
		if !strings.Contains(out.String(), "butterfly") || out.Len() < 500 {
			t.Errorf("completion %s: unexpected script (%d bytes)", shell, out.Len())
		}
	}
}

func TestHelpRunsNothing(t *testing.T) {
	ts := startServer(t, serverOpts{})
	r := ts.run("sg", "add", "sg-1", "+", "nic", "list", "-h")
	if r.code != 0 || !strings.Contains(r.stdout, "butterfly nic list") {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if got := ts.mustRun(t, "sg", "list"); got != "" {
		t.Errorf("sg add ran although help was asked: sg list = %q", got)
	}
}

func TestChainStopsAtFirstFailure(t *testing.T) {
	ts := startServer(t, serverOpts{})
	r := ts.run("sg", "add", "sg-1", "+", "nic", "details", "nope", "+", "sg", "add", "sg-2")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1", r.code)
	}
	if want := "error in response\ndescription: NIC: nope not found\nerror in command: nic\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
	if got := ts.mustRun(t, "sg", "list"); got != "sg-1\n" {
		t.Errorf("sg list = %q, want only sg-1 (the chain must stop, earlier commands stay applied)", got)
	}
	// Global options given in the last command apply to the whole chain.
	var out, errb bytes.Buffer
	code := runCLI([]string{"sg", "add", "sg-3", "+", "sg", "list", "-e", ts.endpoint}, &out, &errb)
	if code != 0 || out.String() != "sg-1\nsg-3\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}

func TestShutdown(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.mustRun(t, "shutdown")
	select {
	case err := <-ts.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		ts.done <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("daemon still serving after shutdown")
	}
}

func TestUnreachable(t *testing.T) {
	ep := "ipc://" + filepath.Join(t.TempDir(), "nobody.sock")
	var out, errb bytes.Buffer
	start := time.Now()
	code := runCLI([]string{"nic", "list", "-e", ep, "-t", "200"}, &out, &errb)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v despite -t 200", time.Since(start))
	}
	if !strings.Contains(errb.String(), "error in command: nic") {
		t.Errorf("stderr %q", errb.String())
	}
	if code := runCLI([]string{"nic", "list", "-t", "-5"}, &out, &errb); code != 1 {
		t.Errorf("negative timeout: exit %d, want 1", code)
	}
}

func TestEncryption(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, 32)
	ts := startServer(t, serverOpts{key: key})
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := ts.mustRun(t, "sg", "add", "sg-1", "+", "sg", "list", "-k", keyFile); out != "sg-1\n" {
		t.Errorf("keyed sg list = %q", out)
	}

	r := ts.run("nic", "list", "-v", "-k", keyFile)
	if r.code != 0 || !strings.Contains(r.stdout, "Request is encrypted") || !strings.Contains(r.stdout, "Received encrypted response") {
		t.Errorf("verbose keyed: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// Clear requests are refused by a daemon that has a key.
	if r := ts.run("sg", "list"); r.code != 1 {
		t.Errorf("clear request to a keyed daemon: exit %d, want 1", r.code)
	}
	// A key that cannot be loaded: warning, then the request goes in clear
	// (and this daemon refuses it).
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not base64!"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = ts.run("sg", "list", "-k", bad)
	if r.code != 1 || !strings.Contains(r.stderr, "cannot load encryption key") {
		t.Errorf("bad key: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestDynamicCompletion(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.mustRun(t, "nic", "add", "--id", "vm-1", "--mac", "52:54:00:00:00:01", "--vni", "1",
		"+", "nic", "add", "--id", "vm-2", "--mac", "52:54:00:00:00:02", "--vni", "1",
		"+", "nic", "add", "--id", "other", "--mac", "52:54:00:00:00:03", "--vni", "1",
		"+", "sg", "add", "web", "db")
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"nic", "details", "vm"}, []string{"vm-1", "vm-2"}},
		{[]string{"nic", "sg", "add", "vm-1", ""}, []string{"db", "web"}},
		{[]string{"nic", "del", "vm-1", "o"}, []string{"other"}},
		{[]string{"sg", "rule", "list", "w"}, []string{"web"}},
		{[]string{"sg", "add", "web", "+", "sg", "rule", "add", "web", "--sg-members", "d"}, []string{"db"}},
		{[]string{"nic", "update", "--id", ""}, []string{"other", "vm-1", "vm-2"}},
		{[]string{"sg", "rule", "add", "web", "--dir", ""}, []string{"in", "out"}},
		{[]string{"sg", "member", "add", "web", ""}, nil},
	}
	for _, tt := range tests {
		args := append([]string{"__complete", "-e", ts.endpoint}, tt.args...)
		var out, errb bytes.Buffer
		if code := runCLI(args, &out, &errb); code != 0 {
			t.Errorf("%v: exit %d, stderr %q", tt.args, code, errb.String())
			continue
		}
		// The completions, then ":<directive>" on the last line.
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		got := lines[:len(lines)-1]
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("%v: completions %q, want %q", tt.args, got, tt.want)
		}
	}
}

// TestDumpEmpty checks that the dump of an empty daemon replays cleanly.
func TestDumpEmpty(t *testing.T) {
	ts := startServer(t, serverOpts{})
	dump := ts.mustRun(t, "dump")
	if dump != "\n" {
		t.Errorf("empty dump = %q, want a blank line", dump)
	}
	file := filepath.Join(t.TempDir(), "empty.req")
	if err := os.WriteFile(file, []byte(dump), 0o644); err != nil {
		t.Fatal(err)
	}
	r := ts.run("request", file)
	if r.code != 0 || !strings.Contains(r.stderr, "nothing sent") {
		t.Errorf("request of an empty dump: exit %d, stderr %q", r.code, r.stderr)
	}
	// The dump and this status request only.
	if got := ts.mustRun(t, "status"); !strings.Contains(got, "request counter: 2\n") {
		t.Errorf("a request was sent for an empty file:\n%s", got)
	}
}
