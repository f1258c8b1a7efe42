# syntax=docker/dockerfile:1
# kucero's image: the package in a virtualenv on Python's slim Debian image, nothing else.
#
#   docker build -t kucero:dev .          (make lint runs hadolint on this file)
#
# nsenter, which restarts the host's kubelet through PID 1 (`nsenter --target 1 ...
# systemctl restart kubelet`), comes from util-linux, an Essential package of every Debian
# image: nothing to install. systemctl, crictl and kubeadm are the host's, reached through
# nsenter, so none of them is in the image.

# python:3.12.11-slim-bookworm (Debian 12), pinned by digest: update tag and digest together.
ARG BASE_IMAGE=python:3.12.11-slim-bookworm@sha256:519591d6871b7bc437060736b9f7456b8731f1499a57e22e6c285135ae657bf7

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY requirements/runtime.txt requirements/runtime.txt
# The dependencies exactly as locked (versions and sha256 of every file; `make lock` refreshes
# the file), then kucero itself with nothing resolved again.
RUN python -m venv --without-pip /opt/kucero \
    && pip --python /opt/kucero/bin/python install --no-cache-dir --disable-pip-version-check \
        --require-hashes --no-deps -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY schema/ schema/
COPY policies/ policies/
COPY reconciler/ reconciler/
# A virtualenv without pip: the runtime stage copies this one directory, with the package,
# its dependencies and their precompiled bytecode (the root filesystem is read-only at run
# time, so nothing could be compiled there).
RUN pip --python /opt/kucero/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-deps --no-build-isolation . \
    && /opt/kucero/bin/kucero --version

FROM ${BASE_IMAGE}
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="kucero" \
      org.opencontainers.image.description="Keeps a kubeadm cluster's control-plane certificates from expiring" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kucero-py/kucero" \
      org.opencontainers.image.base.name="docker.io/library/python:3.12.11-slim-bookworm"
ENV PATH=/opt/kucero/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/kucero /opt/kucero
# The example policies, for the offline recovery pass on a node whose API server is down:
#   kucero node --once --host-root /host --policy /usr/share/kucero/policies/default.yaml
COPY policies/*.yaml /usr/share/kucero/policies/
# Root on purpose: kubeadm's keys and kubeconfigs are root-owned with mode 0600, and the
# DaemonSets drop every capability but the three nsenter needs.
# hadolint ignore=DL3002
USER 0:0
ENTRYPOINT ["kucero"]
CMD ["--help"]
