package apiv0

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/explain"
	"github.com/butterfly-go/butterfly/internal/model"
	"github.com/butterfly-go/butterfly/internal/packet"
	"google.golang.org/protobuf/proto"
)

// This file serves the diagnostic extensions: explain and nic_drops.

// explainPrefix starts the description of a refused explain request.
const explainPrefix = "Explain failed"

// explain answers Request.explain: the frame given or built from the
// description, explained by the dataplane.
func (h *Handler) explain(r *protocol.MessageV0_ExplainReq, res *protocol.MessageV0_Response) error {
	s := h.store
	from := r.GetNicId()
	frame := r.GetFrame()
	if len(frame) == 0 {
		nics, err := s.NICDetails("")
		if err != nil {
			return err
		}
		var src *model.NIC
		for i := range nics {
			if nics[i].ID == from {
				src = &nics[i]
			}
		}
		if src == nil {
			_, err := s.NICDetails(from) // the not-found error
			return err
		}
		q, err := question(r)
		if err != nil {
			return replyError(fmt.Sprintf("%s: %v", explainPrefix, err))
		}
		if frame, err = explain.Build(q, *src, nics); err != nil {
			return replyError(fmt.Sprintf("%s: %v", explainPrefix, err))
		}
	}
	x, err := s.Explain(from, frame)
	if err != nil {
		return err
	}
	res.Explain = &protocol.MessageV0_ExplainRes{Step: x.Steps, Verdict: proto.String(x.Verdict)}
	return nil
}

// question converts a described frame.
func question(r *protocol.MessageV0_ExplainReq) (explain.Question, error) {
	var q explain.Question
	var err error
	if r.Dst == nil {
		return q, errors.New("a destination address or a frame is needed")
	}
	if q.Dst, err = netip.ParseAddr(r.GetDst()); err != nil {
		return q, fmt.Errorf("destination: %w", err)
	}
	if r.Src != nil {
		if q.Src, err = netip.ParseAddr(r.GetSrc()); err != nil {
			return q, fmt.Errorf("source: %w", err)
		}
	}
	if r.Protocol == nil {
		return q, errors.New("a protocol is needed")
	}
	if r.GetProtocol() > 255 {
		return q, fmt.Errorf("protocol %d is not in [0, 255]", r.GetProtocol())
	}
	q.Proto = uint8(r.GetProtocol())
	if r.GetSport() > 65535 || r.GetDport() > 65535 {
		return q, fmt.Errorf("ports must be in [0, 65535]")
	}
	q.SPort, q.DPort = uint16(r.GetSport()), uint16(r.GetDport())
	if r.GetTcpFlags() > 255 {
		return q, fmt.Errorf("TCP flags %d are not in [0, 255]", r.GetTcpFlags())
	}
	q.TCPFlags = uint8(r.GetTcpFlags())
	if r.DstMac != nil {
		m, err := model.ParseMAC(r.GetDstMac())
		if err != nil {
			return q, fmt.Errorf("destination MAC: %w", err)
		}
		pm := packet.MAC(m)
		q.DstMAC = &pm
	}
	return q, nil
}

// nicDrops answers Request.nic_drops.
func (h *Handler) nicDrops(r *protocol.MessageV0_NicDropsReq, res *protocol.MessageV0_Response) error {
	n := -1
	if r.Count != nil {
		n = int(min(r.GetCount(), 1<<20))
	}
	drops, err := h.store.NICDrops(r.GetNicId(), n)
	if err != nil {
		return err
	}
	out := &protocol.MessageV0_NicDrops{}
	for _, d := range drops {
		out.Frame = append(out.Frame, &protocol.MessageV0_DroppedFrame{
			TimeNs: proto.Int64(d.Time.UnixNano()),
			Reason: proto.String(d.Reason),
			Length: proto.Uint32(uint32(d.Length)),
			Decode: proto.String(d.Decode),
		})
	}
	res.NicDrops = out
	return nil
}
