package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// readyTimeout bounds one readiness check, so that a stuck subsystem makes /readyz fail rather than
// hang the prober.
const readyTimeout = 5 * time.Second

// healthz answers 200 whenever the process serves HTTP: liveness, not readiness.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

// readyz answers 200 when Backend.Ready reports the node can serve, else 503 with its reason.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.backend.Ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// metricsHandler serves Config.Registry in the Prometheus exposition format.
func (s *Server) metricsHandler() http.HandlerFunc {
	h := promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{Registry: s.cfg.Registry})
	return h.ServeHTTP
}

// jwks serves the JSON Web Key Set (RFC 7517 §5) of a hosted organisation at
// /orgs/{did}/jwks.json, for relying parties that verify its tokens and credentials.
func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	did := r.PathValue("did")
	if !strings.HasPrefix(did, "did:") {
		writeHTTPError(w, r, s.log, fmt.Errorf("%q is not a DID: %w", did, ErrInvalidArgument))
		return
	}
	set, err := s.backend.JWKS(r.Context(), did)
	if err != nil {
		writeHTTPError(w, r, s.log, err)
		return
	}
	if len(set) == 0 {
		writeHTTPError(w, r, s.log, fmt.Errorf("JWKS of %s: backend returned an empty key set", did))
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(set)
}
