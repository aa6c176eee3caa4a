# One image per vaultkms program, each holding only its static binary.
# Build the binaries first (`make build`), then `make image`, which runs for
# each program:
#   docker build --target <plugin|controller|kubectl-vaultkms|auditor> \
#     --build-arg VERSION=<v> -t vaultkms/<binary>:<v> .
# BASE_IMAGE defaults to distroless static (nonroot): CA certificates, tzdata
# and /etc/passwd, nothing else. The binaries are static, so a machine that
# cannot reach a registry builds with --build-arg BASE_IMAGE=scratch.
# The auditor stage comes last: the classic builder also builds every stage
# before --target, and the other images must build without its binary.
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${BASE_IMAGE} AS base
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/vaultkms/vaultkms" \
      org.opencontainers.image.url="https://github.com/vaultkms/vaultkms" \
      org.opencontainers.image.vendor="vaultkms" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# Unprivileged by default. The plugin's static pod overrides this with
# uid 0 and no capabilities at all (see deploy/static-pod.yaml and
# docs/install-kubeadm.md for why).
USER 65532:65532

FROM base AS plugin
LABEL org.opencontainers.image.title="vaultkms-plugin" \
      org.opencontainers.image.description="Kubernetes KMS v2 plugin backed by HashiCorp Vault Transit"
COPY bin/vaultkms-plugin /vaultkms-plugin
ENTRYPOINT ["/vaultkms-plugin"]

FROM base AS controller
LABEL org.opencontainers.image.title="vaultkms-controller" \
      org.opencontainers.image.description="VaultSecret controller: short-lived Secrets from Vault under each tenant's identity"
COPY bin/vaultkms-controller /vaultkms-controller
ENTRYPOINT ["/vaultkms-controller"]

FROM base AS kubectl-vaultkms
LABEL org.opencontainers.image.title="kubectl-vaultkms" \
      org.opencontainers.image.description="kubectl plugin: encryption-at-rest status, verify, re-encrypt, rotate"
COPY bin/kubectl-vaultkms /kubectl-vaultkms
ENTRYPOINT ["/kubectl-vaultkms"]

FROM base AS auditor
LABEL org.opencontainers.image.title="vaultkms-auditor" \
      org.opencontainers.image.description="Scans etcd read-only and publishes EncryptionStatus"
COPY bin/vaultkms-auditor /vaultkms-auditor
ENTRYPOINT ["/vaultkms-auditor"]
