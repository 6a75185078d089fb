// Package dataplane is Butterfly's packet engine and the real implementation
// of model.Dataplane.
//
// # Workers and the graph
//
// Worker goroutines, each locked to an OS thread (and optionally pinned to a
// CPU), read their ports in batches of 64 frames and push every batch
// through a graph of small elements:
//
//	from a VM:        port-rx -> trace -> antispoof -> firewall -> switch -> firewall -> trace -> port-tx (local vNIC)
//	                                                                     \-> vxlan-encap -> underlay-tx
//	from the network: underlay-rx -> vxlan-decap -> switch -> firewall -> trace -> port-tx
//
// Frames from a VM that the switch forwards to one vNIC or to the
// underlay go through a per-worker exact-match flow cache first
// (flowcache.go; Config.NoFlowCache turns it off): one parse and one
// lookup give the output port, the anti-spoofing pass, the MAC table
// entries and both connection-tracking entries, which are still updated
// per frame (TCP tracking, timers, learning refresh, the FDB lookup of a
// remote destination, counters, traces and drop records as on the full
// path). Entries are used only under the snapshot, port set, MAC table
// version and connection-table epochs they were made with; anything else
// takes the full path.
//
// A vNIC's trace thus holds what the VM sent (before anti-spoofing and its
// firewall) and what it is given (after its firewall). A frame the port
// then fails to take (its queue full) is still in the trace; port-tx
// counts it as dropped.
//
// Every element keeps per-worker counters of packets and of drops by reason
// (plain uint64 fields, one cache line set per worker, updated with atomic
// adds by their only writer and read with atomic loads by Counters and the
// Prometheus collector). Nothing on a forwarding path allocates, locks or
// logs; the only system calls are the ports' batched reads and writes.
//
// Each vNIC port is owned by one worker (round robin); the underlay belongs
// to worker 0. A frame whose output port belongs to another worker is
// handed over through a single-producer single-consumer ring, and the
// buffer goes back to its pool (Config.PoolSize buffers per worker)
// through a return ring. The queue pairs of a multiqueue vhost-user vNIC
// are read by up to min(workers, 8) workers (queues.go): the others hand
// what they read to the owner through the same rings (or switch it
// themselves when the vNIC has neither firewall nor trace), and the owner
// alone writes to the vNIC, spreading frames over its queues by flow hash.
//
// # Configuration
//
// The configuration the workers read (ports, VNIs, anti-spoofing and trace
// settings) is an immutable snapshot replaced as a whole through an
// atomic.Pointer; a new snapshot shares every part that did not change
// with the previous one, so publishing costs what the change costs. A
// busy worker adopts the new snapshot at its next batch; a worker asleep
// in epoll holds no configuration (quiescent, as in RCU's QSBR) and
// loads the newest snapshot when it wakes, so it is neither woken nor
// waited for, unless its own set of ports changed (it is then woken to
// update its epoll set). The control plane returns once every worker has
// adopted the change or sleeps (so a change is in effect for every
// packet once the API replies), and closes a port or a trace file only
// once no worker can use a snapshot that referenced it; a worker that
// does not get there within Config.StallTimeout is logged as stuck and
// what it may still read is released only when it moves on.
//
// # Firewall
//
// Each vNIC (unless it bypasses filtering) has a compiled policy (package
// firewall) in its snapshot entry and a connection-tracking table owned by
// the worker that owns its port: frames from the VM are filtered (FromVM)
// after anti-spoofing, frames to it (ToVM) just before they are queued on
// its port, whether they come from the underlay or from another local
// vNIC. The rules of a list of groups are compiled once and shared by
// the policies of the vNICs with that list. SetSecurityGroups recompiles
// the lists with a group that appeared, disappeared or changed rules,
// gives their vNICs new policies on the result, and updates the shared
// member sets in place on member changes (no recompilation). Every 10 ms a
// worker runs a bounded Check of its vNICs' tables, which removes expired
// entries and flows that a new policy no longer allows (a packet of such
// a flow is cut anyway at its next packet) and shrinks a table that is
// mostly empty; tables start at a few KB and grow with their flows up to
// Config.ConntrackMax. Drops are counted per vNIC as
// firewall_<reason> (no_rule, invalid, table_full, cut, fragment). A
// vNIC created without saved connections (model.NIC.Import) within
// Config.ConntrackPickup of the start, and before EndPickup, picks up the
// TCP connections in progress its policy allows until that window ends
// (firewall.Conntrack.SetPickup), so that they survive an unclean restart.
//
// # Polling
//
// A worker polls the ports that were readable recently; a port idle for
// Config.PollIdle (default 100 µs) leaves this active set, and a worker with no active port sleeps in
// epoll_wait on all its ports' descriptors. An idle engine uses no CPU; a
// port whose reads fail (a TAP deleted behind the engine's back) is no
// longer polled until the next configuration change.
//
// # VXLAN
//
// The underlay is a UDP socket bound to VTEP:4789, which receives
// everything (the kernel adds and strips the outer UDP/IP headers), plus
// three send sockets bound to ephemeral ports: each flow (packet.FlowHash
// of the inner frame) leaves from one of the four, which gives the
// underlay's ECMP some entropy from the UDP source port. Each VNI has a
// learning switch (package l2) whose ports are the VNI's vNICs and the
// underlay, and an FDB (package vxlan) of the remote VTEP behind each
// remote MAC, learned from every received datagram. Broadcast, multicast
// and unknown unicast go to the VNI's multicast group (joined with its
// first vNIC, left with its last) or, with Config.HeadEnd, to each
// head-end VTEP. In cluster mode (Config.Cluster, SetRemotes) each VNI has
// its own list, the VTEPs of the other nodes with a vNIC in it; unicast
// to another node's vNIC MAC goes to that node alone even before the FDB
// learnt it, and ARP requests and neighbour solicitations for an address
// the cluster knows are answered by the switch (suppression). With
// head-end replication or in cluster mode, datagrams from any address but
// a peer's (a node's) are dropped and counted (vxlan_unknown_source). TSO frames are segmented and partial checksums completed
// before encapsulation; between two local vNICs they pass untouched with
// their offload metadata. A frame that would not fit the underlay MTU is
// dropped and answered with ICMP "fragmentation needed" (IPv4 with DF) or
// "packet too big" (IPv6); IPv4 without DF is dropped (RFC 7348 forbids
// fragmenting VXLAN packets) and counted.
//
// Towards TAP vNICs with offloads, consecutive TCP segments of a flow
// (typically decapsulated from the underlay, where the sender had to
// segment them) are merged back into TSO frames (software GRO, see
// coalesce), so that the TAP write and the VM's stack handle one large
// frame instead of dozens.
//
// # vNIC ports
//
// A TAP vNIC is a TAP device named after its id. A vhost-user vNIC
// (VHOST_USER_SERVER) is a vhost-user server socket
// <SocketDir>/qemu-vhost-<id> (package vhostuser) that a QEMU guest or a
// DPDK virtio-user front end connects to or, in client mode
// (model.NIC.VhostClient), the same path created by the front end, which
// the port dials and redials until the vNIC is deleted; the rest of the
// graph treats all alike. Its guest may not take TSO frames (it did not negotiate
// GUEST_TSO4/6): TSO frames towards it are then segmented by the worker
// and not merged by GRO, and the segments fit the guest MTU the front end
// announced. With VIRTIO_NET_F_MTU negotiated the port itself drops
// non-TSO frames longer than that MTU, both ways. The frames a vhost-user
// port drops itself (malformed or too big from the guest, too big or not
// expressible towards it, see vhostuser.Drops) appear in the vNIC's
// counters as vhost_rx_* and vhost_tx_* drops, next to the engine's own
// (tx_full when the guest's receive ring is full). A TAP port's refused
// frames (the kernel rejected them) are tap_tx_refused, the underlay's
// refused datagrams udp_tx_refused drops of underlay-tx. The TX counters
// count exactly the frames a port's WriteBatch says it sent, so they
// never decrease.
package dataplane
