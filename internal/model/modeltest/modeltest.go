// Package modeltest provides an in-memory model.Dataplane for tests: it
// records every call, keeps the vNICs it was given, reports settable
// counters and can be told to fail.
package modeltest

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"

	"github.com/butterfly-go/butterfly/internal/model"
)

// Operation names, as used in Call.Op and FailOn.
const (
	OpAddNIC    = "AddNIC"
	OpUpdateNIC = "UpdateNIC"
	OpDeleteNIC = "DeleteNIC"
	OpStats     = "Stats"
	OpCounters  = "Counters"
	OpExportNIC = "ExportNIC"
	// OpSetSecurityGroups is SetSecurityGroups (Call.ID is "").
	OpSetSecurityGroups = "SetSecurityGroups"
)

// Call is one recorded Dataplane call.
type Call struct {
	Op string
	ID string
	// NIC is the argument of AddNIC and UpdateNIC.
	NIC model.NIC
	// SGs is the argument of SetSecurityGroups.
	SGs []model.SG
}

// Dataplane is a fake model.Dataplane. The zero value is not usable; call
// NewDataplane. It is safe for concurrent use.
type Dataplane struct {
	mu       sync.Mutex
	dir      string
	calls    []Call
	nics     map[string]model.NIC
	stats    map[string]model.NICStats
	counters map[string]model.NICCounters
	exports  map[string][]byte
	fail     map[[2]string]*failure
	dot      string
	sgs      []model.SG
	issues   []model.NICIssue
	attached map[string]bool
}

var _ model.Dataplane = (*Dataplane)(nil)

// NewDataplane returns an empty fake whose vhost-user sockets live in /tmp.
func NewDataplane() *Dataplane {
	return &Dataplane{
		dir:      "/tmp",
		nics:     make(map[string]model.NIC),
		stats:    make(map[string]model.NICStats),
		counters: make(map[string]model.NICCounters),
		exports:  make(map[string][]byte),
		fail:     make(map[[2]string]*failure),
		dot:      "strict graph G {\n}\n",
	}
}

// SetSocketDir sets the directory of the vhost-user socket paths returned.
func (d *Dataplane) SetSocketDir(dir string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dir = dir
}

type failure struct {
	err  error
	left int // calls left to fail; < 0 = forever
}

// FailOn makes every call of op (OpAddNIC...) for vNIC id fail with err;
// id "" matches any vNIC. A nil err removes the failure.
func (d *Dataplane) FailOn(op, id string, err error) {
	d.failN(op, id, err, -1)
}

// FailOnce makes the next call of op for vNIC id ("" = any) fail with err.
func (d *Dataplane) FailOnce(op, id string, err error) {
	d.failN(op, id, err, 1)
}

func (d *Dataplane) failN(op, id string, err error, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.fail, [2]string{op, id})
		return
	}
	d.fail[[2]string{op, id}] = &failure{err: err, left: n}
}

// failure returns the error the call of op on id must fail with, if any,
// and consumes one-shot failures.
func (d *Dataplane) failure(op, id string) error {
	for _, k := range [][2]string{{op, id}, {op, ""}} {
		f := d.fail[k]
		if f == nil {
			continue
		}
		if f.left > 0 {
			f.left--
			if f.left == 0 {
				delete(d.fail, k)
			}
		}
		return f.err
	}
	return nil
}

// SetStats sets the byte counters Stats reports for id.
func (d *Dataplane) SetStats(id string, s model.NICStats) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats[id] = s
}

// SetCounters sets the packet counters Counters reports for id.
func (d *Dataplane) SetCounters(id string, c model.NICCounters) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.counters[id] = c
}

// SetAttached sets what Attached reports for id.
func (d *Dataplane) SetAttached(id string, on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.attached == nil {
		d.attached = map[string]bool{}
	}
	d.attached[id] = on
}

// Attached returns what SetAttached set for id (model.AttachChecker).
func (d *Dataplane) Attached(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.attached[id]
}

// SetIssues sets what NICIssues reports.
func (d *Dataplane) SetIssues(is []model.NICIssue) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.issues = is
}

// NICIssues returns what SetIssues set (model.IssueReporter).
func (d *Dataplane) NICIssues() []model.NICIssue {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.issues
}

// SetDOT sets the text DOT returns.
func (d *Dataplane) SetDOT(s string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dot = s
}

