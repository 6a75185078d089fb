// Package apiv0 serves MessageV0 requests (the original Butterfly API,
// protocol revision 6, plus this implementation's extensions) on a
// model.Store: it converts messages to model calls and model results and
// errors back to messages.
package apiv0

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/logging"
	"github.com/butterfly-go/butterfly/internal/model"
	"google.golang.org/protobuf/proto"
)

// Options configure a Handler. Every field is optional.
type Options struct {
	// Persist saves a change of the state. It is called after every
	// request that changed the state, before the reply, with what changed
	// since the previous call (model.Store.TakeChanges: every change is
	// given once); an error turns the reply into an error (the change
	// stays applied in memory, and Persist must keep it for its next
	// call, as state.Store.SaveChange does). The objects' lists are
	// shared with the Store and must not be written (Persist may keep
	// them).
	Persist func(model.Change) error
	// Quit is called by app_quit before the OK reply is returned; the
	// server sends the reply, then stops.
	Quit func()
	// SetLogLevel applies a log level from app_config (one of
	// logging.LevelNames(), already checked).
	SetLogLevel func(level string) error
	// Requests returns the number of requests served (app_status).
	Requests func() uint64
	// StartTime is the daemon's start time (app_status).
	StartTime time.Time
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger logs failed requests at debug level; nil means slog.Default.
	Logger *slog.Logger
	// Cluster, when set (cluster mode), takes every mutation instead of
	// the Store: the Store then follows the cluster, and queries still
	// read it. It also answers cluster_nodes and cluster_nics and adds
	// its status to app_status.
	Cluster Cluster
}

// Cluster is what the API needs of cluster mode (*cluster.Agent): the
// mutations, with the Store's semantics and errors, and the cluster's
// state.
type Cluster interface {
	AddNIC(n model.NIC) (path string, err error)
	UpdateNIC(u model.NICUpdate) error
	DeleteNIC(id string) error
	AddSG(sg model.SG) error
	DeleteSG(id string) error
	AddRule(sgID string, r model.Rule) error
	DeleteRule(sgID string, r model.Rule) error
	AddMember(sgID, ip string) error
	DeleteMember(sgID, ip string) error
	Status() *protocol.MessageV0_ClusterStatus
	Nodes() []*protocol.MessageV0_ClusterNode
	NICs() []*protocol.MessageV0_ClusterNic
}

// mutations is what the requests change: the Store, or the cluster.
type mutations interface {
	AddNIC(n model.NIC) (string, error)
	UpdateNIC(u model.NICUpdate) error
	DeleteNIC(id string) error
	AddSG(sg model.SG) error
	DeleteSG(id string) error
	AddRule(sgID string, r model.Rule) error
	DeleteRule(sgID string, r model.Rule) error
	AddMember(sgID, ip string) error
	DeleteMember(sgID, ip string) error
}

// Handler answers MessageV0 requests. It is safe for concurrent use;
// requests that change the state are serialized so that states are
// persisted in order.
type Handler struct {
	store *model.Store
	opts  Options
	log   *slog.Logger
	// mu serializes mutations with their Persist call.
	mu      sync.Mutex
	metrics *metrics
}

// New returns a Handler serving store.
func New(store *model.Store, opts Options) *Handler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := opts.Logger
	if l == nil {
		l = slog.Default()
	}
	return &Handler{store: store, opts: opts, log: l, metrics: newMetrics()}
}

// Handle answers one MessageV0. The reply is never nil: it carries the
// request's message_id and a response with its status set. Only the first
// request field set (in field-number order) is served. Each request is
// counted and timed (Collector).
func (h *Handler) Handle(req *protocol.MessageV0) *protocol.MessageV0 {
	start := time.Now()
	res := &protocol.MessageV0_Response{}
	reply := &protocol.MessageV0{Response: res}
	if req != nil && req.MessageId != nil {
		reply.MessageId = proto.String(req.GetMessageId())
	}
	var err error
	if req.GetRequest() == nil {
		err = replyError("MessageV0 appears to not have any request inside")
	} else {
		err = h.dispatch(req.GetRequest(), res)
	}
	h.metrics.observe(requestKind(req.GetRequest()), time.Since(start), err != nil)
	if err != nil {
		h.log.Debug("api request failed", "message_id", req.GetMessageId(), "error", err)
		desc := err.Error()
		*res = protocol.MessageV0_Response{
			Status: &protocol.MessageV0_Status{
				Status: proto.Bool(false),
				Error:  &protocol.MessageV0_Error{Description: proto.String(desc)},
			},
		}
		return reply
	}
	res.Status = &protocol.MessageV0_Status{Status: proto.Bool(true)}
	return reply
}

