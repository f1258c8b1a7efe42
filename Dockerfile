# kucero node/controller image. nsenter (util-linux) runs host commands such as
# `systemctl restart kubelet` in PID 1's namespaces; the DaemonSet mounts the host at /host.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler/ reconciler/
COPY schema/ schema/
COPY policies/ policies/
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.12-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends util-linux \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /install /usr/local
COPY policies/ /usr/share/kucero/policies/
USER 0
ENTRYPOINT ["kucero"]
CMD ["run", "--host-root", "/host"]
