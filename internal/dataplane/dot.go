package dataplane

import (
	"fmt"
	"sort"
	"strings"
)

// DOT returns the graph of elements in the DOT language, in the style of
// the original (strict graph, record nodes "type:name", west/east ports).
// Frames from a VM go port-rx -> trace -> antispoof -> firewall -> switch
// -> firewall (of the receiver) -> port-tx or vxlan-encap -> underlay-tx;
// frames from the network go underlay-rx -> vxlan-decap -> switch -> trace
// -> firewall -> port-tx. A vNIC that bypasses filtering has neither
// antispoof nor firewall.
func (e *Engine) DOT() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	b.WriteString("strict graph G {\n  rankdir=LR\n  nodesep=1\n  node [shape=record];\n")
	node := func(el *element) {
		fmt.Fprintf(&b, "  %q [ label=\"{ <west> | %s&#92;n%s |<east> }\"];\n",
			el.kind+":"+el.name, el.kind, el.name)
	}
	edge := func(a, c *element) {
		fmt.Fprintf(&b, "  %q:east -- %q:west\n", a.kind+":"+a.name, c.kind+":"+c.name)
	}
	vnis := make([]uint32, 0, len(e.vnis))
	for v := range e.vnis {
		vnis = append(vnis, v)
	}
	sort.Slice(vnis, func(i, j int) bool { return vnis[i] < vnis[j] })
	ids := make([]string, 0, len(e.nics))
	for id := range e.nics {
		ids = append(ids, id)
	}
	sort.Strings(ids)

	nodes := []*element{e.urx, e.decap, e.encap, e.utx}
	if e.utrace != nil {
		nodes = append(nodes, e.utraceEl)
	}
	for _, v := range vnis {
		nodes = append(nodes, e.vnis[v].sw)
	}
	for _, id := range ids {
		n := e.nics[id]
		nodes = append(nodes, n.p.rx)
		if n.tracer != nil {
			nodes = append(nodes, n.p.trace)
		}
		if !n.nic.Bypass {
			nodes = append(nodes, n.p.anti, n.p.fw)
		}
		nodes = append(nodes, n.p.tx)
	}
	for _, el := range nodes {
		node(el)
	}
	if e.utrace != nil {
		edge(e.urx, e.utraceEl)
		edge(e.utraceEl, e.decap)
		edge(e.encap, e.utraceEl)
		edge(e.utraceEl, e.utx)
	} else {
		edge(e.urx, e.decap)
		edge(e.encap, e.utx)
	}
	for _, v := range vnis {
		edge(e.decap, e.vnis[v].sw)
		edge(e.vnis[v].sw, e.encap)
	}
	for _, id := range ids {
		n := e.nics[id]
		sw := e.vnis[n.nic.VNI].sw
		// From the VM: port-rx [-> trace] [-> antispoof -> firewall] -> switch.
		// To the VM: switch [-> firewall] [-> trace] -> port-tx.
		prev := n.p.rx
		in := sw
		if n.tracer != nil {
			edge(prev, n.p.trace)
			prev = n.p.trace
		}
		if !n.nic.Bypass {
			edge(prev, n.p.anti)
			edge(n.p.anti, n.p.fw)
			edge(in, n.p.fw)
			prev, in = n.p.fw, n.p.fw
		}
		if n.tracer != nil {
			edge(in, n.p.trace)
			in = n.p.trace
		}
		edge(in, n.p.tx)
		edge(prev, sw)
	}
	b.WriteString("}\n")
	return b.String()
}
