// Package api is the node's edge: the internal API that EHR systems, operators and tools such as
// grpcurl and curl talk to. It owns the HTTP server of that API, the Connect handlers of the
// schakel.v1 services (NodeService, OrganizationService, DocumentService, CredentialService), which
// answer gRPC, gRPC-Web and Connect/JSON on one port, server reflection, the health, readiness and
// Prometheus endpoints, the JWKS of each hosted organisation, bearer-token and mTLS access control,
// and the mapping of errors to status codes, which happens in one place (toConnectError).
//
// The main entry points are [New], [Server.Start] and [Server.Close]. The API reaches the rest of the
// node only through [Backend], which it declares and node satisfies; lower packages' sentinel errors
// are mapped to status codes through [RegisterError] at wiring time, so api imports no subsystem.
//
// Only package node may import api.
package api
