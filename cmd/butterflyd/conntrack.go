package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/model"
)

// conntrackFile is where a clean stop saves the vNICs' connection
// tables, next to the state file.
func conntrackFile(stateFile string) string { return stateFile + ".conntrack" }

// saveConntrack writes every vNIC's tracked connections (the firewall's
// export format, as nic_export) to conntrackFile, so that the restarted
// daemon's firewalls know the connections established before the stop
// (after a SIGKILL there is no file: those connections are unknown to
// the new firewall). Failures are logged: the stop goes on.
func (d *daemon) saveConntrack(store *model.Store, dp engine) {
	if d.cfg.StateFile == "" {
		return
	}
	tables := map[string][]byte{}
	for _, n := range store.State().NICs {
		data, err := dp.ExportNIC(n.ID)
		if err != nil {
			d.log.Warn("connection table not saved", "nic", n.ID, "err", err)
			continue
		}
		tables[n.ID] = data
	}
	b, err := json.Marshal(tables)
	if err == nil {
		path := conntrackFile(d.cfg.StateFile)
		if err = os.WriteFile(path+".tmp", b, 0o600); err == nil {
			err = os.Rename(path+".tmp", path)
		}
	}
	if err != nil {
		d.log.Error("saving the connection tables", "err", err)
		return
	}
	d.log.Info("connection tables saved", "nics", len(tables))
}

// loadConntrack gives st's vNICs the connection tables a clean stop saved
// (NIC.Import) and removes the file, which is used once. Tables that do
// not parse are left out (the vNIC starts with an empty table).
func (d *daemon) loadConntrack(st *model.State) {
	path := conntrackFile(d.cfg.StateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if rerr := os.Remove(path); rerr != nil {
		d.log.Error("removing the saved connection tables", "err", rerr)
	}
	tables := map[string][]byte{}
	if err == nil {
		err = json.Unmarshal(b, &tables)
	}
	if err != nil {
		d.log.Error("saved connection tables not loaded", "err", fmt.Errorf("%s: %w", path, err))
		return
	}
	for i, n := range st.NICs {
		data, ok := tables[n.ID]
		if !ok || len(data) == 0 {
			continue
		}
		if _, err := firewall.ParseExport(data); err != nil {
			d.log.Error("saved connection table not loaded", "nic", n.ID, "err", err)
			continue
		}
		st.NICs[i].Import = data
	}
}
