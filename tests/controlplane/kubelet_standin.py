"""The smallest honest stand-in for the kubelet's static pod loop, for one host-root tree.

There is no kubelet (and no container runtime) here, so restarts are tested against this: it
watches the tree's static pod directory (the kubelet's ``staticPodPath`` from
``var/lib/kubelet/config.yaml``) and, for each manifest, runs a real process
(``standin_component``) listening with TLS on the ports the manifest's flags name, serving the
certificate files they point to, read at start-up only, and answering its component's health
path (etcd's needs a client certificate signed by the etcd CA). A manifest that disappears
stops its process; one that comes back (or changes) starts it again, as the kubelet does. The
manifest is read with its own small parser, not kucero's, so a bug there cannot cancel out.

It can be told to fail the next start of a component: ``never`` (the manifest is there, the
component never comes back) or ``other-cert`` (it comes back serving a certificate of its
own). ``stop_delay`` makes it slow to notice a removed manifest (a kubelet between two file
checks). For ``crictl`` it takes stop requests from ``crictl_stub`` through a control
directory: a stopped sandbox's process is killed and started again with a new sandbox id.

Every start and stop is recorded in ``events`` as ``(monotonic time, "start"|"stop", name)``;
a process that exited by itself and is started again (a port taken under it) as "crash", so a
stop always means the manifest went away or the sandbox was stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
# How often the stand-in re-reads the static pod directory (the kubelet: 20 s; tests: fast).
PERIOD_SECONDS = 0.05
_HEALTH = {"kube-apiserver": "/readyz", "etcd": "/health"}


def _flags(manifest: dict[str, Any]) -> dict[str, str]:
    container = manifest["spec"]["containers"][0]
    out = {}
    for arg in container.get("command", []) + container.get("args", []):
        key, _, value = str(arg).removeprefix("--").partition("=")
        out[key] = value
    return out


def _port(url_list: str) -> int:
    for url in url_list.split(","):
        if "127.0.0.1" in url:
            return int(url.rsplit(":", 1)[1])
    raise ValueError(f"no loopback URL in {url_list}")


class KubeletStandin:
    def __init__(self, root: Path, stop_delay: float = 0.0) -> None:
        self.root = root
        self.stop_delay = stop_delay
        self.control = root.parent / f"{root.name}-standin"
        (self.control / "stop").mkdir(parents=True, exist_ok=True)
        (self.control / "pods").mkdir(parents=True, exist_ok=True)
        self.events: list[tuple[float, str, str]] = []
        self.failures: dict[str, str] = {}
        self._running: dict[str, tuple[subprocess.Popen[bytes], str, str]] = {}
        self._gone_since: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> KubeletStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for name in list(self._running):
            self._kill(name)

    def fail_next_start(self, component: str, mode: str) -> None:
        """``never`` or ``other-cert`` for the next start of ``component``."""
        self.failures[component] = mode

    def started(self) -> list[str]:
        return [name for _, what, name in self.events if what == "start"]

    def wait_serving(self, names: list[str], timeout: float = 20.0) -> None:
        """Until each named component accepts connections (start-up takes a fraction of a s)."""
        import socket

        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                port = self._ports(name)
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"stand-in {name} not serving on {port}") from None
                    time.sleep(0.05)

    def _static_pod_dir(self) -> Path:
        config = self.root / "var/lib/kubelet/config.yaml"
        path = "/etc/kubernetes/manifests"
        if config.exists():
            path = yaml.safe_load(config.read_text()).get("staticPodPath") or path
        return self.root / path.lstrip("/")

    def _ports(self, name: str) -> int:
        manifest = yaml.safe_load((self._static_pod_dir() / f"{name}.yaml").read_text())
        return int(self._spec(name, manifest)["endpoints"][0]["port"])

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as e:  # keep the loop alive, like a kubelet; say so in the log
                print(f"kubelet stand-in: {e!r}", file=sys.stderr)
            time.sleep(PERIOD_SECONDS)

    def _tick(self) -> None:
        for request in (self.control / "stop").iterdir():
            sandbox = request.name
            for name, (_, pod_id, _) in list(self._running.items()):
                if pod_id == sandbox:
                    self._kill(name)
            request.unlink()
        directory = self._static_pod_dir()
        present = {}
        for path in sorted(directory.glob("*.yaml")) if directory.exists() else []:
            data = path.read_bytes()
            present[path.stem] = (data, hashlib.sha256(data).hexdigest())
        now = time.monotonic()
        for name in list(self._running):
            proc, _, digest = self._running[name]
            if name not in present or present[name][1] != digest:
                since = self._gone_since.setdefault(name, now)
                if now - since >= self.stop_delay or name in present:
                    self._kill(name)
            elif proc.poll() is not None:  # crashed: the kubelet restarts it
                self._kill(name, "crash")
        for name, (data, digest) in present.items():
            if name not in self._running:
                self._start(name, yaml.safe_load(data), digest)

    def _spec(self, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
        flags = _flags(manifest)

        def local(path: str | None) -> str | None:
            return str(self.root / path.lstrip("/")) if path else None

        if name == "etcd":
            endpoints = [
                (_port(flags["listen-client-urls"]), flags["cert-file"], flags["key-file"]),
                (_port(flags["listen-peer-urls"]), flags["peer-cert-file"], flags["peer-key-file"]),
            ]
        else:
            endpoints = [
                (
                    int(flags["secure-port"]),
                    flags.get("tls-cert-file"),
                    flags.get("tls-private-key-file"),
                )
            ]
        return {
            "name": name,
            "health": _HEALTH.get(name, "/healthz"),
            "clientCA": local(flags.get("trusted-ca-file")),
            "endpoints": [
                {"host": "127.0.0.1", "port": p, "cert": local(c), "key": local(k)}
                for p, c, k in endpoints
            ],
        }

    def _start(self, name: str, manifest: dict[str, Any], digest: str) -> None:
        mode = self.failures.pop(name, None)
        if mode == "never":
            self.events.append((time.monotonic(), "fail", name))
            self._running[name] = (_Never(), "", digest)  # type: ignore[assignment]
            return
        spec = self._spec(name, manifest)
        spec["otherCert"] = mode == "other-cert"
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.controlplane.standin_component", json.dumps(spec)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        pod_id = uuid.uuid4().hex[:13]
        (self.control / "pods" / name).write_text(pod_id)
        self._running[name] = (proc, pod_id, digest)
        self._gone_since.pop(name, None)
        self.events.append((time.monotonic(), "start", name))

    def _kill(self, name: str, what: str = "stop") -> None:
        proc, _, _ = self._running.pop(name)
        self._gone_since.pop(name, None)
        if isinstance(proc, _Never):
            return
        proc.kill()
        proc.wait(10)
        (self.control / "pods" / name).unlink(missing_ok=True)
        self.events.append((time.monotonic(), what, name))


class _Never:
    """A component that failed to start: nothing runs, the kubelet keeps it in its books."""

    def poll(self) -> None:
        return None


CRICTL_STUB = """\
#!{python}
# crictl stand-in: records its calls and asks the kubelet stand-in to stop pod sandboxes.
import os, sys, time
control = {control!r}
with open(os.path.join(control, "calls.log"), "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args[:1] == ["pods"]:
    label = args[args.index("--label") + 1].split("=", 1)[1]
    pod = os.path.join(control, "pods", label)
    if os.path.exists(pod):
        print(open(pod).read())
elif args[:1] == ["stopp"]:
    for sandbox in args[1:]:
        open(os.path.join(control, "stop", sandbox), "w").close()
    while any(os.path.exists(os.path.join(control, "stop", s)) for s in args[1:]):
        time.sleep(0.02)  # crictl stopp returns once the sandbox is stopped
    for sandbox in args[1:]:
        print("Stopped sandbox " + sandbox)
else:
    sys.exit("crictl stub: unsupported " + " ".join(args))
"""


def crictl_stub(standin: KubeletStandin) -> Path:
    """An executable ``crictl`` that records its calls in ``<control>/calls.log``."""
    path = standin.control / "crictl"
    path.write_text(CRICTL_STUB.format(python=sys.executable, control=str(standin.control)))
    os.chmod(path, 0o755)
    return path
