package cli

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/model"
)

// fakeCluster answers the cluster requests with fixed data and refuses
// mutations as an unreachable etcd would.
type fakeCluster struct{}

var errDown = errors.New("cluster: etcd unavailable (unreachable or no quorum)")

func (fakeCluster) AddNIC(model.NIC) (string, error)    { return "", errDown }
func (fakeCluster) UpdateNIC(model.NICUpdate) error     { return errDown }
func (fakeCluster) DeleteNIC(string) error              { return errDown }
func (fakeCluster) AddSG(model.SG) error                { return errDown }
func (fakeCluster) DeleteSG(string) error               { return errDown }
func (fakeCluster) AddRule(string, model.Rule) error    { return errDown }
func (fakeCluster) DeleteRule(string, model.Rule) error { return errDown }
func (fakeCluster) AddMember(string, string) error      { return errDown }
func (fakeCluster) DeleteMember(string, string) error   { return errDown }
func (fakeCluster) Status() *protocol.MessageV0_ClusterStatus {
	return &protocol.MessageV0_ClusterStatus{Node: proto.String("h1"), Connected: proto.Bool(false), Revision: proto.Int64(7),
		Error: proto.String("context deadline exceeded"), Invalid: []string{"/butterfly/sgs/x: bad"}}
}
func (fakeCluster) Nodes() []*protocol.MessageV0_ClusterNode {
	return []*protocol.MessageV0_ClusterNode{
		{Name: proto.String("h1"), Vtep: proto.String("10.0.0.1"), Version: proto.String("v1"), Alive: proto.Bool(true), LastSeen: proto.Uint64(1700000000)},
		{Name: proto.String("h2"), Vtep: proto.String("10.0.0.2"), Version: proto.String("v1"), Alive: proto.Bool(false)},
	}
}
func (fakeCluster) NICs() []*protocol.MessageV0_ClusterNic {
	return []*protocol.MessageV0_ClusterNic{{Node: proto.String("h2"), Id: proto.String("vm1"), Vni: proto.Uint32(42), Mac: proto.String("52:54:00:00:00:01")}}
}

func TestClusterCommands(t *testing.T) {
	ts := startServer(t, serverOpts{cluster: fakeCluster{}})
	if got, want := ts.mustRun(t, "cluster", "nodes"), "h1 10.0.0.1 alive 2023-11-14T22:13:20Z v1\nh2 10.0.0.2 dead never v1\n"; got != want {
		t.Errorf("cluster nodes:\n%s\nwant:\n%s", got, want)
	}
	if got, want := ts.mustRun(t, "cluster", "nics"), "h2 vm1 42 52:54:00:00:00:01\n"; got != want {
		t.Errorf("cluster nics: %q, want %q", got, want)
	}
	st := ts.mustRun(t, "status")
	for _, w := range []string{"cluster node: h1\n", "cluster connected: false\n", "cluster revision: 7\n",
		"cluster error: context deadline exceeded\n", "cluster invalid record: /butterfly/sgs/x: bad\n"} {
		if !strings.Contains(st, w) {
			t.Errorf("status lacks %q:\n%s", w, st)
		}
	}
	r := ts.run("sg", "add", "web")
	if r.code != 1 || !strings.Contains(r.stderr, "etcd unavailable") {
		t.Errorf("sg add with etcd down: exit %d, stderr %q", r.code, r.stderr)
	}
	if got := ts.store.SGList(); len(got) != 0 {
		t.Errorf("the mutation reached the local store: %v", got)
	}

	standalone := startServer(t, serverOpts{})
	r = standalone.run("cluster", "nodes")
	if r.code != 1 || !strings.Contains(r.stderr, "not in cluster mode") {
		t.Errorf("cluster nodes in standalone mode: exit %d, stderr %q", r.code, r.stderr)
	}
	if st := standalone.mustRun(t, "status"); strings.Contains(st, "cluster") {
		t.Errorf("standalone status mentions the cluster:\n%s", st)
	}
}
