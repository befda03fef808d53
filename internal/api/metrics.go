package api

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics holds the per-RPC collectors. Labels are the procedure ("/schakel.v1.NodeService/GetNodeInfo")
// and the outcome code ("ok" or a Connect code such as "not_found"); both sets are bounded, because
// only registered procedures reach a handler.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// newMetrics registers the Go and process collectors and the RPC collectors on reg. Collectors
// already registered (by node, or by an earlier Server on the same registry) are reused, not an error.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if _, err := register(reg, c); err != nil {
			return nil, err
		}
	}
	requests, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "schakel",
		Subsystem: "api",
		Name:      "requests_total",
		Help:      "RPCs handled by the internal API, by procedure and outcome code.",
	}, []string{"procedure", "code"}))
	if err != nil {
		return nil, err
	}
	latency, err := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "schakel",
		Subsystem: "api",
		Name:      "request_duration_seconds",
		Help:      "Time to handle an RPC of the internal API, by procedure and outcome code.",
		// 100µs to 26s: a loopback unary call takes about 0.2 ms, a signing call a few ms.
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	}, []string{"procedure", "code"}))
	if err != nil {
		return nil, err
	}
	return &metrics{requests: requests, latency: latency}, nil
}

// register registers c on reg, or returns the equal collector registered before.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
		return c, nil
	}
	return c, err
}

// observe records one finished RPC.
func (m *metrics) observe(procedure string, start time.Time, err error) {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	m.requests.WithLabelValues(procedure, code).Inc()
	m.latency.WithLabelValues(procedure, code).Observe(time.Since(start).Seconds())
}

// interceptor returns the handler interceptor that counts and times every RPC, unary and streaming
// (server reflection is a bidirectional stream). RPCs refused before the handler runs (no token,
// oversized message) are not counted.
func (m *metrics) interceptor() connect.Interceptor { return metricsInterceptor{m} }

type metricsInterceptor struct{ m *metrics }

func (i metricsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		start := time.Now()
		resp, err := next(ctx, req)
		i.m.observe(req.Spec().Procedure, start, err)
		return resp, err
	}
}

func (i metricsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i metricsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		i.m.observe(conn.Spec().Procedure, start, err)
		return err
	}
}
