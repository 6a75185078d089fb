package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/labtest"
)

// TestDebianPackage builds the package with scripts/package.sh, installs
// it with dpkg -i, checks that its files are where the systemd unit and
// the INI file expect them and that the installed programs run, then
// removes it: dpkg -r removes everything but the configuration file
// (Debian conffiles stay until a purge), dpkg -P that too.
func TestDebianPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (dpkg -i)")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Fatal("no dpkg: the package test runs on Debian")
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", "butterfly").Output(); err == nil &&
		strings.Contains(string(out), "installed") && !strings.Contains(string(out), "not-installed") {
		if os.Getenv("CI") != "" {
			t.Fatal("a butterfly package is installed on the CI machine: the package test cannot run")
		}
		t.Skip("a butterfly package is installed on this machine: not replacing it")
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	cmd := exec.Command(filepath.Join(root, "scripts", "package.sh"), t.TempDir())
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PATH=/usr/local/go/bin:"+os.Getenv("PATH"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("package.sh: %v\n%s", err, out)
	}
	deb := labtest.LastLine(string(out))
	if !strings.HasSuffix(deb, ".deb") {
		t.Fatalf("package.sh's last line %q is not the path of a .deb", deb)
	}
	if _, err := os.Stat(deb); err != nil {
		t.Fatalf("package.sh printed %s: %v", deb, err)
	}
	dpkg := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("dpkg", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	dpkg("-i", deb)
	t.Cleanup(func() { exec.Command("dpkg", "-P", "butterfly").Run() })

	// The unit's ExecStart: the daemon and its configuration file.
	unit := "/lib/systemd/system/butterfly.service"
	keys := unitKeys(t, unit)
	start := strings.Fields(keys["ExecStart"])
	if len(start) != 3 || start[1] != "-c" {
		t.Fatalf("%s: ExecStart=%q, want DAEMON -c INI", unit, keys["ExecStart"])
	}
	daemon, ini := start[0], start[2]
	if fi, err := os.Stat(daemon); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("the unit runs %s: %v (mode %v)", daemon, err, fi)
	}
	// The INI's directories are those the unit creates.
	conf := iniKeys(t, ini)
	if want := "/run/" + keys["RuntimeDirectory"]; conf["socket-dir"] != want {
		t.Errorf("%s: socket-dir=%s, the unit creates %s", ini, conf["socket-dir"], want)
	}
	if want := "/var/lib/" + keys["StateDirectory"]; filepath.Dir(conf["state-file"]) != want {
		t.Errorf("%s: state-file=%s, the unit creates %s", ini, conf["state-file"], want)
	}
	files := []string{"/usr/bin/butterfly", "/usr/share/bash-completion/completions/butterfly",
		"/usr/share/zsh/vendor-completions/_butterfly", "/usr/share/fish/vendor_completions.d/butterfly.fish",
		"/usr/share/man/man8/butterflyd.8.gz", "/usr/share/man/man1/butterfly.1.gz", unit, daemon}
	_, err = os.Stat(filepath.Join(root, "cmd", "butterfly-cni"))
	if cni := "/opt/cni/bin/butterfly-cni"; err == nil {
		files = append(files, cni)
	} else if _, err := os.Stat(cni); err == nil {
		t.Errorf("%s installed without cmd/butterfly-cni", cni)
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("after dpkg -i: %v", err)
		}
	}
	// The installed programs run.
	for _, c := range [][]string{{daemon, "-V"}, {"/usr/bin/butterfly", "-V"}, {"/usr/bin/butterfly", "completion", "bash"}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Errorf("installed %s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}

	dpkg("-r", "butterfly")
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s is still there after dpkg -r", f)
		}
	}
	if _, err := os.Stat(ini); err != nil {
		t.Errorf("dpkg -r removed the configuration file %s (a conffile: kept until purged)", ini)
	}
	dpkg("-P", "butterfly")
	if _, err := os.Stat(ini); err == nil {
		t.Errorf("%s is still there after dpkg -P", ini)
	}
}

// unitKeys returns the Key=Value lines of a systemd unit file.
func unitKeys(t *testing.T, path string) map[string]string {
	return keyValues(t, path, "#;")
}

// iniKeys returns the key=value lines of an INI file (sections ignored).
func iniKeys(t *testing.T, path string) map[string]string {
	return keyValues(t, path, ";#")
}

func keyValues(t *testing.T, path, comments string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.ContainsRune(comments, rune(l[0])) || l[0] == '[' {
			continue
		}
		if k, v, ok := strings.Cut(l, "="); ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m
}
