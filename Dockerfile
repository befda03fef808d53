# The schakel node as a container image, from a statically linked binary built first on the host:
#
#   CGO_ENABLED=0 go build -trimpath -o build/schakel ./cmd/schakel
#   docker build -t schakel:local .
#
# FROM scratch needs no registry. The image holds the binary alone: no shell, no CA bundle (nodes
# reach each other and their EHRs over addresses they are given; the API serves TLS from files).
# With a registry, build the binary in a golang stage instead and copy it in the same way.
FROM scratch
COPY build/schakel /schakel
VOLUME ["/data"]
# 7631: the internal API (gRPC, connect, /healthz, /readyz, /metrics, /oauth2/introspect)
# 7632: libp2p (TCP and QUIC)
EXPOSE 7631 7632 7632/udp
HEALTHCHECK --interval=5s --timeout=5s --retries=12 CMD ["/schakel", "health"]
ENTRYPOINT ["/schakel"]
CMD ["run", "--data", "/data"]
