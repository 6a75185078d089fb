package main

import (
	"context"
	"errors"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
)

// isOurs reports whether vNIC n was created by this plugin for network c:
// its id has the plugin's prefix, it is a TAP in a namespace in c's VNI, and its MAC is the one
// nicMAC derives from c's name and the id. The MAC is a hash of both, so
// no vNIC of another network, nor one created by anything else, matches
// by chance (46 bits).
func isOurs(c *netConf, n *protocol.MessageV0_Nic) bool {
	id := n.GetId()
	return strings.HasPrefix(id, nicPrefix) && n.GetType() == protocol.MessageV0_Nic_TAP && n.GetNetns() != "" &&
		n.GetVni() == *c.VNI && strings.EqualFold(n.GetMac(), nicMAC(c.Name, id).String())
}

// cmdGC (CNI 1.1) deletes the vNICs this plugin created for the network
// whose attachment is not in cni.dev/valid-attachments, with their kept
// results (the runtime sent no DEL for them: it lost track, or an ADD was
// interrupted), then has the IPAM plugin release its stale reservations.
// Other vNICs are never touched (see isOurs).
func cmdGC(args *skel.CmdArgs) error {
	c, d, err := loadAndDial(args)
	if err != nil {
		return err
	}
	defer d.close()
	valid := map[string]bool{}
	for _, a := range c.ValidAttachments {
		valid[nicID(a.ContainerID, a.IfName)] = true
	}
	r, err := d.call(&protocol.MessageV0_Request{NicList: proto.Bool(true)})
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, "cannot list butterflyd's vNICs", err.Error())
	}
	var errs []error
	for _, id := range r.GetNicList() {
		if !strings.HasPrefix(id, nicPrefix) || valid[id] {
			continue
		}
		n, err := d.details(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if n == nil || !isOurs(c, n) {
			continue // deleted meanwhile, or not ours
		}
		if _, err := d.call(&protocol.MessageV0_Request{NicDel: proto.String(id)}); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(resultPath(c, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return types.NewError(types.ErrTryAgainLater, "could not collect every stale vNIC", err.Error())
	}
	if err := invoke.DelegateGC(context.Background(), c.IPAM.Type, args.StdinData, nil); err != nil {
		return types.NewError(types.ErrTryAgainLater, "IPAM plugin "+c.IPAM.Type+" failed to collect", err.Error())
	}
	return nil
}
