package api

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
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

// maxIntrospectionBody bounds the form of an introspection request: a token and a hint.
const maxIntrospectionBody = 8 << 10

// introspect serves RFC 7662 token introspection for the custodian's resource server: a
// form-encoded POST with the token, authenticated like every other API call; the answer is the
// RFC 7662 JSON body, {"active":false} for any token that is not in force.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-www-form-urlencoded" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxIntrospectionBody)
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "the form could not be read")
		return
	}
	token := r.PostForm.Get("token")
	if token == "" || len(r.PostForm["token"]) != 1 {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "exactly one token parameter is required")
		return
	}
	resp, err := s.backend.Introspect(r.Context(), &schakelv1.IntrospectRequest{Token: token})
	if err != nil {
		writeHTTPError(w, r, s.log, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(resp.GetJson()))
}

// writeOAuthError writes an OAuth 2.0 error response (RFC 6749 §5.2).
func writeOAuthError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"error": code, "error_description": description})
	_, _ = w.Write(b)
}
