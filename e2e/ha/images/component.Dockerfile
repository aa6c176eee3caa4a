# A real component (vault, etcd, kube-apiserver) from bin/, built by
# `make tools` with CGO_ENABLED=0: the static binary and nothing else.
# The test copies the binary into the build context as `app`.
FROM scratch
COPY app /app
ENTRYPOINT ["/app"]
