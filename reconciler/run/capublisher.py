"""The leader's CA publisher: renew each CA once, publish the certificates, bring the
cluster-level copies in step. A component of ``kucero controller`` / ``kucero run`` (leader
only), beside the CSR signer.

Each reconcile (at start of a term, on any change of the ``kucero-ca`` ConfigMap, and at least
every ``checkInterval``): read the leader's own CAs under ``--host-root`` (it runs on a
control-plane node with the host root mounted), the ConfigMap, decide
(``decide.capublication``), renew from the key what is due (the key is loaded, used and
dropped here, never written anywhere, never logged), write the ConfigMap (certificates and
fingerprints only, with ``resourceVersion`` as a precondition), then ``cluster-info`` and
``kubeadm-config``, and check ``kube-root-ca.crt`` in kucero's namespace.

Nothing here writes a file on any node: nodes install what they accept, each in its own pass,
one at a time through the rotation slots. A leader change in the middle is safe: the new
leader finds the renewal published and keeps it; a renewal made but not yet published by a
leader that died is lost, and the new leader makes its own (nodes never saw the first).

Events (on the ``kucero-ca`` ConfigMap): ``CAPublished``, ``CAPublicationRepaired`` (the
ConfigMap held content nodes refuse: tampering, or a broken edit), ``CARenewalFailed``,
``ClusterInfoUpdated``, ``KubeadmConfigUpdated``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from reconciler import metrics as metrics_
from reconciler.cluster import capublish, configmaps, events
from reconciler.cluster import kube as kube_
from reconciler.decide import capublication, capublished, carenewal, pki, policy
from reconciler.model import kubeadm
from reconciler.node import host as host_
from reconciler.node import keys, observe

log = logging.getLogger(__name__)

# At most this long between two reconciles when nothing wakes the publisher (the policy's
# checkInterval when shorter): a missed watch event costs minutes, not a CA.
PERIOD_MAX_SECONDS = 600.0
# After a Conflict or an API error, try again this soon.
RETRY_SECONDS = 2.0

CurrentPolicy = Callable[[], policy.Policy | None]


@dataclasses.dataclass
class Outcome:
    """What one reconcile did (tests and logs read it)."""

    decisions: list[capublication.Decision] = dataclasses.field(default_factory=list)
    published: dict[str, x509.Certificate] = dataclasses.field(default_factory=dict)
    wrote: bool = False
    copies: dict[str, bool] = dataclasses.field(default_factory=dict)  # copy -> current
    errors: list[str] = dataclasses.field(default_factory=list)


class CAPublisher:
    name = "ca-publisher"
    serves_csrs = False

    def __init__(
        self,
        host_root: str | Path,
        namespace: str,
        metrics: metrics_.Metrics | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        period_seconds: float = PERIOD_MAX_SECONDS,
    ) -> None:
        self.host = host_.Host(host_root)
        self.namespace = namespace
        self.metrics = metrics or metrics_.Metrics()
        self.now = now
        self.period = period_seconds
        self._wake = threading.Event()
        self.reconciles = 0

    @property
    def source(self) -> str:
        return f"ConfigMap {self.namespace}/{capublished.NAME}"

    def run(self, kube: kube_.Kube, stop: threading.Event, current: CurrentPolicy) -> None:
        """Reconcile until ``stop`` is set (the end of this leader's term)."""
        watcher = threading.Thread(
            target=kube.watch_forever,
            args=(
                configmaps.collection(self.namespace),
                configmaps.watch_params(capublished.NAME),
                lambda _event: self._wake.set(),
                stop,
                lambda _items: self._wake.set(),
            ),
            name="ca-publisher-watch",
        )
        watcher.start()
        threading.Thread(target=self._wake_on, args=(stop,), daemon=True).start()
        try:
            while not stop.is_set():
                self._wake.clear()
                wait = self.period
                loaded = current()
                if loaded is not None:
                    spec = policy.resolve(loaded, {})
                    wait = min(wait, spec.check_interval.total_seconds())
                    try:
                        outcome = self.reconcile(kube, spec)
                    except kube_.KubeError as e:
                        outcome = Outcome(errors=[str(e)])
                    for error in outcome.errors:
                        log.warning("CA publication: %s", error)
                    if outcome.errors:
                        wait = RETRY_SECONDS
                self._wake.wait(wait)
        finally:
            watcher.join()

    def policy_changed(self) -> None:
        """A policy edit (``ca.mode: renew``, a new ``renewBefore``) is acted on at once."""
        self._wake.set()

    def _wake_on(self, stop: threading.Event) -> None:
        stop.wait()
        self._wake.set()

    def reconcile(self, kube: kube_.Kube, spec: Any) -> Outcome:
        """One pass; raises ``KubeError`` only for reading the ConfigMap."""
        self.reconciles += 1
        out = Outcome()
        now = self.now()
        current = capublish.read(kube, self.namespace)
        data = (current or {}).get("data") or {}
        published = capublished.decode(data, self.source)
        out.decisions = capublication.decide(spec, observe.read_cas(self.host), published, now)
        if not out.decisions:
            return out
        renewed = self._renew(kube, spec, current, out, now)
        new_data = capublication.data_for(out.decisions, renewed, data)
        out.published = {
            n: c.cert
            for n, c in capublished.decode(new_data, self.source).cas.items()
            if c.cert is not None
        }
        if new_data != data:
            try:
                written = capublish.write(kube, self.namespace, current, new_data)
            except kube_.KubeError as e:  # Conflict: someone wrote meanwhile; read again soon
                out.errors.append(f"{self.source}: not written: {e}")
                return out
            out.wrote = True
            self._announce(kube, written, out, renewed)
        self._metrics(new_data, out)
        if "ca" in out.published:
            self._copies(kube, out.published["ca"], list(out.published.values()), out)
        return out

    # --- steps ---------------------------------------------------------------------------

    def _renew(
        self,
        kube: kube_.Kube,
        spec: Any,
        current: dict[str, Any] | None,
        out: Outcome,
        now: dt.datetime,
    ) -> dict[str, x509.Certificate]:
        renewed = {}
        for decision in out.decisions:
            if decision.step != capublication.Step.RENEW:
                continue
            ca = kubeadm.CA_BY_NAME[decision.name]
            try:
                cert = pki.load_cert(self.host.read(ca.cert) or b"")
                key = pki.load_key(self.host.read(ca.key) or b"")
                renewed[decision.name] = carenewal.renew(
                    cert, key, keys.new_serial(), now, spec.ca.certificate_validity
                )
            except (host_.HostError, ValueError) as e:  # PKIError and CARenewalError included
                note = f"{decision.name}: cannot renew from {ca.key}: {_no_key_text(e)}"
                out.errors.append(note)
                self._event(kube, current, "CARenewalFailed", note, events.WARNING)
        return renewed

    def _announce(
        self,
        kube: kube_.Kube,
        written: dict[str, Any],
        out: Outcome,
        renewed: dict[str, x509.Certificate],
    ) -> None:
        for d in out.decisions:
            if d.refused is not None:
                note = f"{d.name}: the ConfigMap held what nodes refuse ({d.refused}); replaced"
                self._event(kube, written, "CAPublicationRepaired", note, events.WARNING)
        names = ", ".join(
            f"{n} until {c.not_valid_after_utc:%Y-%m-%d}" + (" (renewed)" if n in renewed else "")
            for n, c in sorted(out.published.items())
        )
        log.info("published CA certificates: %s", names)
        self._event(kube, written, "CAPublished", f"published {names}", events.NORMAL)

    def _metrics(self, data: dict[str, str], out: Outcome) -> None:
        for name, cert in out.published.items():
            self.metrics.ca_published.labels(name).set(cert.not_valid_after_utc.timestamp())
        for name, when in capublished.previous_not_after(data).items():
            self.metrics.ca_previous.labels(name).set(when.timestamp())

    def _copies(
        self,
        kube: kube_.Kube,
        cert: x509.Certificate,
        certs: list[x509.Certificate],
        out: Outcome,
    ) -> None:
        """cluster-info and kubeadm-config brought in step; kube-root-ca.crt checked."""
        changes: list[tuple[str, tuple[str, str], Callable[[Any], Any], str]] = [
            ("cluster-info", capublish.CLUSTER_INFO,
             lambda d: capublication.cluster_info(d, cert), "ClusterInfoUpdated"),
            ("kubeadm-config", capublish.KUBEADM_CONFIG,
             lambda d: capublication.pem_values(d, certs), "KubeadmConfigUpdated"),
        ]  # fmt: skip
        for copy, where, change, reason in changes:
            try:
                obj = capublish.get(kube, where)
                if obj is None:
                    continue
                new = change(obj.get("data") or {})
                if new is not None:
                    capublish.update(kube, obj, new)
                    note = f"{where[0]}/{where[1]} now trusts the published cluster CA"
                    self._event(kube, None, reason, note, events.NORMAL)
                out.copies[copy] = True
            except kube_.KubeError as e:
                out.copies[copy] = False
                out.errors.append(f"{where[0]}/{where[1]}: {e}")
        try:
            root = capublish.get(kube, (self.namespace, capublish.ROOT_CA))
            if root is not None:
                out.copies[capublish.ROOT_CA] = capublication.root_ca_current(
                    root.get("data") or {}, cert
                )
        except kube_.KubeError as e:
            out.errors.append(f"{self.namespace}/{capublish.ROOT_CA}: {e}")
        for copy, ok in out.copies.items():
            self.metrics.ca_copy_current.labels(copy).set(1 if ok else 0)

    def _event(
        self,
        kube: kube_.Kube,
        regarding: dict[str, Any] | None,
        reason: str,
        note: str,
        type_: str,
    ) -> None:
        obj = regarding or capublish.read(kube, self.namespace)
        if obj is None:
            log.info("%s: %s", reason, note)
            return
        obj = {**obj, "apiVersion": "v1", "kind": "ConfigMap"}
        events.emit(kube, obj, reason, note, type_, "PublishCA")


def _no_key_text(error: Exception) -> str:
    """The reason, never the key: parser messages could quote what they read."""
    text = str(error)
    return text if len(text) < 200 and "PRIVATE" not in text else type(error).__name__
