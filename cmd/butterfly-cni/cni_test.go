package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
)

func TestLoadConf(t *testing.T) {
	tests := []struct {
		name string
		conf string
		code uint // 0: valid
		want string
	}{
		{"valid", `{"cniVersion":"1.0.0","name":"n","type":"butterfly-cni","vni":42,"securityGroups":["a","b"],"antispoof":true,"ipam":{"type":"host-local"}}`, 0, ""},
		{"not JSON", `{`, types.ErrDecodingFailure, "cannot parse"},
		{"no vni", `{"name":"n","ipam":{"type":"host-local"}}`, types.ErrInvalidNetworkConfig, "vni is required"},
		{"vni too big", `{"name":"n","vni":16777216,"ipam":{"type":"host-local"}}`, types.ErrInvalidNetworkConfig, "does not fit 24 bits"},
		{"negative vni", `{"name":"n","vni":-1,"ipam":{"type":"host-local"}}`, types.ErrDecodingFailure, "cannot parse"},
		{"no ipam", `{"name":"n","vni":1}`, types.ErrInvalidNetworkConfig, "ipam.type is required"},
		{"mtu", `{"name":"n","vni":42,"mtu":1400,"securityGroups":["a","b"],"antispoof":true,"ipam":{"type":"host-local"}}`, 0, ""},
		{"smallest mtu", `{"name":"n","vni":42,"mtu":68,"securityGroups":["a","b"],"antispoof":true,"ipam":{"type":"host-local"}}`, 0, ""},
		{"largest mtu", `{"name":"n","vni":42,"mtu":65521,"securityGroups":["a","b"],"antispoof":true,"ipam":{"type":"host-local"}}`, 0, ""},
		{"mtu too small", `{"name":"n","vni":42,"mtu":67,"ipam":{"type":"host-local"}}`, types.ErrInvalidNetworkConfig, "mtu 67 out of range: want 68 to 65521"},
		{"mtu too big", `{"name":"n","vni":42,"mtu":65522,"ipam":{"type":"host-local"}}`, types.ErrInvalidNetworkConfig, "mtu 65522 out of range"},
		{"negative mtu", `{"name":"n","vni":42,"mtu":-1,"ipam":{"type":"host-local"}}`, types.ErrInvalidNetworkConfig, "mtu -1 out of range"},
		{"mtu not a number", `{"name":"n","vni":42,"mtu":"1400","ipam":{"type":"host-local"}}`, types.ErrDecodingFailure, "cannot parse"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadConf([]byte(tc.conf))
			if tc.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if *c.VNI != 42 || c.Endpoint != "tcp://127.0.0.1:9999" || c.DataDir != defaultDataDir ||
					strings.Join(c.SecurityGroups, ",") != "a,b" || !c.Antispoof {
					t.Errorf("parsed %+v", c)
				}
				return
			}
			var ce *types.Error
			if !errors.As(err, &ce) || ce.Code != tc.code || !strings.Contains(ce.Error(), tc.want) {
				t.Errorf("error %v, want CNI code %d mentioning %q", err, tc.code, tc.want)
			}
		})
	}
}

func TestNICIdentity(t *testing.T) {
	a, b := nicID("c1", "eth0"), nicID("c1", "eth1")
	if a != "cni-c1-eth0" || a == b {
		t.Errorf("ids %q %q", a, b)
	}
	m := nicMAC("net", a)
	if m[0]&1 != 0 || m[0]&2 == 0 {
		t.Errorf("MAC %v is not a locally administered unicast address", m)
	}
	if m.String() != nicMAC("net", a).String() || m.String() == nicMAC("net", b).String() || m.String() == nicMAC("other", a).String() {
		t.Error("MACs are not stable per attachment and network, or collide")
	}
}

// TestIsOurs: GC deletes only the vNICs this plugin created for the
// network being collected.
func TestIsOurs(t *testing.T) {
	vni := uint32(42)
	c := &netConf{NetConf: types.NetConf{Name: "net"}, VNI: &vni}
	id := nicID("c1", "eth0")
	ours := func() *protocol.MessageV0_Nic {
		return &protocol.MessageV0_Nic{Id: proto.String(id), Mac: proto.String(nicMAC("net", id).String()), Vni: proto.Uint32(42),
			Type: protocol.MessageV0_Nic_TAP.Enum(), Netns: proto.String("/var/run/netns/p")}
	}
	tests := []struct {
		name string
		mod  func(n *protocol.MessageV0_Nic)
		want bool
	}{
		{"created for this network", func(*protocol.MessageV0_Nic) {}, true},
		{"MAC in upper case", func(n *protocol.MessageV0_Nic) { n.Mac = proto.String(strings.ToUpper(n.GetMac())) }, true},
		{"another network's", func(n *protocol.MessageV0_Nic) { n.Mac = proto.String(nicMAC("other", id).String()) }, false},
		{"made by hand with the plugin's prefix", func(n *protocol.MessageV0_Nic) { n.Mac = proto.String("52:54:00:00:00:01") }, false},
		{"another VNI", func(n *protocol.MessageV0_Nic) { n.Vni = proto.Uint32(43) }, false},
		{"not in a namespace", func(n *protocol.MessageV0_Nic) { n.Netns = nil }, false},
		{"not a TAP", func(n *protocol.MessageV0_Nic) { n.Type = protocol.MessageV0_Nic_VHOST_USER_SERVER.Enum() }, false},
		{"without the prefix", func(n *protocol.MessageV0_Nic) {
			n.Id = proto.String("vm-1")
			n.Mac = proto.String(nicMAC("net", "vm-1").String())
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := ours()
			tc.mod(n)
			if got := isOurs(c, n); got != tc.want {
				t.Errorf("isOurs(%v) = %v, want %v", n, got, tc.want)
			}
		})
	}
}
