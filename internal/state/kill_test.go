package state

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/butterfly-go/butterfly/internal/model"
)

// killChildEnv names the state path in the child process of TestKill9,
// killChangeEnv (set to "1") makes it save changes (SaveChange) instead
// of whole states.
const (
	killChildEnv  = "STATE_KILL9_CHILD_PATH"
	killChangeEnv = "STATE_KILL9_CHILD_CHANGES"
)

// killSaves is the length of TestKill9's sequence of states.
const killSaves = 5000

// killState returns the i-th state of TestKill9's sequence: 20 vNICs and
// 3 groups holding rules 0..i.
func killState(i int) model.State {
	st := big(20, 3, 0)
	for j := 0; j <= i; j++ {
		st.SGs[j%3].Rules = append(st.SGs[j%3].Rules, newRule(uint32(j)))
	}
	return st
}

// TestKill9 runs a process that saves a new state in a loop (compacting
// every few saves) and reports each acknowledged save, kills it with
// SIGKILL at a random moment, and checks that the files read back as the
// last acknowledged state or the one after it (being written when killed).
// Odd runs save each state as a change (SaveChange), even runs whole.
func TestKill9(t *testing.T) {
	if path := os.Getenv(killChildEnv); path != "" {
		killChild(path, os.Getenv(killChangeEnv) == "1")
		return
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for run := range 4 {
		path := filepath.Join(t.TempDir(), "state.json")
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$")
		cmd.Env = append(os.Environ(), killChildEnv+"="+path, fmt.Sprintf("%s=%d", killChangeEnv, run%2))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		acked := -1
		// Wait for some saves, then kill after a random delay.
		for acked < 20 && lines.Scan() {
			acked, _ = strconv.Atoi(lines.Text())
		}
		delay := time.Duration(rng.IntN(300)) * time.Millisecond
		timer := time.AfterFunc(delay, func() { cmd.Process.Kill() })
		for lines.Scan() {
			if n, err := strconv.Atoi(lines.Text()); err == nil {
				acked = n
			}
		}
		timer.Stop()
		cmd.Process.Kill()
		werr := cmd.Wait()
		if acked >= killSaves-1 {
			t.Fatalf("run %d: child finished all %d saves before the kill (%v)", run, acked+1, werr)
		}
		s, got, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("run %d: Open after kill -9: %v", run, err)
		}
		info := s.Info()
		s.Close()
		switch {
		case reflect.DeepEqual(got, killState(acked)):
		case reflect.DeepEqual(got, killState(acked+1)):
		default:
			t.Fatalf("run %d: after kill -9 with save %d acknowledged the files hold another state", run, acked)
		}
		t.Logf("run %d: killed after %v, %d saves acknowledged; snapshot at %d + %d records, %d torn bytes",
			run, delay, acked+1, info.SnapshotSeq, info.Replayed, info.TornBytes)
	}
}

// killChild is TestKill9's child: save states[i] for i = 0, 1, ... (the
// change of its group if changes is set, else whole) and print i once it
// is acknowledged.
func killChild(path string, changes bool) {
	s, _, err := Open(path, Options{CompactMin: 8 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	st := killState(-1)
	for i := range killSaves {
		st = withRule(st, i%3, uint32(i))
		save := func() error { return s.Save(st) }
		if changes && i > 0 {
			save = func() error { return s.SaveChange(model.Change{SGs: []model.SG{st.SGs[i%3]}}) }
		}
		if err := save(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stdout, i)
	}
	os.Exit(0)
}
