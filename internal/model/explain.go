package model

import "time"

// Explanation is a dataplane's account of what it would do now with a
// frame a vNIC sends (butterfly explain): one line per decision, in the
// order they are taken, and the verdict, "deliver <where>" or
// "drop <reason>" (a reason of NICCounters.Drops).
type Explanation struct {
	Steps   []string
	Verdict string
}

// MaxExplainFrame is the largest frame Explain takes (a TSO frame's size).
const MaxExplainFrame = 65535

// Explainer is a Dataplane that can explain a frame without sending it
// and without changing its state.
type Explainer interface {
	Explain(from string, frame []byte) (Explanation, error)
}

// Explain asks the dataplane what it would do now with frame if vNIC
// from sent it. An unknown vNIC is a not-found error; a dataplane that
// cannot explain is an invalid request.
func (s *Store) Explain(from string, frame []byte) (Explanation, error) {
	x, ok := s.dp.(Explainer)
	if !ok {
		return Explanation{}, Errorf(CodeInvalid, "Explain failed", "the dataplane cannot explain frames")
	}
	if len(frame) == 0 || len(frame) > MaxExplainFrame {
		return Explanation{}, Errorf(CodeInvalid, "Explain failed", "a frame of %d bytes (want 1 to %d)", len(frame), MaxExplainFrame)
	}
	return queryNIC(s, from, "Explain failed", func(id string) (Explanation, error) { return x.Explain(id, frame) })
}

// Drop is a frame a vNIC dropped (butterfly nic drops).
type Drop struct {
	Time time.Time
	// Reason is the drop reason, as in NICCounters.Drops.
	Reason string
	// Length is the frame's length; Decode describes its first bytes on
	// one line.
	Length int
	Decode string
}

// DropLogger is a Dataplane that keeps the last frames each vNIC dropped.
type DropLogger interface {
	Drops(id string, n int) ([]Drop, error)
}

// NICDrops returns the last n frames vNIC id dropped, oldest first (all
// it keeps when n < 0). An unknown vNIC is a not-found error; a dataplane
// that keeps no drops is an invalid request.
func (s *Store) NICDrops(id string, n int) ([]Drop, error) {
	d, ok := s.dp.(DropLogger)
	if !ok {
		return nil, Errorf(CodeInvalid, "NIC drops failed", "the dataplane keeps no dropped frames")
	}
	return queryNIC(s, id, "NIC drops failed", func(id string) ([]Drop, error) { return d.Drops(id, n) })
}

// NICIssue is a vNIC that cannot carry traffic now (app_status).
type NICIssue struct {
	ID string
	// Reason says what is wrong and what repairs it, on one line.
	Reason string
}

// IssueReporter is a Dataplane that reports the vNICs that cannot carry
// traffic now (e.g. a TAP whose network namespace is gone).
type IssueReporter interface {
	NICIssues() []NICIssue
}

// NICIssues returns the vNICs that cannot carry traffic now, sorted by
// id; none when the dataplane does not report them.
func (s *Store) NICIssues() []NICIssue {
	r, ok := s.dp.(IssueReporter)
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return r.NICIssues()
}

// AttachChecker is a Dataplane that tells whether a vNIC in a network
// namespace is attached to its device, in place (AddNIC uses it to keep
// such a vNIC when the same nic_add is replayed).
type AttachChecker interface {
	Attached(id string) bool
}
