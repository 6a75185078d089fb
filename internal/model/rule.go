package model

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strconv"

	"github.com/butterfly-go/butterfly/internal/cxxhash"
)

// Key is the rule's identity, built as the original builds the string it
// hashes: "<direction>-<protocol>-<port start>-<port end>-<cidr>-<sg>" with
// numbers in decimal, an absent port as 0, the CIDR as
// "<inet_ntop address>/<bits>" and an absent CIDR as "/0" (the original
// prints its empty address and zero mask), an absent SG as "". Examples:
// "0-6-22-22-10.0.0.0/24-", "0-17-8000-8000-/0-sg-1".
func (r Rule) Key() string { return string(r.appendKey(nil)) }

// appendKey appends the rule's Key to dst.
func (r Rule) appendKey(dst []byte) []byte {
	dst = strconv.AppendInt(dst, int64(r.Direction), 10)
	dst = append(dst, '-')
	dst = strconv.AppendInt(dst, int64(r.Protocol), 10)
	dst = append(dst, '-')
	dst = strconv.AppendUint(dst, uint64(r.PortStart), 10)
	dst = append(dst, '-')
	dst = strconv.AppendUint(dst, uint64(r.PortEnd), 10)
	dst = append(dst, '-')
	if r.CIDR.IsValid() {
		dst = appendIP(dst, r.CIDR.Addr())
		dst = append(dst, '/')
		dst = strconv.AppendInt(dst, int64(r.CIDR.Bits()), 10)
	} else {
		dst = append(dst, "/0"...)
	}
	dst = append(dst, '-')
	return append(dst, r.SG...)
}

// Hash is libstdc++'s std::hash of Key, the original's rule identity. Rules
// are listed in increasing Hash order, as the original's std::map lists them.
func (r Rule) Hash() uint64 { return cxxhash.String(r.Key()) }

// HasPorts reports whether the rule's protocol uses ports (TCP or UDP); the
// API reports ports only for those.
func (r Rule) HasPorts() bool { return r.Protocol == 6 || r.Protocol == 17 }

// validateRule checks a rule as the original does, and also rejects a rule
// with neither a CIDR nor an SG (the original failed it later with
// "Internal error").
func validateRule(r Rule) error {
	if r.Direction != Inbound && r.Direction != Outbound {
		return fmt.Errorf("unknown direction %d", r.Direction)
	}
	if r.Protocol < -1 || r.Protocol > 255 {
		return fmt.Errorf("protocol %d is not in [-1, 255]", r.Protocol)
	}
	if r.HasPorts() {
		if r.PortStart > 65535 || r.PortEnd > 65535 {
			return fmt.Errorf("port range %d-%d: port above 65535", r.PortStart, r.PortEnd)
		}
		if r.PortStart > r.PortEnd {
			return fmt.Errorf("port range %d-%d: start after end", r.PortStart, r.PortEnd)
		}
	}
	switch {
	case r.CIDR.IsValid() && r.SG != "":
		return fmt.Errorf("cidr and security_group are mutually exclusive")
	case !r.CIDR.IsValid() && r.SG == "":
		return fmt.Errorf("a rule needs a cidr or a security_group")
	case r.CIDR.IsValid() && r.CIDR.Addr().Zone() != "":
		return fmt.Errorf("cidr address %q has a zone", r.CIDR.Addr())
	}
	return nil
}

// findRule returns the index of the rule with r's Key in rules, which
// normalizeRules ordered, or where to insert it (found false). It
// computes O(log n) keys, where a scan would compute n.
func findRule(rules []Rule, r Rule) (int, bool) {
	// The keys are built in buffers on the stack: no allocation per
	// comparison.
	var kb, xb [128]byte
	k := r.appendKey(kb[:0])
	h := cxxhash.Bytes(k, cxxhash.Seed)
	lo, hi := 0, len(rules)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		xk := rules[m].appendKey(xb[:0])
		if cmp.Or(cmp.Compare(cxxhash.Bytes(xk, cxxhash.Seed), h), bytes.Compare(xk, k)) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(rules) && bytes.Equal(rules[lo].appendKey(xb[:0]), k)
}

// normalizeRules returns rules without duplicates (same Key), ordered by
// Hash (ties, which need a hash collision, by Key).
func normalizeRules(rules []Rule) []Rule {
	type keyed struct {
		r    Rule
		key  string
		hash uint64
	}
	ks := make([]keyed, 0, len(rules))
	seen := make(map[string]bool, len(rules))
	for _, r := range rules {
		k := r.Key()
		if seen[k] {
			continue
		}
		seen[k] = true
		ks = append(ks, keyed{r, k, cxxhash.String(k)})
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		return cmp.Or(cmp.Compare(a.hash, b.hash), cmp.Compare(a.key, b.key))
	})
	out := make([]Rule, len(ks))
	for i, k := range ks {
		out[i] = k.r
	}
	return out
}
