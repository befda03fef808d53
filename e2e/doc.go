// Package e2e holds tests that drive real schakel processes through their public interfaces only:
// the CLI, the internal API over HTTP and gRPC. They build the binary once per run and are skipped
// with -short, so that `go test -short ./...` stays quick.
package e2e
