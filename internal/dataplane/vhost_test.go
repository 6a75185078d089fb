package dataplane

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
)

// TestVhostUserSocketLifecycle checks that a vhost-user vNIC listens on
// <SocketDir>/qemu-vhost-<id>, reports that path, and that DeleteNIC
// removes the socket; ids that cannot name a file are refused.
func TestVhostUserSocketLifecycle(t *testing.T) {
	dir := t.TempDir()
	e, err := newEngine(Config{VTEP: vtep4, UnderlayMTU: 1500, SocketDir: dir, PoolSize: 64, Logger: quietLogger()}, hooks{
		manual:       true,
		openUnderlay: func(*Config) (underlay, error) { return &fakePort{}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	n := nicOf("vm-1", mac(1), 1)
	n.Type = model.NICVhostUser
	path, err := e.AddNIC(n)
	if err != nil {
		t.Fatalf("AddNIC: %v", err)
	}
	want := filepath.Join(dir, "qemu-vhost-vm-1")
	if path != want {
		t.Errorf("path = %q, want %q", path, want)
	}
	if fi, err := os.Stat(want); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %s: %v, %v", want, fi, err)
	}
	if err := e.DeleteNIC("vm-1"); err != nil {
		t.Fatalf("DeleteNIC: %v", err)
	}
	if _, err := os.Stat(want); !os.IsNotExist(err) {
		t.Errorf("socket still there after DeleteNIC: %v", err)
	}
	for _, id := range []string{"a/b", "..", "x\x00y"} {
		bad := nicOf(id, mac(2), 1)
		bad.Type = model.NICVhostUser
		if _, err := e.AddNIC(bad); err == nil {
			t.Errorf("AddNIC(%q) succeeded", id)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left in socket dir: %v", ents)
	}
}

// TestTSOToVhostGuest checks that a TSO frame towards a vhost-user vNIC
// is segmented when the guest lacks GUEST_TSO and passed whole when it
// has it.
func TestTSOToVhostGuest(t *testing.T) {
	for _, tc := range []struct {
		name     string
		guestTSO bool
		want     int
	}{
		{"guest without TSO", false, 3},
		{"guest with TSO", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{SocketDir: t.TempDir()}, true)
			a := h.add(t, bypassed(nicOf("a", mac(1), 5)))
			vn := bypassed(nicOf("v", mac(9), 5))
			vn.Type = model.NICVhostUser
			path, err := h.e.AddNIC(vn)
			if err != nil {
				t.Fatal(err)
			}
			h.mu.Lock()
			fv := h.vhosts[path]
			h.mu.Unlock()
			fv.tso.Store(tc.guestTSO)
			v := &fv.fakePort
			a.inject(tsoFrame(t, mac(9), mac(1), 4000, 1448))
			h.step()
			got := v.take()
			if len(got) != tc.want {
				t.Fatalf("vhost vNIC got %d frames, want %d", len(got), tc.want)
			}
			total := 0
			for i, f := range got {
				if tc.guestTSO {
					if f.vnet.GSOType != packet.GSOTCPv4 {
						t.Errorf("frame %d: GSO type %d, want TCPv4", i, f.vnet.GSOType)
					}
					continue
				}
				if f.vnet != (packet.VNetHdr{}) {
					t.Errorf("segment %d keeps offload metadata %+v", i, f.vnet)
				}
				if len(f.data) > 14+1500 {
					t.Errorf("segment %d is %d bytes", i, len(f.data))
				}
				seg := f.data[34:]
				ps := packet.PseudoHeaderChecksum(packet.ProtoTCP, f.data[26:30], f.data[30:34], uint32(len(seg)))
				if packet.Checksum(seg, ps) != 0xffff {
					t.Errorf("segment %d: bad TCP checksum", i)
				}
				total += len(seg) - 20
			}
			if !tc.guestTSO && total != 4000 {
				t.Errorf("segments carry %d bytes, want 4000", total)
			}
		})
	}
}
