package model

import (
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"unicode"
)

// ParseIP parses an IPv4 or IPv6 address as inet_pton does: dotted quad or
// RFC 4291 text, no zone. IPv4-mapped IPv6 addresses stay IPv6.
func ParseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IPv4 or IPv6 address", s)
	}
	return a, nil
}

// ParseMAC parses a MAC-48 address written as six colon-separated pairs of
// hex digits (either case), e.g. "52:54:00:12:34:56".
func ParseMAC(s string) ([6]byte, error) {
	var mac [6]byte
	if len(s) != 17 {
		return mac, fmt.Errorf("%q is not a MAC-48 address", s)
	}
	for i := range 6 {
		if i > 0 && s[3*i-1] != ':' {
			return mac, fmt.Errorf("%q is not a MAC-48 address", s)
		}
		hi, ok1 := unhex(s[3*i])
		lo, ok2 := unhex(s[3*i+1])
		if !ok1 || !ok2 {
			return mac, fmt.Errorf("%q is not a MAC-48 address", s)
		}
		mac[i] = hi<<4 | lo
	}
	return mac, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// ParseCIDR builds a rule CIDR from the wire's address and mask length. The
// address is kept as given (host bits are not cleared), as the original does.
func ParseCIDR(addr string, bits uint32) (netip.Prefix, error) {
	a, err := ParseIP(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cidr address: %w", err)
	}
	if bits > uint32(a.BitLen()) {
		return netip.Prefix{}, fmt.Errorf("cidr %s/%d: mask longer than %d bits", addr, bits, a.BitLen())
	}
	return netip.PrefixFrom(a, int(bits)), nil
}

// IPString formats an address as glibc's inet_ntop does, which the original
// uses for every address it reports. It differs from netip.Addr.String only
// for IPv4-compatible IPv6 addresses (::/96 with a non-zero seventh group),
// written "::a.b.c.d".
func IPString(a netip.Addr) string { return string(appendIP(nil, a)) }

// appendIP appends IPString(a) to dst.
func appendIP(dst []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(dst, a.String()...)
	}
	if a.Is6() && !a.Is4In6() {
		b := a.As16()
		zero := true
		for _, x := range b[:12] {
			if x != 0 {
				zero = false
				break
			}
		}
		if zero && (b[12] != 0 || b[13] != 0) {
			return netip.AddrFrom4([4]byte(b[12:])).AppendTo(append(dst, "::"...))
		}
	}
	return a.AppendTo(dst)
}

// CIDRString formats a rule CIDR as "<address>/<bits>" with IPString, or ""
// for the zero Prefix.
func CIDRString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return IPString(p.Addr()) + "/" + strconv.Itoa(p.Bits())
}

// checkID validates an object id (vNIC or security group). Ids end up in
// file names (vhost-user sockets, pcap files) and interface names, so they
// must be non-empty, at most 255 bytes, without '/', control characters,
// and not "." or "..".
func checkID(what, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%s is empty", what)
	case len(id) > 255:
		return fmt.Errorf("%s is longer than 255 bytes", what)
	case id == "." || id == "..":
		return fmt.Errorf("%s %q is not allowed", what, id)
	case strings.ContainsFunc(id, func(r rune) bool { return r == '/' || r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%s %q contains '/' or a control character", what, id)
	}
	return nil
}

// maxIfName is the longest Linux interface name (IFNAMSIZ - 1).
const maxIfName = 15

// checkNetns validates a vNIC's namespace fields: Netns only for TAP
// vNICs, as a clean absolute path; IfName only with Netns, a name Linux
// accepts (dev_valid_name), derived from the id when empty.
func checkNetns(n *NIC) error {
	if n.Netns == "" {
		if n.IfName != "" {
			return fmt.Errorf("ifname %q needs netns", n.IfName)
		}
		return nil
	}
	if n.Type != NICTap {
		return fmt.Errorf("netns is only for TAP nics, not %s", n.Type)
	}
	if !path.IsAbs(n.Netns) || path.Clean(n.Netns) != n.Netns || strings.ContainsFunc(n.Netns, unicode.IsControl) {
		return fmt.Errorf("netns %q is not a clean absolute path", n.Netns)
	}
	if n.IfName == "" {
		n.IfName = defaultIfName(n.ID)
		return nil
	}
	switch {
	case len(n.IfName) > maxIfName:
		return fmt.Errorf("ifname %q is longer than %d bytes", n.IfName, maxIfName)
	case n.IfName == "." || n.IfName == "..":
		return fmt.Errorf("ifname %q is not allowed", n.IfName)
	case strings.ContainsFunc(n.IfName, badIfNameRune):
		return fmt.Errorf("ifname %q contains '/', ':', a space or a control character", n.IfName)
	}
	return nil
}

// badIfNameRune reports the characters Linux refuses in interface names,
// plus control and non-ASCII characters.
func badIfNameRune(r rune) bool {
	return r <= ' ' || r >= 0x7f || r == '/' || r == ':' || r == '%'
}

// defaultIfName derives an interface name from a vNIC id: refused
// characters become '-', and the result is cut to 15 bytes.
func defaultIfName(id string) string {
	b := []byte(id)
	for i, c := range b {
		if badIfNameRune(rune(c)) {
			b[i] = '-'
		}
	}
	if len(b) > maxIfName {
		b = b[:maxIfName]
	}
	if s := string(b); s != "." && s != ".." {
		return s
	}
	return "vnic"
}
