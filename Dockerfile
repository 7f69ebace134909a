# wa-exporter: Prometheus exporter and alert-driven remediation for the WhatsApp Business API
# on-premises client, as an image. Builds with the classic builder and with BuildKit.
#
#   make image          # no image registry: a Debian base made with debootstrap, wheels from
#                       # the package index (scripts/build-image.sh sets the arguments below)
#   docker build -t wa-exporter \
#       --build-arg VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' exporter/__init__.py)" .
#                       # or this, on python:3.11-slim-bookworm from Docker Hub
#   docker run -d --name wa-exporter -p 9864:9864 \
#       --group-add "$(stat -c %g /var/run/docker.sock)" \
#       -v /var/run/docker.sock:/var/run/docker.sock \
#       -v /path/to/biz/db.env:/etc/wa-exporter/db.env:ro \
#       -v whatsappMedia:/usr/local/wamedia:ro \
#       -v wa-exporter-state:/var/lib/wa-exporter \
#       wa-exporter --db.env-file /etc/wa-exporter/db.env
#
# Build arguments:
#   BASE_IMAGE  an image with python3 (>= 3.11, with venv) and useradd; both stages use it
#   VERSION     the org.opencontainers.image.version label: the package version
#   SOURCE_URL  the org.opencontainers.image.source label: where the repository lives
#   DOCKER_GID  the gid owning /var/run/docker.sock on the host, given to the wa-exporter user
#               at build time, instead of --group-add at run time
#   WHEELS      a directory in the build context (wheels/ is sent) holding every wheel the
#               install needs, dependencies and the setuptools the build requires; when set, pip
#               reads only from it and never touches the network. Unset: PyPI.
#
# The HEALTHCHECK asks 127.0.0.1:9864; with another --web.listen-address, give docker run a
# matching --health-cmd.

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ARG WHEELS=
ARG EXTRAS=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/wa-exporter
COPY . /src
# The package is built from the context into the venv; pip and setuptools then leave, since the
# running exporter never installs anything.
RUN set -eu; \
    if [ -n "$WHEELS" ]; then set -- --no-index --find-links "/src/$WHEELS"; fi; \
    /opt/wa-exporter/bin/pip install "$@" "/src${EXTRAS:+[$EXTRAS]}"; \
    /opt/wa-exporter/bin/pip uninstall --yes pip setuptools

FROM ${BASE_IMAGE}
ARG EXTRAS=
ARG VERSION=unknown
ARG SOURCE_URL=https://github.com/wa-exporter/wa-exporter
ARG DOCKER_GID=
LABEL org.opencontainers.image.title="wa-exporter" \
      org.opencontainers.image.description="Prometheus exporter and alert-driven remediation for the WhatsApp Business API on-premises client" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

# DOCKER_HOST=ssh://… (EXTRAS=ssh) runs the ssh client; bases that have it skip the install.
RUN set -eu; \
    if [ "${EXTRAS#*ssh}" != "$EXTRAS" ] && ! command -v ssh >/dev/null; then \
        apt-get update; \
        apt-get install -y --no-install-recommends openssh-client; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --gid 10001 wa-exporter; \
    useradd --uid 10001 --gid wa-exporter --home-dir /var/lib/wa-exporter \
        --no-create-home --shell /usr/sbin/nologin wa-exporter; \
    if [ -n "$DOCKER_GID" ]; then \
        getent group "$DOCKER_GID" >/dev/null || groupadd --gid "$DOCKER_GID" docker-host; \
        usermod --append --groups "$DOCKER_GID" wa-exporter; \
    fi; \
    install -d -o wa-exporter -g wa-exporter -m 0750 /var/lib/wa-exporter

COPY --from=builder /opt/wa-exporter /opt/wa-exporter
ENV PATH=/opt/wa-exporter/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# Numeric, so runAsNonRoot can check it; uid only, so the groups in /etc/group (DOCKER_GID) apply.
USER 10001
WORKDIR /var/lib/wa-exporter
VOLUME /var/lib/wa-exporter
EXPOSE 9864
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9864/-/healthy', timeout=3)"]
ENTRYPOINT ["wa-exporter"]
