// Command butterfly-cni is a CNI plugin (spec 1.0 and 1.1: ADD, DEL,
// CHECK, STATUS, GC, VERSION) that attaches a container to a Butterfly
// network: it asks butterflyd, over its API, for a TAP vNIC created in
// the container's network namespace, delegates address allocation to the
// configured IPAM plugin, and configures the addresses and routes in the
// namespace. See the README's "CNI plugin" section for the configuration.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus, GC: cmdGC},
		version.All, "butterfly-cni: Butterfly TAP vNICs for containers")
}