// Calls returns the calls recorded so far, in order (DOT is not recorded).
func (d *Dataplane) Calls() []Call {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// ResetCalls forgets the recorded calls.
func (d *Dataplane) ResetCalls() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = nil
}

// NIC returns the vNIC as last added or updated, if it exists.
func (d *Dataplane) NIC(id string) (model.NIC, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.nics[id]
	return n, ok
}

// NICIDs returns the ids of the vNICs that exist, sorted.
func (d *Dataplane) NICIDs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(maps.Keys(d.nics))
}

// AddNIC records the vNIC and returns "<socket dir>/qemu-vhost-<id>" for
// vhost-user, the id for TAP and "" for BENCH. Adding an existing id is an
// error, as in a real dataplane.
func (d *Dataplane) AddNIC(n model.NIC) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, Call{Op: OpAddNIC, ID: n.ID, NIC: n})
	if err := d.failure(OpAddNIC, n.ID); err != nil {
		return "", err
	}
	if _, ok := d.nics[n.ID]; ok {
		return "", fmt.Errorf("modeltest: nic %q already exists", n.ID)
	}
	var path string
	switch n.Type {
	case model.NICVhostUser:
		path = filepath.Join(d.dir, "qemu-vhost-"+n.ID)
	case model.NICTap:
		path = n.ID
	}
	n.Path = path
	d.nics[n.ID] = n
	return path, nil
}

// UpdateNIC records the new vNIC. Updating an unknown id is an error.
func (d *Dataplane) UpdateNIC(n model.NIC) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, Call{Op: OpUpdateNIC, ID: n.ID, NIC: n})
	if err := d.failure(OpUpdateNIC, n.ID); err != nil {
		return err
	}
	old, ok := d.nics[n.ID]
	if !ok {
		return fmt.Errorf("modeltest: nic %q does not exist", n.ID)
	}
	n.Path = old.Path
	d.nics[n.ID] = n
	return nil
}

// DeleteNIC forgets the vNIC; unknown ids are not an error.
func (d *Dataplane) DeleteNIC(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, Call{Op: OpDeleteNIC, ID: id})
	if err := d.failure(OpDeleteNIC, id); err != nil {
		return err
	}
	delete(d.nics, id)
	return nil
}

// Stats returns the counters set with SetStats (zero by default).
func (d *Dataplane) Stats(id string) (model.NICStats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, Call{Op: OpStats, ID: id})
	if err := d.failure(OpStats, id); err != nil {
		return model.NICStats{}, err
	}
	if _, ok := d.nics[id]; !ok {
		return model.NICStats{}, fmt.Errorf("modeltest: nic %q does not exist", id)
	}
	return d.stats[id], nil
}

// Counters returns the counters set with SetCounters (zero by default).
func (d *Dataplane) Counters(id string) (model.NICCounters, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, Call{Op: OpCounters, ID: id})
	if err := d.failure(OpCounters, id); err != nil {
		return model.NICCounters{}, err
	}
	if _, ok := d.nics[id]; !ok {
		return model.NICCounters{}, fmt.Errorf("modeltest: nic %q does not exist", id)
	}
	c := d.counters[id]
	c.Drops = maps.Clone(c.Drops)
	return c, nil
}

// SetExport sets the data ExportNIC returns for id (by default: the
// Import the vNIC was added with, or nil).
func (d *Dataplane) SetExport(id string, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.exports[id] = slices.Clone(data)
}

// ExportNIC returns the data set with SetExport, else the vNIC's Import.
// An unknown id is an error.
func (d *Dataplane) ExportNIC(id string) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, Call{Op: OpExportNIC, ID: id})
	if err := d.failure(OpExportNIC, id); err != nil {
		return nil, err
	}
	n, ok := d.nics[id]
	if !ok {
		return nil, fmt.Errorf("modeltest: nic %q does not exist", id)
	}
	if b, ok := d.exports[id]; ok {
		return slices.Clone(b), nil
	}
	return slices.Clone(n.Import), nil
}

// DOT returns the text set with SetDOT.
func (d *Dataplane) DOT() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dot
}

// SetSecurityGroups records the groups.
func (d *Dataplane) SetSecurityGroups(sgs []model.SG) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, Call{Op: OpSetSecurityGroups, SGs: sgs})
	if err := d.failure(OpSetSecurityGroups, ""); err != nil {
		return err
	}
	d.sgs = sgs
	return nil
}

// SecurityGroups returns the groups last set with SetSecurityGroups.
func (d *Dataplane) SecurityGroups() []model.SG {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.sgs)
}
