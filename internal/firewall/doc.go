// Package firewall is Butterfly's stateful per-vNIC security-group
// firewall: a policy compiler, a compiled classifier and a connection
// tracker. It is a pure package: no I/O, no goroutines, no global state.
//
// # Semantics
//
// A vNIC's policy is the union of the rules of its security groups;
// allow-only; default deny. An INBOUND rule matches a packet arriving at the
// vNIC (Direction ToVM) by its source address and destination port; an
// OUTBOUND rule matches a packet leaving the vNIC (FromVM) by its destination
// address and destination port. A rule matches a protocol (-1 for any),
// a port range for TCP, UDP and SCTP (other protocols ignore ports), and
// either a CIDR (a /0 matches every address of its family only) or the
// members of a security group (a missing or empty group matches nothing).
//
// A vNIC without any OUTBOUND rule keeps the original's default egress: the
// VM may send any packet whose source is one of the vNIC's IPs, plus DHCPv4
// DISCOVER/REQUEST (UDP 0.0.0.0:68 -> 255.255.255.255:67). This applies
// whatever ip_anti_spoof says, as in the original. Once a vNIC has an
// OUTBOUND rule the rules alone decide egress; checking the source address
// is then the anti-spoofing stage's job.
//
// Non-IP frames (ARP...) pass. IPv6 works out of the box: router
// solicitation, neighbour solicitation/advertisement (hop limit 255) and MLD
// reports/done sent by the VM from a link-local or unspecified source (or
// one of its IPs) pass, and router advertisement and neighbour
// solicitation/advertisement towards the VM (hop limit 255) pass. These are
// never tracked.
//
// # Classifier
//
// CompileRuleSet turns the rules of a list of groups into a RuleSet,
// shared by every vNIC with that list; NewPolicy adds a vNIC's own part
// (its addresses, for the default egress, and a generation) in a few
// hundred bytes. A RuleSet holds, per (direction, address family), a
// table:
//
//   - rules are numbered inside the table; sets of rules are bitsets of
//     ceil(n/64) words, stored flat;
//   - protocol: a [256] index maps the packet's protocol to a port table;
//     protocols without a specific rule share the table of the "any
//     protocol" rules;
//   - port: the port table cuts 0..65535 into elementary intervals (the
//     boundaries of every rule's range); a binary search yields the bitset
//     of rules whose protocol and port match;
//   - address: every CIDR rule's prefix is a range of the address space; the
//     ranges cut it into elementary intervals, and a binary search yields
//     the bitset of CIDR rules containing the address;
//   - group members: each security group referenced by a rule is a shared
//     MemberSet (an immutable sorted array behind an atomic pointer). The
//     table keeps, per referenced group, the bitset of rules that refer to
//     it. A member change replaces the set's array; no rule and no policy is
//     rebuilt.
//
// A packet is allowed when (port bitset AND CIDR bitset) is non-zero, or
// when, for a referenced group containing the address, (port bitset AND that
// group's rule bitset) is non-zero. The cost is two binary searches, one
// per referenced group and W word ANDs, never a scan of the rules.
//
// # Connection tracking
//
// A Conntrack is one vNIC's zone: an open-addressing hash table (linear
// probing, backward-shift deletion, no tombstones) that starts at a few KB,
// doubles when half full up to its capacity's size and is shrunk by Check
// when mostly empty (entries are moved, never lost), keyed by a
// canonical 5-tuple (the lower endpoint first), so both directions of a
// flow find the same entry with one lookup. ICMP echo is keyed by its
// identifier, other non-port protocols by addresses and protocol. TCP has a
// state machine with Linux's nf_conntrack default timeouts; UDP uses 30 s
// until a reply is seen, then 180 s; ICMP 30 s; other protocols 600 s.
// Time is passed in as monotonic nanoseconds.
//
// Only a packet the policy allows creates an entry (for TCP only a SYN,
// but for the loose pickup of connections in progress that a zone may
// allow for a while after an unclean restart: SetPickup, pickup.go).
// Packets of a tracked flow pass without rule evaluation, unless the entry's
// policy generation differs from the current policy's: the flow's first
// packet is then re-evaluated and the flow is cut if no longer allowed.
// Check does the same proactively in bounded steps; a flow it cuts stays cut
// even if the policy allows it again, and its next packet counts as cut.
// ICMP errors quoting a tracked flow pass. The first fragment of an allowed
// packet records (source, destination, protocol, fragment ID) for 30 s so
// that the following fragments pass; a non-first fragment arriving first is
// dropped.
//
// TCP segments must also fall within the flow's sequence windows
// (tcpwin.go; Linux's tcp_in_window without SACK blocks, window scaling
// from the SYN options): data beyond what the peer allows, acknowledgements
// of unsent data and RSTs outside the window are dropped (DropInvalid).
// Flows imported from another host learn their windows without enforcing
// them (their window scale is unknown), as Linux's picked-up connections.
//
// Decide does not collect expired entries: Check does, in bounded steps
// (the engine's workers call it every 10 ms), and also re-evaluates flows
// of an older policy generation and shrinks a mostly empty table. When
// the table is full (or a Limit shared by several zones is reached), new
// connections are dropped and counted (DropTableFull); tracked flows are
// unaffected, and so are other zones when only one zone's table is full.
// Before refusing, a full table evicts a flow a peer opened towards the
// VM and never completed (TCP short of ESTABLISHED, other flows the VM
// never answered), as Linux's early drop does: a VM flooding another with
// SYNs fills its own table, not its target's; flows the VM opened and
// established flows are never evicted.
//
// DecideRef also returns a Ref to the entry a packet used; while the zone
// removes and moves no entry (its epoch), Usable and Hit decide the next
// packets of that flow and direction exactly as Decide, with the same
// effects, without parsing addresses or looking the table up (the
// dataplane's flow cache).
//
// # Export and import (live migration)
//
// Export serializes a zone's live flows in a versioned, checksummed,
// endianness-fixed binary format (documented in export.go; ExportVersion)
// with lifetimes relative to the export time; ParseExport decodes and
// validates one (untrusted input: every field is checked, any deviation is
// an error, never a panic); Import loads one into another zone, all or
// nothing, through the zone's capacity and Limit, keeping only the flows
// the destination's current policy allows. The destination thus continues
// the VM's established connections without their opening packets.
//
// Not yet done: out-of-order fragments (a non-first fragment arriving
// before the first one is dropped).
//
// A Conntrack is not safe for concurrent use (Decide, Check, Export,
// Import): the engine must give each vNIC's zone to one worker at a
// time, and other readers go through that worker. Capacity and Evicted
// may be read concurrently. Policies and RuleSets are immutable and may be
// shared and swapped atomically (the engine publishes them in snapshots).
package firewall