func (h *Handler) dispatch(r *protocol.MessageV0_Request, res *protocol.MessageV0_Response) error {
	s := h.store
	var m mutations = s
	if h.opts.Cluster != nil {
		m = h.opts.Cluster
	}
	switch {
	case r.NicAdd != nil:
		n, err := nicFromProto(r.NicAdd, s.DefaultPacketTrace(), s.DefaultVhostClient())
		if err != nil {
			return err
		}
		var path string
		err = h.mutate(func() (err error) {
			path, err = m.AddNIC(n)
			return err
		})
		if err != nil {
			return err
		}
		res.NicAdd = &protocol.MessageV0_NicAddRes{Path: proto.String(path)}
	case r.NicUpdate != nil:
		u := nicUpdateFromProto(r.NicUpdate)
		return h.mutate(func() error { return m.UpdateNIC(u) })
	case r.NicDel != nil:
		return h.mutate(func() error { return m.DeleteNIC(r.GetNicDel()) })
	case r.NicList != nil:
		res.NicList = s.NICList()
	case r.NicDetails != nil:
		nics, err := s.NICDetails(r.GetNicDetails())
		if err != nil {
			return err
		}
		for _, n := range nics {
			res.NicDetails = append(res.NicDetails, nicToProto(n, s.DefaultVhostClient()))
		}
	case r.NicExport != nil:
		// The vNIC's tracked connections in the firewall's export
		// format (the original left the data empty); nic_add's
		// fw_import takes them on another host.
		data, err := s.NICExport(r.GetNicExport())
		if err != nil {
			return err
		}
		if data == nil {
			data = []byte{} // always present, as in the original
		}
		res.NicExport = &protocol.MessageV0_NicExportRes{
			FwData: &protocol.MessageV0_FwData{Data: data},
		}
	case r.NicStats != nil:
		st, err := s.NICStats(r.GetNicStats())
		if err != nil {
			return err
		}
		res.NicStats = &protocol.MessageV0_NicStats{In: proto.Uint64(st.In), Out: proto.Uint64(st.Out)}
	case r.SgAdd != nil:
		sg, err := sgFromProto(r.SgAdd)
		if err != nil {
			return err
		}
		return h.mutate(func() error { return m.AddSG(sg) })
	case r.SgDel != nil:
		return h.mutate(func() error { return m.DeleteSG(r.GetSgDel()) })
	case r.SgList != nil:
		res.SgList = s.SGList()
	case r.SgRuleAdd != nil:
		rule, err := ruleFromProto(r.SgRuleAdd.GetRule())
		if err != nil {
			return model.Errorf(model.CodeInvalid, model.TextBadRule, "%v", err)
		}
		return h.mutate(func() error { return m.AddRule(r.SgRuleAdd.GetSgId(), rule) })
	case r.SgRuleDel != nil:
		rule, err := ruleFromProto(r.SgRuleDel.GetRule())
		if err != nil {
			return model.Errorf(model.CodeInvalid, model.TextBadRule, "%v", err)
		}
		return h.mutate(func() error { return m.DeleteRule(r.SgRuleDel.GetSgId(), rule) })
	case r.SgRuleList != nil:
		rules, err := s.Rules(r.GetSgRuleList())
		if err != nil {
			return err
		}
		for _, rule := range rules {
			res.SgRuleList = append(res.SgRuleList, ruleToProto(rule))
		}
	case r.SgMemberAdd != nil:
		sm := r.SgMemberAdd
		return h.mutate(func() error { return m.AddMember(sm.GetSgId(), sm.GetMember()) })
	case r.SgMemberDel != nil:
		sm := r.SgMemberDel
		return h.mutate(func() error { return m.DeleteMember(sm.GetSgId(), sm.GetMember()) })
	case r.SgMemberList != nil:
		members, err := s.Members(r.GetSgMemberList())
		if err != nil {
			return err
		}
		res.SgMemberList = members
	case r.AppStatus != nil:
		st := &protocol.MessageV0_AppStatusRes{
			StartDate:   proto.Uint64(unixSeconds(h.opts.StartTime)),
			CurrentDate: proto.Uint64(unixSeconds(h.opts.Now())),
			GraphDot:    proto.String(s.DOT()),
		}
		for _, is := range s.NICIssues() {
			st.NicIssues = append(st.NicIssues, &protocol.MessageV0_NicIssue{NicId: proto.String(is.ID), Reason: proto.String(is.Reason)})
		}
		if h.opts.Requests != nil {
			st.RequestCounter = proto.Uint64(h.opts.Requests())
		} else {
			st.RequestCounter = proto.Uint64(0)
		}
		if h.opts.Cluster != nil {
			st.Cluster = h.opts.Cluster.Status()
		}
		res.AppStatus = st
	case r.AppQuit != nil:
		if h.opts.Quit != nil {
			h.opts.Quit()
		}
	case r.AppConfig != nil:
		return h.appConfig(r.AppConfig)
	case r.SgDetails != nil:
		sgs, err := s.SGDetails(r.GetSgDetails())
		if err != nil {
			return err
		}
		for _, sg := range sgs {
			res.SgDetails = append(res.SgDetails, sgToProto(sg))
		}
	case r.NicCounters != nil:
		c, err := s.NICCounters(r.GetNicCounters())
		if err != nil {
			return err
		}
		res.NicCounters = countersToProto(c)
	case r.Explain != nil:
		return h.explain(r.Explain, res)
	case r.NicDrops != nil:
		return h.nicDrops(r.NicDrops, res)
	case r.ClusterNodes != nil, r.ClusterNics != nil:
		if h.opts.Cluster == nil {
			return replyError("Cluster request failed: this daemon is not in cluster mode (butterflyd --etcd)")
		}
		if r.ClusterNodes != nil {
			res.ClusterNodes = h.opts.Cluster.Nodes()
		} else {
			res.ClusterNics = h.opts.Cluster.NICs()
		}
	default:
		return replyError("MessageV0 appears to not have any request")
	}
	return nil
}

