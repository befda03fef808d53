package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"connectrpc.com/connect"
)

// Sentinel errors a Backend wraps with %w to choose the status the caller sees. The wrapping
// message is sent to the caller as it is, so it MUST say what was wrong with the request and MUST NOT
// contain secrets or patient identifiers.
var (
	// ErrInvalidArgument: the request is malformed or names something in the wrong form
	// (CodeInvalidArgument, HTTP 400).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: the organisation, credential or document named does not exist here
	// (CodeNotFound, HTTP 404).
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the thing to create exists already (CodeAlreadyExists, HTTP 409).
	ErrAlreadyExists = errors.New("already exists")
	// ErrPermissionDenied: the caller is known but may not do this (CodePermissionDenied, HTTP 403).
	ErrPermissionDenied = errors.New("permission denied")
	// ErrFailedPrecondition: the request is well formed but the state does not allow it, for example
	// rotating the key of a deactivated organisation (CodeFailedPrecondition, HTTP 400).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrUnavailable: the node cannot serve this now and a retry may succeed (CodeUnavailable, HTTP 503).
	ErrUnavailable = errors.New("unavailable")
)

// codeEntry maps every error that matches err (errors.Is) to code.
type codeEntry struct {
	err  error
	code connect.Code
}

// builtinCodes are consulted before the registered codes, in order.
var builtinCodes = []codeEntry{
	{context.Canceled, connect.CodeCanceled},
	{context.DeadlineExceeded, connect.CodeDeadlineExceeded},
	{ErrInvalidArgument, connect.CodeInvalidArgument},
	{ErrNotFound, connect.CodeNotFound},
	{ErrAlreadyExists, connect.CodeAlreadyExists},
	{ErrPermissionDenied, connect.CodePermissionDenied},
	{ErrFailedPrecondition, connect.CodeFailedPrecondition},
	{ErrUnavailable, connect.CodeUnavailable},
	{errUnauthenticated, connect.CodeUnauthenticated},
}

var (
	registeredMu    sync.RWMutex
	registeredCodes []codeEntry
)

// RegisterError maps sentinel, and every error that wraps it, to code. node calls it at wiring time
// for the documented sentinels of the subsystems (for example a revoked credential →
// CodeFailedPrecondition), so that api need not import them. Errors so mapped keep their message, so a
// registered sentinel MUST be one whose wrapping messages are fit to show the caller. Registering a
// sentinel again replaces its code. Entries are tried in registration order, after the built-in ones
// (context errors and the api sentinels).
//
// RegisterError panics when sentinel is nil or code is not a valid Connect code: both are wiring
// mistakes that no request can cause.
func RegisterError(sentinel error, code connect.Code) {
	if sentinel == nil {
		panic("api: RegisterError with nil sentinel")
	}
	if code < connect.CodeCanceled || code > connect.CodeUnauthenticated {
		panic(fmt.Sprintf("api: RegisterError(%v) with invalid code %d", sentinel, code))
	}
	registeredMu.Lock()
	defer registeredMu.Unlock()
	for i := range registeredCodes {
		if registeredCodes[i].err == sentinel {
			registeredCodes[i].code = code
			return
		}
	}
	registeredCodes = append(registeredCodes, codeEntry{sentinel, code})
}

// toConnectError is the one place where an error from the backend (or from reading a request) is
// turned into what the caller sees. Errors matching a built-in or registered sentinel get that
// sentinel's code and keep their message. Anything else is CodeInternal with a generic message and
// a reference; the detail is logged under that reference and never sent, since it may name files,
// keys or patients. err MUST NOT be nil.
func toConnectError(ctx context.Context, log *slog.Logger, err error) *connect.Error {
	if code, ok := knownCode(err); ok {
		return connect.NewError(code, err)
	}
	ref := errorRef()
	attrs := []any{slog.String("ref", ref), slog.Any("err", err)}
	if info, ok := connect.CallInfoForHandlerContext(ctx); ok {
		attrs = append(attrs, slog.String("procedure", info.Spec().Procedure))
	}
	log.ErrorContext(ctx, "internal API error", attrs...)
	return connect.NewError(connect.CodeInternal, fmt.Errorf("internal error (ref %s)", ref))
}

// knownCode looks err up in the built-in and registered tables; it is toConnectError's table lookup.
func knownCode(err error) (connect.Code, bool) {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return connect.CodeResourceExhausted, true
	}
	for _, e := range builtinCodes {
		if errors.Is(err, e.err) {
			return e.code, true
		}
	}
	registeredMu.RLock()
	defer registeredMu.RUnlock()
	for _, e := range registeredCodes {
		if errors.Is(err, e.err) {
			return e.code, true
		}
	}
	return 0, false
}

// errorRef returns a short random reference that ties an internal error's generic message to its
// log line.
func errorRef() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// httpStatus is the HTTP status for a Connect code, as in the Connect protocol specification
// (https://connectrpc.com/docs/protocol/#error-codes), so that the plain HTTP endpoints and the
// Connect unary endpoints answer the same error with the same status.
func httpStatus(code connect.Code) int {
	switch code {
	case connect.CodeCanceled:
		return 499
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	default: // CodeUnknown, CodeInternal, CodeDataLoss and anything unexpected
		return http.StatusInternalServerError
	}
}

// httpError is the JSON body of an error from a plain HTTP endpoint; it has the shape of a Connect
// unary error so that one client-side decoder handles both.
type httpError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeHTTPError answers a plain HTTP request with err, mapped through toConnectError.
func writeHTTPError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	ce := toConnectError(r.Context(), log, err)
	body, _ := json.Marshal(httpError{Code: ce.Code().String(), Message: ce.Message()})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(httpStatus(ce.Code()))
	_, _ = w.Write(append(body, '\n'))
}
