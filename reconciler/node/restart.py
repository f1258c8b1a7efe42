"""Restart one control-plane static pod, prove it serves the renewed certificate, or roll back.

A restart is: make the component stop (``manifest-move``: park its manifest in kucero's tmp
directory until the component stops answering, bounded by ``stop_timeout``, which must cover
the kubelet's 20 s file-check period, plus the pod's termination grace period; etcd, when
its process is visible here, gets SIGTERM in place instead, see ``node.linger``; ``crictl``: stop its pod sandbox with the host's
``crictl``, after which the kubelet makes a new one), then wait, up to ``health_timeout``,
until it is healthy and every endpoint with a certificate file serves exactly that file's
certificate (serial number and notAfter). kube-controller-manager and kube-scheduler serve a
certificate made in memory; what changed for them is a client certificate, which is proven by
them becoming healthy again.

When that does not happen, the component's renewed files are restored from the pass's backup
through a transaction (a certificate and its key together), the component is restarted the
same way, and it must serve the old certificate again. The caller then stops the pass.

Crash safety: ``RESTART_JOURNAL`` names the manifest that is out (and, during a rollback, the
files being restored) before anything moves. ``recover`` puts the manifest back byte for byte,
finishes a restore, and marks the component as owed, so the next pass verifies it. The
manifest is never left out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import posixpath
import time
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from reconciler.decide import ownfiles, pki
from reconciler.model import kubeadm, paths, staticpod
from reconciler.node import host as host_
from reconciler.node import interrupt, linger, observe, probe, transaction

log = logging.getLogger(__name__)

# kubeadm runs its static pods in kube-system; crictl filters sandboxes by namespace and label.
NAMESPACE = "kube-system"
# A rollback never writes a CA's files (the same last guard as a pass's own transaction).
PROTECTED = tuple(p for ca in kubeadm.CAS for p in (ca.cert, ca.key))


@dataclasses.dataclass(frozen=True)
class Settings:
    strategy: str  # manifest-move | crictl | none
    health_timeout: float  # seconds until healthy and serving the expected certificate
    # seconds for the kubelet to notice a removed manifest (its 20 s file-check period, 5 s
    # of slack); the wait for the component to stop answering adds the pod's own termination
    # grace period (a real kube-apiserver's container went 30.5 s after its manifest: a fixed
    # 25 s wait gave up on a restart that was working)
    stop_timeout: float = 25.0
    crictl: tuple[str, ...] = ("crictl",)
    poll: float = 0.1  # seconds between two probes while waiting
    # seconds the old process may linger after it stopped serving before it is killed
    # (node.linger: a real kube-apiserver otherwise stays until its 30 s grace period ends)
    drain: float = 2.0
    # SIGTERM/SIGINT: a wait ends at once (the manifest goes back), the restart stays owed
    stop: interrupt.Stop = dataclasses.field(default_factory=interrupt.Stop)


@dataclasses.dataclass(frozen=True)
class Outcome:
    component: str
    result: str  # restarted | failed (nothing touched) | rolled-back | rollback-failed
    seconds: float  # wall time of the whole restart (and rollback)
    waited: float  # of which spent waiting for the component
    message: str

    @property
    def ok(self) -> bool:
        return self.result == "restarted"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RestartError(Exception):
    """A step of the restart itself failed (crictl, a rename); the message says which."""


class Untouched(RestartError):
    """The restart failed before the component was stopped: it still runs what it ran, so
    there is nothing to roll back; the restart stays owed."""


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.waited = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def restart(
    host: host_.Host,
    pod: staticpod.StaticPod,
    settings: Settings,
    backup: str | None,
    now: Callable[[], dt.datetime],
) -> Outcome:
    """Restart ``pod`` and verify it; roll its files back from ``backup`` if it fails."""
    clock = _Clock()
    try:
        return _restart(host, pod, settings, backup, now, clock)
    finally:
        host.remove(paths.RESTART_JOURNAL)


def _restart(
    host: host_.Host,
    pod: staticpod.StaticPod,
    settings: Settings,
    backup: str | None,
    now: Callable[[], dt.datetime],
    clock: _Clock,
) -> Outcome:
    expected = _expected(host, pod)
    try:
        _bounce(host, pod, settings, clock)
        problem = _wait_serving(host, pod, expected, settings, clock)
    except Untouched as e:
        return Outcome(pod.name, "failed", clock.elapsed(), clock.waited, str(e))
    except (RestartError, host_.HostError) as e:
        problem = str(e)
    if problem is None:
        return Outcome(pod.name, "restarted", clock.elapsed(), clock.waited, _said(pod, expected))
    restored = _rollback_files(host, pod, backup)
    if not restored:
        return Outcome(
            pod.name, "rollback-failed", clock.elapsed(), clock.waited,
            f"{problem}; nothing of it in this pass's backup to roll back to",
        )  # fmt: skip
    assert backup is not None  # files to restore come from it
    old: dict[str, x509.Certificate | None] = {}
    try:
        _journal(host, pod, "rollback", backup=backup, files=restored)
        _restore(host, backup, restored, now)
        old = _expected(host, pod)
        _bounce(host, pod, settings, clock)
        again = _wait_serving(host, pod, old, settings, clock)
    except (RestartError, host_.HostError, transaction.TransactionError) as e:
        again = str(e)
    if again is None:
        return Outcome(
            pod.name, "rolled-back", clock.elapsed(), clock.waited,
            f"{problem}; rolled back {', '.join(restored)} from {backup}: {_said(pod, old)}",
        )  # fmt: skip
    return Outcome(
        pod.name, "rollback-failed", clock.elapsed(), clock.waited,
        f"{problem}; rolled back {', '.join(restored)} from {backup} but: {again}",
    )  # fmt: skip


def verify(host: host_.Host, pod: staticpod.StaticPod) -> str | None:
    """Without restarting: None when ``pod`` is healthy and serves its files' certificates,
    else what it serves instead."""
    expected = _expected(host, pod)
    try:
        seen = probe.probe(host, pod)
    except probe.ProbeError as e:
        return str(e)
    return _mismatch(pod, seen, expected)


def fingerprint(host: host_.Host, pod: staticpod.StaticPod) -> str | None:
    """SHA-256 of the certificate ``pod`` serves now (None when it does not answer): a
    component serving an in-memory certificate makes a new one each time it starts."""
    try:
        seen = probe.probe(host, pod)
    except probe.ProbeError:
        return None
    cert = seen.served.get("serving")
    return cert.fingerprint(hashes.SHA256()).hex() if cert is not None else None


def recover(host: host_.Host, now: Callable[[], dt.datetime]) -> list[str]:
    """Put back a manifest a crashed restart left out, finish a crashed rollback's restore,
    and mark the component owed so the next pass verifies it. Idempotent."""
    notes = []
    try:
        journal = _read_journal(host)
    except ownfiles.OwnFileError as e:
        journal = {}  # parked manifests still go back to kubeadm's directory
        notes.append(f"ignored {e}")
    if journal.get("phase") == "rollback" and journal.get("files"):
        _restore(host, journal["backup"], journal["files"], now)
        notes.append(
            f"finished rolling back {', '.join(journal['files'])} from {journal['backup']}"
        )
    targets = {}
    if journal.get("parked") and journal.get("manifest"):
        targets[posixpath.basename(journal["parked"])] = journal["manifest"]
    for name in host.listdir(paths.MOVED_MANIFESTS):
        parked = f"{paths.MOVED_MANIFESTS}/{name}"
        target = targets.get(name, f"{kubeadm.MANIFESTS}/{name}")
        if host.exists(target):
            host.remove(parked)  # the rename back landed; only the directory entry lingered
            continue
        host.rename(parked, target)
        notes.append(f"moved {target} back after an interrupted restart")
    if journal.get("component"):
        _owe(host, journal["component"])
        notes.append(f"{journal['component']}: restart owed, verified by the next pass")
    host.remove(paths.RESTART_JOURNAL)
    return notes


def _bounce(host: host_.Host, pod: staticpod.StaticPod, settings: Settings, clock: _Clock) -> None:
    """Make the component stop and come back (not waiting for it to serve)."""
    if settings.strategy == "crictl":
        try:
            listed = host.run(
                (*settings.crictl, "pods", "--namespace", NAMESPACE, "--label",
                 f"component={pod.label}", "--state", "ready", "-q")
            ).split()  # fmt: skip
            if not listed:
                raise Untouched(f"{pod.name}: crictl lists no ready pod sandbox to stop")
            # crictl stopp returns once the sandbox is stopped; the kubelet may make the new
            # one faster than a probe notices the gap, so there is no stop to wait for here
            host.run((*settings.crictl, "stopp", *listed))
        except host_.HostError as e:
            raise Untouched(str(e)) from e
        return
    if settings.strategy != "manifest-move":
        raise Untouched(f"{pod.name}: unknown restart strategy {settings.strategy!r}")
    if pod.name in linger.IN_PLACE and _restarted_in_place(pod, settings, clock):
        return
    data = host.read(pod.manifest)
    if data is None:
        raise Untouched(f"{pod.manifest}: manifest missing")
    parked = f"{paths.MOVED_MANIFESTS}/{posixpath.basename(pod.manifest)}"
    host.makedirs(paths.MOVED_MANIFESTS)
    # during a rollback the journal keeps saying so: recovery must finish the restore
    phase = _read_journal(host).get("phase", "restart")
    _journal(host, pod, phase, parked=parked, sha256=hashlib.sha256(data).hexdigest())
    host.rename(pod.manifest, parked)
    deadline = time.monotonic() + _stop_bound(pod, settings)
    try:
        stopped = _wait_stopped(pod, settings, clock)
    finally:  # an interruption must not leave the control plane without its pod
        host.rename(parked, pod.manifest)
    if host.read(pod.manifest) != data:
        raise RestartError(f"{pod.manifest}: changed while it was out")
    if stopped and not _wait_gone(pod, settings, clock, deadline):
        raise RestartError(
            f"{pod.name}: its old process still runs {_stop_bound(pod, settings):g}s after its manifest was moved out"
        )
    if not stopped:
        raise RestartError(
            f"{pod.name}: not stopped (still answering, or its process still running) "
            f"{_stop_bound(pod, settings):g}s after its manifest "
            f"was moved out ({settings.stop_timeout:g}s for the kubelet to notice, "
            f"{pod.grace_seconds:g}s termination grace period; is the kubelet watching the "
            "static pod directory?)"
        )


def _restarted_in_place(pod: staticpod.StaticPod, settings: Settings, clock: _Clock) -> bool:
    """etcd on a kubelet: SIGTERM its process and let the kubelet start the container again
    (``linger.stop_in_place`` says why not the manifest); False when its process is not found
    here (no PID namespace shared with it, or not a pod), and the manifest moves instead."""
    if not linger.stop_in_place(pod.argv):
        return False
    deadline = time.monotonic() + _stop_bound(pod, settings)
    if not _wait_gone(pod, settings, clock, deadline):
        raise RestartError(
            f"{pod.name}: still running {_stop_bound(pod, settings):g}s after SIGTERM"
        )
    return True


def _wait_gone(
    pod: staticpod.StaticPod, settings: Settings, clock: _Clock, deadline: float
) -> bool:
    """The old process stopped serving and its manifest is back: don't wait out its grace
    period before the kubelet can start the new one (``node.linger``)."""
    started = time.monotonic()
    try:
        gone, done = linger.wait_gone(
            pod.name, pod.argv, settings.drain, deadline, lambda s: _sleep(settings, s)
        )
        if done:  # a SIGKILL of a control-plane process belongs in the log
            log.info("%s", done, extra={"component": pod.name})
        return gone
    finally:
        clock.waited += time.monotonic() - started


def _sleep(settings: Settings, seconds: float) -> None:
    if settings.stop.wait(seconds):
        raise interrupt.Interrupted(
            f"interrupted by {settings.stop.name}; the restart is still owed to the next pass"
        )


def _stop_bound(pod: staticpod.StaticPod, settings: Settings) -> float:
    """Longest wait for a running component to stop answering: the kubelet notices the
    manifest is gone, then gives the container its termination grace period."""
    return settings.stop_timeout + pod.grace_seconds


def _wait_stopped(pod: staticpod.StaticPod, settings: Settings, clock: _Clock) -> bool:
    deadline = time.monotonic() + _stop_bound(pod, settings)
    started = time.monotonic()
    try:
        if not probe.answers(pod.serving, timeout=min(1.0, settings.stop_timeout or 1.0)):
            # Not running (it failed to come back): nothing shows when the kubelet drops the
            # pod, so give it its whole file-check period, or a manifest back too soon is
            # never noticed as a change.
            _sleep(settings, settings.stop_timeout)
            return True
        while probe.answers(pod.serving, timeout=min(1.0, settings.stop_timeout or 1.0)):
            if time.monotonic() >= deadline:
                return False
            _sleep(settings, settings.poll)
        return True
    finally:
        clock.waited += time.monotonic() - started


def _wait_serving(
    host: host_.Host,
    pod: staticpod.StaticPod,
    expected: dict[str, x509.Certificate | None],
    settings: Settings,
    clock: _Clock,
) -> str | None:
    """None once healthy and serving ``expected``; else the last reason at the deadline."""
    deadline = time.monotonic() + settings.health_timeout
    started = time.monotonic()
    problem = "never probed"
    try:
        while True:
            try:
                problem = _mismatch(pod, probe.probe(host, pod), expected) or ""
            except probe.ProbeError as e:
                problem = str(e)
            if not problem:
                return None
            if time.monotonic() >= deadline:
                return f"not healthy with the expected certificate within {settings.health_timeout:g}s: {problem}"
            _sleep(settings, settings.poll)
    finally:
        clock.waited += time.monotonic() - started


def _mismatch(
    pod: staticpod.StaticPod, seen: probe.Seen, expected: dict[str, x509.Certificate | None]
) -> str | None:
    for role, cert in expected.items():
        if cert is not None and not seen.serves(role, cert):
            got = seen.served.get(role)
            what = f"serial {got.serial_number:x}" if got is not None else "nothing"
            return f"{pod.name} {role} port serves {what}, not serial {cert.serial_number:x}"
    if not seen.healthy:
        return f"{pod.name} unhealthy: {seen.detail}"
    return None


def _expected(host: host_.Host, pod: staticpod.StaticPod) -> dict[str, x509.Certificate | None]:
    out: dict[str, x509.Certificate | None] = {}
    for endpoint in pod.endpoints:
        if endpoint.cert_file is None:
            continue
        data = host.read(endpoint.cert_file)
        try:
            out[endpoint.role] = pki.load_cert(data) if data else None
        except pki.PKIError:
            out[endpoint.role] = None
    return out


def _said(pod: staticpod.StaticPod, expected: dict[str, x509.Certificate | None]) -> str:
    certs = [f"{r} port serial {c.serial_number:x}" for r, c in expected.items() if c is not None]
    return "healthy" + ("; serves " + ", ".join(certs) if certs else "")


def _rollback_files(host: host_.Host, pod: staticpod.StaticPod, backup: str | None) -> list[str]:
    if backup is None:
        return []
    # A CA certificate a CA renewal replaced is not rolled back: the renewed one has the same
    # key and subject (it cannot be what broke the component), and CA files are protected.
    return sorted(
        p for p in pod.files if p not in PROTECTED and host.exists(f"{backup}/old/{p.lstrip('/')}")
    )


def _restore(
    host: host_.Host, backup: str, files: list[str], now: Callable[[], dt.datetime]
) -> None:
    writes = []
    for path in files:
        old = host.read(f"{backup}/old/{path.lstrip('/')}")
        if old is None:
            raise transaction.TransactionError(f"{backup}/old{path}: missing from the backup")
        writes.append(transaction.Write(path, old))
    transaction.apply(host, writes, now(), retain=0, protected=PROTECTED)


def _journal(host: host_.Host, pod: staticpod.StaticPod, phase: str, **fields: Any) -> None:
    entry = {**_read_journal(host), "component": pod.name, "manifest": pod.manifest}
    entry.update(phase=phase, **fields)
    host.write_atomic(paths.RESTART_JOURNAL, json.dumps(entry, indent=1).encode(), mode=0o600)


def _read_journal(host: host_.Host) -> dict[str, Any]:
    """The restart journal, checked against its schema: it names files to rename and restore,
    so a damaged or planted one must not steer anything (it is reported and ignored)."""
    data = host.read(paths.RESTART_JOURNAL)
    return ownfiles.parse_restart_journal(data) if data else {}


def _owe(host: host_.Host, component: str) -> None:
    state = observe.read_state(host)
    owed = set(state.get("pendingRestarts", [])) | {component}
    state["pendingRestarts"] = sorted(owed)
    host.write_atomic(paths.STATE, json.dumps(state, indent=1).encode(), mode=0o600)
