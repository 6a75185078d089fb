package apiserver

import (
	"net/netip"
	"strings"
)

// IsLoopback reports whether a ZeroMQ bind endpoint can be reached only from
// this host: ipc:// and inproc:// endpoints, and tcp:// endpoints bound to
// a loopback address (127.0.0.0/8, ::1, "localhost" or the "lo"
// interface). Wildcards ("*", 0.0.0.0, ::), other interface names, host
// names and every other transport count as reachable from the network. The
// daemon uses it to warn when the API is exposed without a key.
func IsLoopback(endpoint string) bool {
	transport, addr, ok := strings.Cut(endpoint, "://")
	if !ok {
		return false
	}
	switch strings.ToLower(transport) {
	case "ipc", "inproc":
		return true
	case "tcp":
	default:
		return false
	}
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return false
	}
	host := addr[:i]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if strings.EqualFold(host, "localhost") || host == "lo" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return ip.Unmap().IsLoopback()
}
