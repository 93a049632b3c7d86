# keygate's container image: one static binary (every subcommand: serve, authz, migrate, ...) on distroless.
#
#   make image                       # docker build -t ghcr.io/keygate/keygate:$(VERSION) .
#   docker run --rm ghcr.io/keygate/keygate:dev version
#
# deploy/deploy_test.go checks this file: static build, non-root user, the entrypoint is the keygate binary, and
# the image name matches deploy/kubernetes.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first, so source edits reuse the download layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# CGO_ENABLED=0: a static binary with Go's resolver, needing no libc in the image; -trimpath: no build paths in
# it. cmd/keygate/default.pgo is applied by go build itself.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/keygate ./cmd/keygate

# distroless/static: CA certificates, tzdata and /etc/passwd with the nonroot user (65532), no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keygate /usr/local/bin/keygate
# The uid the Kubernetes manifests run as (securityContext.runAsUser: 65532).
USER 65532:65532
# bundle server, sidecar gRPC (ext_authz), sidecar HTTP (data API, /health, /metrics)
EXPOSE 8282 9191 8181
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["--help"]
