package dataplane

import (
	"fmt"
	"os"

	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/pcap"
)

// traceFile resolves a vNIC's trace path (default pcap.FileName) in
// cfg.TraceDir.
func (e *Engine) traceFile(n model.NIC) (string, error) {
	name := n.TracePath
	if name == "" {
		name = pcap.FileName(os.Getpid(), n.ID)
	}
	return e.cfg.TraceDir.Resolve(name)
}

// tracePath is the file a vNIC's trace goes to; a path the trace
// directory refuses is returned as given, for openNICTrace to report.
func (e *Engine) tracePath(n model.NIC) string {
	p, err := e.traceFile(n)
	if err != nil {
		return n.TracePath
	}
	return p
}

// openNICTrace opens the vNIC's trace: its path must be in the trace
// directory and not used by another trace of this engine.
func (e *Engine) openNICTrace(ent *nicEntry, n model.NIC) error {
	path, err := e.traceFile(n)
	if err != nil {
		return fmt.Errorf("dataplane: vNIC %s: packet trace: %w", n.ID, err)
	}
	if path == e.cfg.TraceUnderlay {
		return fmt.Errorf("dataplane: vNIC %s: packet trace %s: the underlay trace writes it", n.ID, path)
	}
	for id, o := range e.nics {
		if o != ent && o.tracer != nil && o.tracePath == path {
			return fmt.Errorf("dataplane: vNIC %s: packet trace %s: vNIC %s traces to it", n.ID, path, id)
		}
	}
	if err := e.cfg.TraceDir.Prepare(); err != nil {
		return fmt.Errorf("dataplane: vNIC %s: packet trace: %w", n.ID, err)
	}
	t, err := e.hooks.openTrace(path)
	if err != nil {
		return fmt.Errorf("dataplane: vNIC %s: packet trace %s: %w", n.ID, path, err)
	}
	ent.tracer = t
	e.touch(ent)
	ent.tracePath = path
	return nil
}
