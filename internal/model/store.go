package model

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
)

// Store is the desired state of the switch: vNICs and security groups. It
// validates every change, applies the original's idempotent semantics and
// drives the dataplane. A request that fails leaves the Store unchanged.
// Store is safe for concurrent use.
type Store struct {
	mu   sync.Mutex
	dp   Dataplane
	opts Options
	// nics and sgs hold the objects by id. An object's lists (NIC.IPs,
	// NIC.SecurityGroups, SG.Members, SG.Rules) are never written once
	// stored: a change stores new lists. State relies on it to share them.
	nics table[NIC]
	sgs  table[SG]
	gen  uint64
}

// table is a map of objects by id that keeps the sorted ids, computed
// again only after an id was added or removed, and the ids changed since
// the last take. Read m directly; change it through set, del and reset.
type table[V any] struct {
	m   map[string]*V
	ids []string // m's ids sorted; nil when stale
	// dirty holds the ids set, deleted or reset since the last take.
	dirty map[string]struct{}
}

func newTable[V any]() table[V] {
	return table[V]{m: make(map[string]*V), dirty: make(map[string]struct{})}
}

func (t *table[V]) set(id string, v *V) {
	if _, ok := t.m[id]; !ok {
		t.ids = nil
	}
	t.m[id] = v
	t.dirty[id] = struct{}{}
}

func (t *table[V]) del(id string) {
	if _, ok := t.m[id]; ok {
		delete(t.m, id)
		t.ids = nil
		t.dirty[id] = struct{}{}
	}
}

func (t *table[V]) reset() {
	for id := range t.m {
		t.dirty[id] = struct{}{}
	}
	clear(t.m)
	t.ids = nil
}

// smallDirty is the largest dirty set that take clears for reuse; a larger
// one is dropped, since clearing a map costs its capacity, not its length.
const smallDirty = 32

// take returns the objects changed since the last take (their current
// values, through share) and the ids removed since then, both sorted by
// id, and starts a new change set. Its cost is that of the change, not of
// the table.
func (t *table[V]) take(share func(V) V) (up []V, del []string) {
	if len(t.dirty) == 0 {
		return nil, nil
	}
	for _, id := range sortedKeys(t.dirty) {
		if v, ok := t.m[id]; ok {
			up = append(up, share(*v))
		} else {
			del = append(del, id)
		}
	}
	if len(t.dirty) > smallDirty {
		t.dirty = make(map[string]struct{})
	} else {
		clear(t.dirty)
	}
	return up, del
}

// sorted returns the ids in order. The slice is shared: do not modify it.
func (t *table[V]) sorted() []string {
	if t.ids == nil {
		t.ids = sortedKeys(t.m)
	}
	return t.ids
}

// New returns an empty Store that drives dp.
func New(dp Dataplane, opts Options) *Store {
	return &Store{
		dp:   dp,
		opts: opts,
		nics: newTable[NIC](),
		sgs:  newTable[SG](),
	}
}

// DefaultPacketTrace is Options.DefaultPacketTrace: the packet_trace value
// the API uses for a nic_add that does not set it.
func (s *Store) DefaultPacketTrace() bool { return s.opts.DefaultPacketTrace }

// DefaultVhostClient is Options.DefaultVhostClient: the vhost-user mode
// (true = client) the API uses for a nic_add that does not choose one.
func (s *Store) DefaultVhostClient() bool { return s.opts.DefaultVhostClient }

