package apiv0_test

import "testing"

// TestNICNetns: nic_add takes netns and ifname (extensions 102 and 103),
// fills in the default interface name, reports both in nic_details, and
// refuses them where they mean nothing.
func TestNICNetns(t *testing.T) {
	e := newEnv(t)
	e.ok(t, `nic_add { id: "pod-1" mac: "42:42:42:42:42:42" vni: 1 type: TAP netns: "/var/run/netns/pod-1" }`,
		`nic_add { path: "pod-1" }`)
	e.ok(t, `nic_details: "pod-1"`, `nic_details { id: "pod-1" mac: "42:42:42:42:42:42" vni: 1 ip_anti_spoof: false
		bypass_filtering: false type: TAP path: "pod-1" packet_trace: true
		packet_trace_path: "/tmp/butterfly-5593-pod-1.pcap" netns: "/var/run/netns/pod-1" ifname: "pod-1" }`)
	e.ok(t, `nic_add { id: "pod-2" mac: "42:42:42:42:42:43" vni: 1 type: TAP netns: "/proc/7/ns/net" ifname: "eth0" }`,
		`nic_add { path: "pod-2" }`)
	e.ok(t, `nic_details: "pod-2"`, `nic_details { id: "pod-2" mac: "42:42:42:42:42:43" vni: 1 ip_anti_spoof: false
		bypass_filtering: false type: TAP path: "pod-2" packet_trace: true
		packet_trace_path: "/tmp/butterfly-5593-pod-2.pcap" netns: "/proc/7/ns/net" ifname: "eth0" }`)
	e.fail(t, `nic_add { id: "vm" mac: "42:42:42:42:42:44" vni: 1 netns: "/var/run/netns/x" }`,
		"Bad NIC format: netns is only for TAP nics")
	e.fail(t, `nic_add { id: "pod-3" mac: "42:42:42:42:42:44" vni: 1 type: TAP ifname: "eth0" }`,
		`Bad NIC format: ifname "eth0" needs netns`)
	e.fail(t, `nic_add { id: "pod-3" mac: "42:42:42:42:42:44" vni: 1 type: TAP netns: "x" }`,
		`Bad NIC format: netns "x" is not a clean absolute path`)
}