// mutate runs op and, if the state changed, persists the change. The
// change is taken from the Store even without Persist, so that the
// Store's change set stays small. In cluster mode op writes to etcd and
// the cluster agent applies and persists what changes.
func (h *Handler) mutate(op func() error) error {
	if h.opts.Cluster != nil {
		return op()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	before := h.store.Generation()
	if err := op(); err != nil {
		return err
	}
	if h.store.Generation() == before {
		return nil
	}
	ch := h.store.TakeChanges()
	if h.opts.Persist == nil {
		return nil
	}
	if err := h.opts.Persist(ch); err != nil {
		return &wrapError{"Internal error: the change is applied but the state could not be saved", err}
	}
	return nil
}

func (h *Handler) appConfig(c *protocol.MessageV0_AppConfigReq) error {
	if c.LogLevel == nil {
		return nil
	}
	level := c.GetLogLevel()
	if !slices.Contains(logging.LevelNames(), level) {
		return replyError(fmt.Sprintf("Application configuration failed: log level: failed: unknown level %q (want one of %s)",
			level, strings.Join(logging.LevelNames(), ", ")))
	}
	if h.opts.SetLogLevel != nil {
		if err := h.opts.SetLogLevel(level); err != nil {
			return &wrapError{"Application configuration failed: log level: failed", err}
		}
	}
	return nil
}

func countersToProto(c model.NICCounters) *protocol.MessageV0_NicCounters {
	m := &protocol.MessageV0_NicCounters{
		RxPackets: proto.Uint64(c.RxPackets),
		RxBytes:   proto.Uint64(c.RxBytes),
		TxPackets: proto.Uint64(c.TxPackets),
		TxBytes:   proto.Uint64(c.TxBytes),
	}
	names := make([]string, 0, len(c.Drops))
	for k := range c.Drops {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		m.Drops = append(m.Drops, &protocol.MessageV0_Counter{Name: proto.String(k), Value: proto.Uint64(c.Drops[k])})
	}
	for i, q := range c.Queues {
		m.Queues = append(m.Queues, &protocol.MessageV0_QueueCounters{
			Queue: proto.Uint32(uint32(i)), RxPackets: proto.Uint64(q.RxPackets), TxPackets: proto.Uint64(q.TxPackets)})
	}
	return m
}

func unixSeconds(t time.Time) uint64 {
	if t.IsZero() || t.Unix() < 0 {
		return 0
	}
	return uint64(t.Unix())
}

// replyError is an error whose text is the reply's description as is.
type replyError string

func (e replyError) Error() string { return string(e) }

// wrapError is a reply description followed by its cause.
type wrapError struct {
	text string
	err  error
}

func (e *wrapError) Error() string { return e.text + ": " + e.err.Error() }
func (e *wrapError) Unwrap() error { return e.err }
