// Package node owns one schakel node's lifecycle: it builds every subsystem from a Config in
// dependency order (store, key store, DID registry, credential store, internal API), starts them, and
// stops them in reverse. It is the only package that knows every subsystem; it satisfies the small
// interfaces the subsystems declare. Imported only by cmd/schakel and tests.
package node
