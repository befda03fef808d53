// Package proto holds schakel's protobuf definitions (proto/schakel/v1) and the command that
// regenerates their Go code: the message types in package schakelv1 and the Connect handlers and
// clients in schakelv1connect. The generated files are committed; .ci/check-generated fails when
// they differ from what this command produces.
//
// Regenerate from the repository root with:
//
//	go generate ./proto/...
package proto

//go:generate sh -c "cd .. && go run github.com/bufbuild/buf/cmd/buf@v1.75.0 generate"
