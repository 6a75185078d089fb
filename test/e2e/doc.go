// Package e2e holds Butterfly's end-to-end tests. They need root: each test
// builds "hosts" (network namespaces running one butterflyd each, joined by
// a veth underlay with MTU 1500) and "VMs" (namespaces holding the TAP vNICs
// the daemons create, moved there and renamed eth0), then checks what the
// VMs can and cannot reach. Without root every test is skipped; as root
// (CI) none is.
//
// Run them with
//
//	go test -count=1 ./test/e2e/
//
// The hosts, VMs, daemons and links come from the lab harness,
// internal/labtest, which the benchmark program (scripts/bench) uses too.
// TestMain builds butterflyd and butterfly once. Every test works in
// namespaces named bfe<pid>x<n>-*, gives each daemon its own ipc:// API
// endpoint, state file and socket directory under a temporary directory,
// polls with deadlines instead of sleeping, and at cleanup stops the
// daemons it started (by PID) and deletes its namespaces and files.
// Tests run in parallel (t.Parallel; 4 at a time unless -parallel says
// otherwise) except those that measure throughput or keep CPUs busy
// (iperf3, the concurrent firewall scenarios, QEMU guests, testpmd).
//
// Coverage: the original README's example (six VMs in VNIs 42, 51 and
// 1337 over two hosts; IPv4 and IPv6 underlays, multicast and head-end
// flooding); iperf3 TCP and UDP; MAC, IP and ARP spoofing; vNIC delete and
// re-add, also on the other host; nic update of addresses (the original's
// tests 06 to 09); 50 vNICs in 10 VNIs; packet trace files read back with
// pcapgo; daemon restart (SIGTERM and SIGKILL) restoring state; the ICMP
// error for an oversized frame; the encrypted API (test 46); dump and
// replay (test 60); a vhost-user vNIC driven by a DPDK testpmd front end
// delivering to a TAP VM; client-mode vhost-user vNICs (testpmd and QEMU
// guests owning the sockets) that survive butterflyd SIGTERM and SIGKILL
// restarts without touching the VMs; TAP vNICs the daemon creates in a
// pod's namespace (nic add --netns), re-attached after SIGTERM and SIGKILL
// with a TCP stream resuming; the CNI plugin driven by cnitool with
// host-local IPAM (pods on two hosts, ping and iperf3, VNI isolation,
// repeated ADD, CHECK, DEL).
package e2e
