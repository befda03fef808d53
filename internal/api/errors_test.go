package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
)

func TestToConnectError(t *testing.T) {
	errRevoked := errors.New("credential revoked")
	RegisterError(errRevoked, connect.CodeFailedPrecondition)
	errRemapped := errors.New("remapped")
	RegisterError(errRemapped, connect.CodeAborted)
	RegisterError(errRemapped, connect.CodeUnavailable)

	tests := []struct {
		name       string
		err        error
		wantCode   connect.Code
		wantStatus int
		wantMsg    string // the message sent, exactly; empty: generic internal message
	}{
		{name: "ErrNotFound wrapped", err: fmt.Errorf("organisation did:schakel:x: %w", ErrNotFound),
			wantCode: connect.CodeNotFound, wantStatus: 404, wantMsg: "organisation did:schakel:x: not found"},
		{name: "ErrInvalidArgument", err: fmt.Errorf("bad name: %w", ErrInvalidArgument),
			wantCode: connect.CodeInvalidArgument, wantStatus: 400, wantMsg: "bad name: invalid argument"},
		{name: "ErrAlreadyExists", err: fmt.Errorf("organisation x: %w", ErrAlreadyExists),
			wantCode: connect.CodeAlreadyExists, wantStatus: 409, wantMsg: "organisation x: already exists"},
		{name: "ErrPermissionDenied", err: fmt.Errorf("not the issuer: %w", ErrPermissionDenied),
			wantCode: connect.CodePermissionDenied, wantStatus: 403, wantMsg: "not the issuer: permission denied"},
		{name: "ErrFailedPrecondition", err: fmt.Errorf("deactivated: %w", ErrFailedPrecondition),
			wantCode: connect.CodeFailedPrecondition, wantStatus: 400, wantMsg: "deactivated: failed precondition"},
		{name: "ErrUnavailable", err: fmt.Errorf("syncing: %w", ErrUnavailable),
			wantCode: connect.CodeUnavailable, wantStatus: 503, wantMsg: "syncing: unavailable"},
		{name: "context canceled", err: fmt.Errorf("sign: %w", context.Canceled),
			wantCode: connect.CodeCanceled, wantStatus: 499, wantMsg: "sign: context canceled"},
		{name: "deadline exceeded", err: fmt.Errorf("store: %w", context.DeadlineExceeded),
			wantCode: connect.CodeDeadlineExceeded, wantStatus: 504, wantMsg: "store: context deadline exceeded"},
		{name: "registered sentinel", err: fmt.Errorf("verify credential c1: %w", errRevoked),
			wantCode: connect.CodeFailedPrecondition, wantStatus: 400, wantMsg: "verify credential c1: credential revoked"},
		{name: "registered twice takes the last code", err: errRemapped,
			wantCode: connect.CodeUnavailable, wantStatus: 503, wantMsg: "remapped"},
		{name: "body too large", err: fmt.Errorf("read body: %w", &http.MaxBytesError{Limit: 10}),
			wantCode: connect.CodeResourceExhausted, wantStatus: 429, wantMsg: "read body: http: request body too large"},
		{name: "unknown", err: errors.New("badger: open /data/000001.vlog: no space left on device"),
			wantCode: connect.CodeInternal, wantStatus: 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			ce := toConnectError(t.Context(), log, tt.err)
			if ce.Code() != tt.wantCode {
				t.Errorf("toConnectError(%v): code %v, want %v", tt.err, ce.Code(), tt.wantCode)
			}
			if got := httpStatus(ce.Code()); got != tt.wantStatus {
				t.Errorf("httpStatus(%v) = %d, want %d", ce.Code(), got, tt.wantStatus)
			}
			if tt.wantMsg != "" {
				if ce.Message() != tt.wantMsg {
					t.Errorf("toConnectError(%v): message %q, want %q", tt.err, ce.Message(), tt.wantMsg)
				}
				if logs.Len() != 0 {
					t.Errorf("toConnectError(%v) logged %q for a known error", tt.err, logs.String())
				}
				return
			}
			if !strings.HasPrefix(ce.Message(), "internal error (ref ") || strings.Contains(ce.Message(), "vlog") {
				t.Errorf("toConnectError(%v): message %q, want a generic internal error", tt.err, ce.Message())
			}
			ref := strings.TrimSuffix(strings.TrimPrefix(ce.Message(), "internal error (ref "), ")")
			if !strings.Contains(logs.String(), "ref="+ref) || !strings.Contains(logs.String(), "no space left on device") {
				t.Errorf("toConnectError(%v): log %q, want the detail under ref %s", tt.err, logs.String(), ref)
			}
		})
	}
}

func TestRegisterErrorPanics(t *testing.T) {
	tests := []struct {
		name     string
		sentinel error
		code     connect.Code
	}{
		{name: "nil sentinel", sentinel: nil, code: connect.CodeNotFound},
		{name: "zero code", sentinel: errors.New("x"), code: 0},
		{name: "code out of range", sentinel: errors.New("x"), code: connect.CodeUnauthenticated + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("RegisterError(%v, %d) did not panic", tt.sentinel, tt.code)
				}
			}()
			RegisterError(tt.sentinel, tt.code)
		})
	}
}
