package network

import (
	"context"
	"time"

	"connectrpc.com/connect"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"
)

// Kinds Config.Tap is called with besides topics and procedures.
const (
	// TapGossipControl is the control part of a gossip RPC (IHAVE, IWANT, GRAFT, PRUNE, IDONTWANT).
	TapGossipControl = "gossip-control"
	// TapErrorSuffix follows the procedure of a peer RPC that ended in an error; the data is the
	// error's text as the other side sees it.
	TapErrorSuffix = " error"
)

// tapTracer shows Config.Tap every gossip message this node sends or receives.
type tapTracer struct {
	tap func(kind string, data []byte)
}

var _ pubsub.RawTracer = tapTracer{}

func (t tapTracer) rpc(rpc *pubsub.RPC) {
	for _, m := range rpc.GetPublish() {
		t.tap(m.GetTopic(), m.GetData())
	}
	if c := rpc.GetControl(); c != nil {
		if b, err := proto.Marshal(c); err == nil {
			t.tap(TapGossipControl, b)
		}
	}
}

func (t tapTracer) RecvRPC(rpc *pubsub.RPC)                            { t.rpc(rpc) }
func (t tapTracer) SendRPC(rpc *pubsub.RPC, _ peer.ID)                 { t.rpc(rpc) }
func (tapTracer) Join(string)                                          {}
func (tapTracer) Leave(string)                                         {}
func (tapTracer) Graft(peer.ID, string)                                {}
func (tapTracer) Prune(peer.ID, string)                                {}
func (tapTracer) ValidateMessage(*pubsub.Message)                      {}
func (tapTracer) DeliverMessage(*pubsub.Message)                       {}
func (tapTracer) RejectMessage(*pubsub.Message, string)                {}
func (tapTracer) DuplicateMessage(*pubsub.Message)                     {}
func (tapTracer) ThrottlePeer(peer.ID)                                 {}
func (tapTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (tapTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (tapTracer) UndeliverableMessage(*pubsub.Message)                 {}
func (tapTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (tapTracer) OnClosedOutboundStream(peer.ID)                       {}

// tapInterceptor shows Config.Tap every peer RPC message, request and answer, on the client and
// on the server side alike.
func tapInterceptor(tap func(kind string, data []byte)) connect.Interceptor {
	show := func(kind string, m any) {
		if pm, ok := m.(proto.Message); ok {
			if b, err := proto.Marshal(pm); err == nil {
				tap(kind, b)
			}
		}
	}
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			proc := req.Spec().Procedure
			show(proc, req.Any())
			resp, err := next(ctx, req)
			if err != nil {
				tap(proc+TapErrorSuffix, []byte(err.Error()))
				return resp, err
			}
			show(proc, resp.Any())
			return resp, nil
		}
	})
}
