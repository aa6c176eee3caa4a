# Images are built from binaries built here (`make build`), FROM scratch:
# nothing but the static binary, running as an unprivileged user.
#   make build && docker build -t vaultkms/vaultkms-plugin:dev .
FROM scratch
COPY bin/vaultkms-plugin /vaultkms-plugin
USER 65532:65532
ENTRYPOINT ["/vaultkms-plugin"]
