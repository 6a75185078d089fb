// Package dataplane is Butterfly's packet engine and the real implementation
// of model.Dataplane.
//
// Worker goroutines, each locked to an OS thread (and optionally pinned to a
// CPU), poll their ports in batches of 64 frames and push every batch through
// a graph of small elements: port-rx (per vNIC), trace, antispoof, switch (per
// VNI), vxlan-encap, underlay-tx, underlay-rx, vxlan-decap and port-tx (per
// vNIC). Every element keeps per-worker counters of packets and of drops by
// reason.
//
// The configuration the workers read (ports, VNIs, anti-spoofing and trace
// settings) is immutable and replaced as a whole through an atomic.Pointer;
// the worker loop takes no lock. A port removed from the configuration is
// closed only once every worker has moved past the configuration that still
// referenced it.
//
// A worker busy-polls while traffic flows and, after a short idle spell,
// sleeps in epoll_wait on its ports' file descriptors and on an eventfd the
// control plane writes to when the configuration changes.
package dataplane
