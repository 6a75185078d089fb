package model_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/butterfly-go/butterfly/internal/model"
)

func TestAddNICNetnsValidation(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*model.NIC)
		detail string
	}{
		{"vhost-user in a netns", func(n *model.NIC) { n.Type, n.Netns = model.NICVhostUser, "/run/netns/a" }, "netns is only for TAP nics, not VHOST_USER_SERVER"},
		{"relative path", func(n *model.NIC) { n.Netns = "run/netns/a" }, `netns "run/netns/a" is not a clean absolute path`},
		{"unclean path", func(n *model.NIC) { n.Netns = "/run/netns/../a" }, "is not a clean absolute path"},
		{"control character", func(n *model.NIC) { n.Netns = "/run/netns/a\n" }, "is not a clean absolute path"},
		{"ifname without netns", func(n *model.NIC) { n.Netns, n.IfName = "", "eth0" }, `ifname "eth0" needs netns`},
		{"ifname too long", func(n *model.NIC) { n.IfName = strings.Repeat("e", 16) }, "longer than 15 bytes"},
		{"ifname dot", func(n *model.NIC) { n.IfName = "." }, "is not allowed"},
		{"ifname slash", func(n *model.NIC) { n.IfName = "a/b" }, "contains '/'"},
		{"ifname colon", func(n *model.NIC) { n.IfName = "eth0:1" }, "contains '/'"},
		{"ifname space", func(n *model.NIC) { n.IfName = "a b" }, "contains '/'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, dp := newStore(t)
			n := baseNIC()
			n.Type, n.Netns = model.NICTap, "/run/netns/pod"
			tc.mod(&n)
			unchanged(t, s, dp, func() {
				_, err := s.AddNIC(n)
				wantErr(t, err, model.CodeInvalid, "Bad NIC format")
				if err == nil || !strings.Contains(err.Error(), tc.detail) {
					t.Errorf("error %v does not mention %q", err, tc.detail)
				}
			})
		})
	}
}

func TestAddNICNetnsIfName(t *testing.T) {
	tests := []struct {
		id, ifname, want string
	}{
		{"nic-1", "", "nic-1"},
		{"nic-1", "eth0", "eth0"},
		{"pod:a b%c", "", "pod-a-b-c"},
		{"a-very-long-container-id", "", "a-very-long-con"},
		{"été", "", "--t--"},
	}
	for _, tc := range tests {
		t.Run(tc.id+"/"+tc.ifname, func(t *testing.T) {
			s, dp := newStore(t)
			n := baseNIC()
			n.ID, n.Type, n.Netns, n.IfName = tc.id, model.NICTap, "/proc/1/ns/net", tc.ifname
			if _, err := s.AddNIC(n); err != nil {
				t.Fatal(err)
			}
			d, _ := dp.NIC(n.ID)
			if d.IfName != tc.want || d.Netns != "/proc/1/ns/net" {
				t.Errorf("dataplane got netns %q ifname %q, want /proc/1/ns/net %q", d.Netns, d.IfName, tc.want)
			}
			// Persisted: the state carries both, and restoring it gives
			// the dataplane the same name.
			b, err := json.Marshal(s.State())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), `"netns":"/proc/1/ns/net"`) || !strings.Contains(string(b), `"ifname":`) {
				t.Errorf("state %s lacks netns or ifname", b)
			}
			var st model.State
			if err := json.Unmarshal(b, &st); err != nil {
				t.Fatal(err)
			}
			s2, dp2 := newStore(t)
			if err := s2.Restore(st); err != nil {
				t.Fatal(err)
			}
			if d2, _ := dp2.NIC(n.ID); d2.IfName != tc.want || d2.Netns != d.Netns {
				t.Errorf("restored netns %q ifname %q, want %q %q", d2.Netns, d2.IfName, d.Netns, tc.want)
			}
			// An update keeps them.
			yes := true
			if err := s.UpdateNIC(model.NICUpdate{ID: n.ID, IPAntiSpoof: &yes}); err != nil {
				t.Fatal(err)
			}
			if d3, _ := s.NICDetails(n.ID); d3[0].IfName != tc.want || d3[0].Netns != d.Netns {
				t.Errorf("after update: netns %q ifname %q", d3[0].Netns, d3[0].IfName)
			}
		})
	}
}
