package model

import (
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
func (r Rule) Key() string {
	cidr := "/0"
	if r.CIDR.IsValid() {
		cidr = CIDRString(r.CIDR)
	}
	return strconv.Itoa(int(r.Direction)) + "-" +
		strconv.Itoa(int(r.Protocol)) + "-" +
		strconv.FormatUint(uint64(r.PortStart), 10) + "-" +
		strconv.FormatUint(uint64(r.PortEnd), 10) + "-" +
		cidr + "-" + r.SG
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
	k := r.Key()
	h := cxxhash.String(k)
	return slices.BinarySearchFunc(rules, r, func(x Rule, _ Rule) int {
		xk := x.Key()
		return cmp.Or(cmp.Compare(cxxhash.String(xk), h), cmp.Compare(xk, k))
	})
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