// Generation counts the changes applied so far. It grows by at least one
// on every operation that changed the state, and does not change
// otherwise; callers use it to skip saving an unchanged state.
func (s *Store) Generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// checkNIC validates n and returns its normalized form: MAC parsed, IPs
// unique in order, security groups unique in order without empty ids,
// default trace path applied, BENCH fields cleared for other types,
// VhostClient cleared for types other than vhost-user.
func (s *Store) checkNIC(n NIC) (NIC, error) {
	bad := func(format string, args ...any) (NIC, error) {
		return NIC{}, Errorf(CodeInvalid, TextBadNIC, format, args...)
	}
	if err := checkID("id", n.ID); err != nil {
		return bad("%v", err)
	}
	mac, err := ParseMAC(n.MACText)
	if err != nil {
		return bad("mac %v", err)
	}
	n.MAC = mac
	if n.VNI > 1<<24-1 {
		return bad("vni %d is larger than 16777215", n.VNI)
	}
	ips := make([]netip.Addr, 0, len(n.IPs))
	for _, a := range n.IPs {
		if !a.IsValid() || a.Zone() != "" {
			return bad("ip %q is not an IPv4 or IPv6 address", a)
		}
		if !slices.Contains(ips, a) {
			ips = append(ips, a)
		}
	}
	n.IPs = ips
	if len(n.IPs) == 0 {
		n.IPs = nil
	}
	n.SecurityGroups = uniqueIDs(n.SecurityGroups)
	if err := checkNetns(&n); err != nil {
		return bad("%v", err)
	}
	if n.Type != NICVhostUser {
		n.VhostClient = false
	}
	switch n.Type {
	case NICVhostUser, NICTap:
		n.BType, n.DIP, n.DMAC = "", "", ""
	case NICBench:
		switch n.BType {
		case "ICMP_SND_LIKE", "ICMP_RCV_LIKE":
		case "":
			return bad("a BENCH nic needs a btype (ICMP_SND_LIKE or ICMP_RCV_LIKE)")
		default:
			return bad("btype %q is not ICMP_SND_LIKE or ICMP_RCV_LIKE", n.BType)
		}
		if len(n.IPs) == 0 {
			return bad("a BENCH nic needs an ip")
		}
		if n.BType == "ICMP_SND_LIKE" && (n.DIP == "" || n.DMAC == "") {
			return bad("an ICMP_SND_LIKE BENCH nic needs dip and dmac")
		}
		if n.DIP != "" {
			if _, err := ParseIP(n.DIP); err != nil {
				return bad("dip %v", err)
			}
		}
		if n.DMAC != "" {
			if _, err := ParseMAC(n.DMAC); err != nil {
				return bad("dmac %v", err)
			}
		}
	default:
		return bad("unknown type %d", int32(n.Type))
	}
	if n.TracePath == "" && s.opts.DefaultTracePath != nil {
		n.TracePath = s.opts.DefaultTracePath(n.ID)
	}
	n.Path = ""
	return n, nil
}

