package apiv0_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/firewall"
	"github.com/butterfly-go/butterfly/internal/model/modeltest"
	"google.golang.org/protobuf/encoding/prototext"
)

// nicAddImport is nic1's nic_add with fw_import set to data, in text
// format.
func nicAddImport(t *testing.T, data []byte) string {
	t.Helper()
	req := &protocol.MessageV0_Request{}
	if err := prototext.Unmarshal([]byte(nic1), req); err != nil {
		t.Fatal(err)
	}
	req.NicAdd.FwImport = &protocol.MessageV0_FwData{Data: data}
	return prototext.Format(req)
}

func lastAdd(t *testing.T, dp *modeltest.Dataplane) modeltest.Call {
	t.Helper()
	calls := dp.Calls()
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].Op == modeltest.OpAddNIC {
			return calls[i]
		}
	}
	t.Fatal("no AddNIC call")
	return modeltest.Call{}
}

func TestNICExportImport(t *testing.T) {
	e := newEnv(t)
	valid := firewall.NewConntrack(1).Export(0)

	e.ok(t, nicAddImport(t, valid), `nic_add { path: "/tmp/qemu-vhost-nic-1" }`)
	if got := lastAdd(t, e.dp).NIC.Import; !bytes.Equal(got, valid) {
		t.Fatalf("dataplane got import %x, want %x", got, valid)
	}
	res := e.do(t, `nic_details: "nic-1"`)
	if res.GetNicDetails()[0].FwImport != nil {
		t.Error("nic_details echoes fw_import")
	}
	js, _ := json.Marshal(e.persists[len(e.persists)-1])
	if bytes.Contains(js, []byte("import")) {
		t.Errorf("saved state holds the import: %s", js)
	}

	// nic_export returns the dataplane's data as is.
	e.dp.SetExport("nic-1", []byte{0, 1, 0xff})
	e.ok(t, `nic_export: "nic-1"`, `nic_export { fw_data { data: "\x00\x01\xff" } }`)
	e.fail(t, `nic_export: "nope"`, "NIC does not exist with id nope")

	// Bad data: refused before the existing nic-1 is touched.
	bad := bytes.Clone(valid)
	bad[4] = 9
	calls := len(e.dp.Calls())
	e.fail(t, nicAddImport(t, bad), "Bad NIC format: fw_import: invalid connection-tracking export: version 2305 is not supported")
	if len(e.dp.Calls()) != calls {
		t.Errorf("the dataplane was called: %+v", e.dp.Calls()[calls:])
	}
	e.fail(t, nicAddImport(t, []byte("BFCT")), "Bad NIC format: fw_import: invalid connection-tracking export: 4 bytes")

	// Empty data (what the original's nic_export returns) imports nothing.
	e.ok(t, nicAddImport(t, []byte{}), `nic_add { path: "/tmp/qemu-vhost-nic-1" }`)
	if got := lastAdd(t, e.dp).NIC.Import; got != nil {
		t.Errorf("empty fw_import reached the dataplane as %x", got)
	}
}
