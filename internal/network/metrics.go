package network

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the network's Prometheus metrics.
type metrics struct {
	peers          prometheus.GaugeFunc
	admitted       prometheus.GaugeFunc
	held           prometheus.GaugeFunc
	peersRefused   prometheus.Counter
	streamsRefused prometheus.Counter
	streamsLimited prometheus.Counter
	membersRefused prometheus.Counter
	documents      *prometheus.CounterVec
	gossip         *prometheus.CounterVec
	syncRounds     *prometheus.CounterVec
	syncBytes      *prometheus.CounterVec
	delivered      prometheus.Counter
	tokenRequests  prometheus.Counter
}

func newMetrics(n *Network) *metrics {
	return &metrics{
		peers: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "schakel_peers_connected", Help: "Peers with an open connection."},
			func() float64 {
				if n.host == nil {
					return 0
				}
				return float64(len(n.host.Network().Peers()))
			}),
		admitted: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "schakel_peers_admitted", Help: "Connected peers admitted."},
			func() float64 { return float64(len(n.AdmittedPeers())) }),
		held: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "schakel_documents_held", Help: "Documents waiting for one they depend on."},
			func() float64 { return float64(n.held.len()) }),
		peersRefused:   prometheus.NewCounter(prometheus.CounterOpts{Name: "schakel_peers_refused_total", Help: "Peers disconnected and refused at admission."}),
		streamsRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "schakel_streams_refused_total", Help: "RPC streams refused because the peer was not admitted."}),
		streamsLimited: prometheus.NewCounter(prometheus.CounterOpts{Name: "schakel_peer_calls_stream_limited_total", Help: "Token requests retried because the resource manager had no outbound stream free."}),
		membersRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "schakel_members_refused_total", Help: "memberlist members refused (bad record or not admitted)."}),
		documents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "schakel_documents_received_total", Help: "Public documents received, by source and result."},
			[]string{"source", "result"}),
		gossip: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "schakel_gossip_messages_total", Help: "Gossip messages by topic and result (published, accepted, ignored, rejected)."},
			[]string{"topic", "result"}),
		syncRounds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "schakel_sync_rounds_total", Help: "Reconciliation rounds started by this node, by result."},
			[]string{"result"}),
		syncBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "schakel_sync_bytes_total", Help: "Bytes of reconciliation and fetched documents, by direction."},
			[]string{"direction"}),
		delivered:     prometheus.NewCounter(prometheus.CounterOpts{Name: "schakel_private_messages_received_total", Help: "Private messages delivered to this node."}),
		tokenRequests: prometheus.NewCounter(prometheus.CounterOpts{Name: "schakel_peer_token_requests_total", Help: "Token requests peers carried to this node."}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.peers, m.admitted, m.held, m.peersRefused, m.streamsRefused, m.streamsLimited, m.membersRefused,
		m.documents, m.gossip, m.syncRounds, m.syncBytes, m.delivered, m.tokenRequests} {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}