// uniqueIDs drops empty and repeated ids, keeping order; nil if none left.
func uniqueIDs(ids []string) []string {
	var out []string
	for _, id := range ids {
		if id != "" && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// AddNIC creates a vNIC and returns the path the dataplane reports (socket
// path or interface name). If a vNIC with the same id exists, it is
// replaced, as in the original: the old one is removed from the dataplane
// and the new one created; but the same nic_add of a vNIC in a network
// namespace that is attached to its device changes nothing (see
// keepAttached). If creating the new one fails, the old one is
// recreated and kept (the error says whether that worked).
//
// n.Import, when set, becomes the new vNIC's connection-tracking state; a
// replaced vNIC's own state is discarded, as on every replacement. The
// caller should validate Import first (the API does, with
// firewall.ParseExport): a replacement the dataplane refuses recreates the
// old vNIC with an empty table.
func (s *Store) AddNIC(n NIC) (string, error) {
	n, err := s.checkNIC(n)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addNIC(n)
}

func (s *Store) addNIC(n NIC) (string, error) {
	old, exists := s.nics.m[n.ID]
	if exists && keepAttached(s.dp, old, n) {
		return old.Path, nil
	}
	if exists {
		if err := s.dp.DeleteNIC(old.ID); err != nil {
			return "", dataplaneErr("NIC deletion failed", fmt.Errorf("replacing nic %q: %w", old.ID, err))
		}
	}
	path, err := s.dp.AddNIC(n.Clone())
	if err != nil {
		e := dataplaneErr("NIC creation failed", fmt.Errorf("nic %q: %w", n.ID, err))
		if exists {
			s.gen++
			oldPath, rerr := s.dp.AddNIC(old.Clone())
			if rerr != nil {
				s.nics.del(old.ID)
				e.Err = errors.Join(e.Err, fmt.Errorf("restoring the previous nic %q failed, it is removed: %w", old.ID, rerr))
			} else {
				old.Path = oldPath
				s.nics.set(old.ID, old)
				e.Err = errors.Join(e.Err, fmt.Errorf("previous nic %q restored", old.ID))
			}
		}
		return "", e
	}
	n.Path = path
	n.Import = nil // given to the dataplane once, never kept
	s.nics.set(n.ID, &n)
	s.gen++
	return path, nil
}

// keepAttached reports whether replacing vNIC old with n would change
// nothing but cut its traffic: n is the same vNIC in a network namespace
// (an orchestrator replaying its nic_add after a restart), without an
// import, and the dataplane has it attached to its device in place. Such
// a replay keeps the vNIC, so the container keeps its interface,
// addresses and connections; a detached vNIC (its namespace was gone) or
// one whose device disappeared is replaced, which re-creates its TAP.
func keepAttached(dp Dataplane, old *NIC, n NIC) bool {
	if n.Netns == "" || len(n.Import) > 0 {
		return false
	}
	n.Path = old.Path // output only
	if !n.PacketTrace && !old.PacketTrace {
		// No trace: the path has no effect, and the default one names
		// the daemon's pid, which a restart changed.
		n.TracePath = old.TracePath
	}
	a, ok := dp.(AttachChecker)
	return ok && n.Equal(*old) && a.Attached(n.ID)
}

// UpdateNIC applies a partial update. An unknown id is an error
// ("NIC does not exist with id X"). An update that changes nothing does not
// reach the dataplane.
func (s *Store) UpdateNIC(u NICUpdate) error {
	var ips []netip.Addr
	if len(u.IPs) > 0 {
		for _, t := range u.IPs {
			if t == "" {
				continue
			}
			a, err := ParseIP(t)
			if err != nil {
				return Errorf(CodeInvalid, TextBadNICUpdate, "ip %v", err)
			}
			if !slices.Contains(ips, a) {
				ips = append(ips, a)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.nics.m[u.ID]
	if !ok {
		return notFoundNIC(u.ID)
	}
	n := old.Clone()
	if len(u.IPs) > 0 {
		n.IPs = ips
	}
	if len(u.SecurityGroups) > 0 {
		n.SecurityGroups = uniqueIDs(u.SecurityGroups)
	}
	if u.IPAntiSpoof != nil {
		n.IPAntiSpoof = *u.IPAntiSpoof
	}
	if u.PacketTrace != nil {
		n.PacketTrace = *u.PacketTrace
	}
	if u.TracePath != nil && *u.TracePath != "" {
		n.TracePath = *u.TracePath
	}
	if n.Equal(*old) {
		return nil
	}
	if err := s.dp.UpdateNIC(n.Clone()); err != nil {
		return dataplaneErr("NIC update failed", fmt.Errorf("nic %q: %w", n.ID, err))
	}
	s.nics.set(n.ID, &n)
	s.gen++
	return nil
}

// DeleteNIC removes a vNIC. An unknown id is not an error.
func (s *Store) DeleteNIC(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.nics.m[id]; !ok {
		return nil
	}
	if err := s.dp.DeleteNIC(id); err != nil {
		return dataplaneErr("NIC deletion failed", fmt.Errorf("nic %q: %w", id, err))
	}
	s.nics.del(id)
	s.gen++
	return nil
}

// NICList returns the vNIC ids, sorted.
func (s *Store) NICList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.nics.sorted())
}

// NICDetails returns the vNIC with that id, or every vNIC sorted by id when
// id is "". An unknown id gives the error "NIC: <id> not found".
func (s *Store) NICDetails(id string) ([]NIC, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return details(&s.nics, id, NIC.Clone, func() *Error {
		return &Error{Code: CodeNotFound, Text: "NIC: " + id + " not found"}
	})
}

// NICStats returns a vNIC's byte counters.
func (s *Store) NICStats(id string) (NICStats, error) {
	return queryNIC(s, id, "NIC stats failed", s.dp.Stats)
}

// NICCounters returns a vNIC's packet counters.
func (s *Store) NICCounters(id string) (NICCounters, error) {
	return queryNIC(s, id, "NIC counters failed", s.dp.Counters)
}

// NICExport returns a vNIC's connection-tracking state in the firewall's
// export format (nic_export), to be given as NIC.Import to another host's
// AddNIC.
func (s *Store) NICExport(id string) ([]byte, error) {
	return queryNIC(s, id, "NIC export failed", s.dp.ExportNIC)
}

// queryNIC asks the dataplane get(id) about a known vNIC, under the lock.
// An unknown id is notFoundNIC; a dataplane error is reported as failure.
func queryNIC[T any](s *Store, id, failure string, get func(string) (T, error)) (T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var zero T
	if _, ok := s.nics.m[id]; !ok {
		return zero, notFoundNIC(id)
	}
	v, err := get(id)
	if err != nil {
		return zero, dataplaneErr(failure, fmt.Errorf("nic %q: %w", id, err))
	}
	return v, nil
}

// checkSG validates sg and returns it normalized: members unique in order,
// rules unique and ordered by hash.
func checkSG(sg SG) (SG, error) {
	if err := checkID("id", sg.ID); err != nil {
		return SG{}, Errorf(CodeInvalid, TextBadSG, "%v", err)
	}
	var members []netip.Addr
	for _, a := range sg.Members {
		if !a.IsValid() || a.Zone() != "" {
			return SG{}, Errorf(CodeInvalid, TextBadSG, "member %q is not an IPv4 or IPv6 address", a)
		}
		if !slices.Contains(members, a) {
			members = append(members, a)
		}
	}
	for i, r := range sg.Rules {
		if err := validateRule(r); err != nil {
			return SG{}, Errorf(CodeInvalid, TextBadSG, "rule %d: %v", i+1, err)
		}
	}
	sg.Members = members
	sg.Rules = normalizeRules(sg.Rules)
	if len(sg.Rules) == 0 {
		sg.Rules = nil
	}
	return sg, nil
}

// AddSG creates a security group or replaces an existing one (members and
// rules). Replacing it with identical content changes nothing.
func (s *Store) AddSG(sg SG) error {
	sg, err := checkSG(sg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.sgs.m[sg.ID]; ok && old.Equal(sg) {
		return nil
	}
	if err := s.pushSGs(sg.ID, &sg, "Security Group creation failed"); err != nil {
		return err
	}
	s.sgs.set(sg.ID, &sg)
	s.gen++
	return nil
}

// DeleteSG removes a security group. An unknown id is not an error. vNICs
// keep the id in their lists.
func (s *Store) DeleteSG(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sgs.m[id]; ok {
		if err := s.pushSGs(id, nil, "Security Group deletion failed"); err != nil {
			return err
		}
		s.sgs.del(id)
		s.gen++
	}
	return nil
}

// SGList returns the security group ids, sorted.
func (s *Store) SGList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sgs.sorted())
}

// SGDetails returns the security group with that id, or every group sorted
// by id when id is "". An unknown id gives "Sg not found".
func (s *Store) SGDetails(id string) ([]SG, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return details(&s.sgs, id, SG.Clone, func() *Error {
		return &Error{Code: CodeNotFound, Text: TextSGDetails + ": " + id}
	})
}

func sgNotFound(id string) *Error {
	return &Error{Code: CodeNotFound, Text: TextSGNotFound + ": " + id}
}

// sgOrNew returns a copy of the security group id, or an empty group if
// there is none. s.mu must be held.
func (s *Store) sgOrNew(id string) SG {
	if sg, ok := s.sgs.m[id]; ok {
		return *sg
	}
	return SG{ID: id}
}

// commitSG pushes the groups with sg in place of its current version to
// the dataplane, then stores it. On error nothing changes. s.mu must be
// held.
func (s *Store) commitSG(sg SG, failure string) error {
	if err := s.pushSGs(sg.ID, &sg, failure); err != nil {
		return err
	}
	s.sgs.set(sg.ID, &sg)
	s.gen++
	return nil
}

// pushSGs gives the dataplane every security group, sorted by id, with
// the group id replaced by sg (removed when sg is nil), or that one group
// alone if the dataplane is an SGUpdater. The lists are shared with the
// Store (read-only). s.mu must be held.
func (s *Store) pushSGs(id string, sg *SG, failure string) error {
	if u, ok := s.dp.(SGUpdater); ok {
		var g *SG
		if sg != nil {
			shared := shareSG(*sg)
			g = &shared
		}
		if err := u.UpdateSecurityGroup(id, g); err != nil {
			return dataplaneErr(failure, fmt.Errorf("security group %q: %w", id, err))
		}
		return nil
	}
	ids := s.sgs.sorted()
	list := make([]SG, 0, len(ids)+1)
	added := sg == nil
	for _, k := range ids {
		if !added && id < k {
			list = append(list, shareSG(*sg))
			added = true
		}
		if k == id {
			if sg != nil && !added {
				list = append(list, shareSG(*sg))
				added = true
			}
			continue
		}
		list = append(list, shareSG(*s.sgs.m[k]))
	}
	if !added {
		list = append(list, shareSG(*sg))
	}
	if err := s.dp.SetSecurityGroups(list); err != nil {
		return dataplaneErr(failure, fmt.Errorf("security group %q: %w", id, err))
	}
	return nil
}

// deleteAt returns a copy of l without its element i, nil if none is left.
// The array of l is left untouched.
func deleteAt[T any](l []T, i int) []T {
	if len(l) == 1 {
		return nil
	}
	c := make([]T, len(l)-1)
	copy(c, l[:i])
	copy(c[i:], l[i+1:])
	return c
}

// insertAt returns a copy of l with v inserted at index i. The array of
// l is left untouched.
func insertAt[T any](l []T, i int, v T) []T {
	c := make([]T, len(l)+1)
	copy(c, l[:i])
	c[i] = v
	copy(c[i+1:], l[i:])
	return c
}

// AddRule adds a rule to a security group, creating the group if needed.
// A rule already there (same Key) changes nothing.
func (s *Store) AddRule(sgID string, r Rule) error {
	if err := checkID("sg_id", sgID); err != nil {
		return Errorf(CodeInvalid, TextBadRule, "%v", err)
	}
	if err := validateRule(r); err != nil {
		return Errorf(CodeInvalid, TextBadRule, "%v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sg := s.sgOrNew(sgID)
	// sg.Rules is normalized (every write goes through normalizeRules or
	// keeps its order): the new rule goes in its place.
	i, found := findRule(sg.Rules, r)
	if found {
		return nil
	}
	sg.Rules = insertAt(sg.Rules, i, r)
	return s.commitSG(sg, "Security Group rule creation failed")
}

// DeleteRule removes a rule (matched by Key) from a security group. An
// unknown group or rule is not an error. The rule is still validated.
func (s *Store) DeleteRule(sgID string, r Rule) error {
	if err := validateRule(r); err != nil {
		return Errorf(CodeInvalid, TextBadRule, "%v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sg, ok := s.sgs.m[sgID]
	if !ok {
		return nil
	}
	i, found := findRule(sg.Rules, r)
	if !found {
		return nil
	}
	ns := *sg
	ns.Rules = deleteAt(sg.Rules, i)
	return s.commitSG(ns, "Security Group rule deletion failed")
}

// Rules returns a security group's rules in hash order. An unknown group
// gives "Security Group not found".
func (s *Store) Rules(sgID string) ([]Rule, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sg, ok := s.sgs.m[sgID]
	if !ok {
		return nil, sgNotFound(sgID)
	}
	return slices.Clone(sg.Rules), nil
}

// AddMember adds an address to a security group, creating the group if
// needed. An address already there (whatever its spelling) changes
// nothing.
func (s *Store) AddMember(sgID, ip string) error {
	a, err := ParseIP(ip)
	if err != nil {
		return Errorf(CodeInvalid, TextBadIP, "member %v", err)
	}
	if err := checkID("sg_id", sgID); err != nil {
		return Errorf(CodeInvalid, TextBadSG, "%v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sg := s.sgOrNew(sgID)
	if slices.Contains(sg.Members, a) {
		return nil
	}
	sg.Members = append(slices.Clip(sg.Members), a)
	return s.commitSG(sg, "Security Group member creation failed")
}

// DeleteMember removes an address (whatever its spelling) from a security
// group. An unknown group or address is not an error.
func (s *Store) DeleteMember(sgID, ip string) error {
	a, err := ParseIP(ip)
	if err != nil {
		return Errorf(CodeInvalid, TextBadIP, "member %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sg, ok := s.sgs.m[sgID]
	if !ok {
		return nil
	}
	i := slices.Index(sg.Members, a)
	if i < 0 {
		return nil
	}
	ns := *sg
	ns.Members = deleteAt(sg.Members, i)
	return s.commitSG(ns, "Security Group member deletion failed")
}

// Members returns a security group's members in insertion order, written
// as inet_ntop does. An unknown group gives "Security Group not found".
func (s *Store) Members(sgID string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sg, ok := s.sgs.m[sgID]
	if !ok {
		return nil, sgNotFound(sgID)
	}
	out := make([]string, len(sg.Members))
	for i, a := range sg.Members {
		out[i] = IPString(a)
	}
	return out, nil
}

// DOT returns the dataplane graph in the DOT language.
func (s *Store) DOT() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dp.DOT()
}

// State returns the whole state: vNICs sorted by id, then security groups
// sorted by id. It is cheap: the NIC and SG values are copies, but their
// lists (IPs, SecurityGroups, Members, Rules) share the Store's arrays,
// which the Store never writes once stored (a change stores a new list).
// Callers must treat those lists as read-only: replacing a field or a
// whole list of the returned State is fine, writing an element of a list
// is not. Appending to one allocates (the lists are clipped).
func (s *Store) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return State{Version: StateVersion, NICs: cloneSorted(&s.nics, shareNIC), SGs: cloneSorted(&s.sgs, shareSG)}
}

// TakeChanges returns what changed since the previous TakeChanges (or
// since New): the vNICs and security groups added or replaced, as they are
// now, and the ids of those removed, each list sorted by id; then it
// starts a new change set. An object changed and then removed is only
// removed; one removed and then added again is only added. Like State, the
// objects' lists are shared with the Store: read-only. Its cost is
// proportional to the change, not to the size of the state, so that a
// caller persisting every change (apiv0 with state.Store.SaveChange) pays
// for what changed only. Callers that take no changes leave the set to
// grow up to the number of ids ever used.
func (s *Store) TakeChanges() Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	var c Change
	c.NICs, c.DelNICs = s.nics.take(shareNIC)
	c.SGs, c.DelSGs = s.sgs.take(shareSG)
	return c
}

// shareNIC returns n with its lists clipped, for State.
func shareNIC(n NIC) NIC {
	n.IPs = slices.Clip(n.IPs)
	n.SecurityGroups = slices.Clip(n.SecurityGroups)
	return n
}

// shareSG returns sg with its lists clipped, for State.
func shareSG(sg SG) SG {
	sg.Members = slices.Clip(sg.Members)
	sg.Rules = slices.Clip(sg.Rules)
	return sg
}

// Restore replaces the Store's content with st: existing vNICs are removed
// from the dataplane, then st's security groups are installed, then its
// vNICs are created in the dataplane. Invalid entries and vNICs the
// dataplane refuses are skipped; the returned error joins their errors.
func (s *Store) Restore(st State) error {
	if st.Version != StateVersion && !(st.Version == 0 && len(st.NICs) == 0 && len(st.SGs) == 0) {
		return fmt.Errorf("restore: state version %d is not supported (want %d)", st.Version, StateVersion)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, id := range slices.Clone(s.nics.sorted()) {
		if err := s.dp.DeleteNIC(id); err != nil {
			errs = append(errs, fmt.Errorf("restore: removing nic %q: %w", id, err))
		}
		s.nics.del(id)
	}
	s.sgs.reset()
	s.gen++
	for _, in := range st.SGs {
		sg, err := checkSG(in.Clone())
		if err != nil {
			errs = append(errs, fmt.Errorf("restore: security group %q: %w", in.ID, err))
			continue
		}
		if _, dup := s.sgs.m[sg.ID]; dup {
			errs = append(errs, fmt.Errorf("restore: security group %q appears twice", sg.ID))
			continue
		}
		s.sgs.set(sg.ID, &sg)
	}
	if err := s.dp.SetSecurityGroups(cloneSorted(&s.sgs, shareSG)); err != nil {
		errs = append(errs, fmt.Errorf("restore: security groups: %w", err))
	}
	for _, n := range st.NICs {
		id := n.ID
		n, err := s.checkNIC(n.Clone())
		if err != nil {
			errs = append(errs, fmt.Errorf("restore: nic %q: %w", id, err))
			continue
		}
		if _, dup := s.nics.m[n.ID]; dup {
			errs = append(errs, fmt.Errorf("restore: nic %q appears twice", n.ID))
			continue
		}
		if _, err := s.addNIC(n); err != nil {
			errs = append(errs, fmt.Errorf("restore: nic %q: %w", n.ID, err))
		}
	}
	return errors.Join(errs...)
}

// details returns a copy of m[id], or copies of every value sorted by key
// when id is "". An unknown id gives notFound().
func details[V any](t *table[V], id string, clone func(V) V, notFound func() *Error) ([]V, error) {
	if id == "" {
		return cloneSorted(t, clone), nil
	}
	v, ok := t.m[id]
	if !ok {
		return nil, notFound()
	}
	return []V{clone(*v)}, nil
}

// cloneSorted returns clone of each of t's values, sorted by id, never nil.
func cloneSorted[V any](t *table[V], clone func(V) V) []V {
	ids := t.sorted()
	out := make([]V, len(ids))
	for i, k := range ids {
		out[i] = clone(*t.m[k])
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
