# vaultkms's own programs for the HA test, like the root Dockerfile: the
# static binary (go build, CGO_ENABLED=0) FROM scratch, unprivileged.
# The test copies the binary into the build context as `app`.
FROM scratch
COPY app /app
USER 65532:65532
ENTRYPOINT ["/app"]
