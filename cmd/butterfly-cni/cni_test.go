package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
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
	a := &skel.CmdArgs{ContainerID: "c1", IfName: "eth0"}
	b := &skel.CmdArgs{ContainerID: "c1", IfName: "eth1"}
	if nicID(a) != "cni-c1-eth0" || nicID(a) == nicID(b) {
		t.Errorf("ids %q %q", nicID(a), nicID(b))
	}
	m := nicMAC(nicID(a))
	if m[0]&1 != 0 || m[0]&2 == 0 {
		t.Errorf("MAC %v is not a locally administered unicast address", m)
	}
	if m.String() != nicMAC(nicID(a)).String() || m.String() == nicMAC(nicID(b)).String() {
		t.Error("MACs are not stable per attachment or collide")
	}
}
