package dataplane

import (
	"slices"

	"github.com/butterfly-go/butterfly/internal/model"
)

// SetSecurityGroups replaces the security groups (rules and members) the
// vNICs' firewalls are built from.
func (e *Engine) SetSecurityGroups(sgs []model.SG) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sgs = slices.Clone(sgs)
	return nil
}
