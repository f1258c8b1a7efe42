"""What the leader publishes about the CAs, and the cluster-level copies it brings in step.

The leader runs on a control-plane node with its CA keys. For each CA, with ``ca.mode: renew``:

- the **published** certificate (the ``kucero-ca`` ConfigMap), if the rule of
  ``carenewal.check_published`` accepts it against the leader's own CA, and the CA file on the
  leader's disk are the candidates; the later-ending one is the CA in force;
- if even that is due (``ca.renewBefore``), it is **renewed** from the key, once: a new leader
  (a leader change in the middle) finds the renewal already published and keeps it;
- if the ConfigMap holds anything else for that CA (another key, another subject, garbage, a
  wrong fingerprint: tampering), it is **overwritten** with the CA in force, and the leader says
  so; nodes refuse such content in the meantime, so nothing is lost;
- a CA whose key is absent (external CA), unusable, or not self-signed is not published.

The cluster-level copies: ``cluster-info`` in ``kube-public`` (the kubeconfig ``kubeadm join``
trusts; kube-controller-manager's bootstrap signer re-signs it) and ``kubeadm-config`` in
``kube-system`` (only if it holds PEM certificates of a CA, which kubeadm's does not by
default) get the published certificate wherever they hold an older one of the same CA. The
``kube-root-ca.crt`` ConfigMaps are kube-controller-manager's to publish from
``--root-ca-file``: it does so once it restarts with the renewed file (a node's pass restarts
it); ``root_ca_current`` says whether one already did.

Pure: values in, values out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping
from typing import Any

from cryptography import x509

from reconciler.decide import capublished, carenewal, kubeconfig, pki, trustanchors, yamldoc
from reconciler.model import hoststate, nodespec


class Step(enum.StrEnum):
    KEEP = "Keep"  # the published certificate is the CA in force
    PUBLISH = "Publish"  # the CA file on the leader's disk is, and is not published yet
    RENEW = "Renew"  # even the CA in force is due: renew it from the key
    SKIP = "Skip"  # cannot be published (no usable key): ``detail`` says why


@dataclasses.dataclass(frozen=True)
class Decision:
    name: str
    step: Step
    cert: x509.Certificate | None  # what to publish (None for RENEW: made from the key)
    detail: str
    # what the published ConfigMap held for this CA and refused (tampering), if anything
    refused: str | None = None
    # the end of the certificate a renewal replaces (handed-out kubeconfigs embed it)
    replaces: dt.datetime | None = None


def decide(
    spec: nodespec.NodeSpec,
    cas: Mapping[str, hoststate.CAFile],
    published: hoststate.Published,
    now: dt.datetime,
) -> list[Decision]:
    """One decision per CA the leader's node has. Pure."""
    if spec.ca.mode != "renew":
        return []
    return [_one(spec, ca, published, now) for ca in cas.values() if ca.cert is not None]


def data_for(
    decisions: list[Decision],
    renewed: Mapping[str, x509.Certificate],
    current: Mapping[str, object],
) -> dict[str, str]:
    """The ConfigMap's ``data`` after ``decisions`` (``renewed``: the RENEW ones, made)."""
    certs: dict[str, x509.Certificate] = {}
    previous = capublished.previous_not_after(current)
    for d in decisions:
        cert = renewed.get(d.name) if d.step == Step.RENEW else d.cert
        if cert is not None:
            certs[d.name] = cert
        if d.replaces is not None:
            previous[d.name] = d.replaces
    return capublished.encode(certs, {n: w for n, w in previous.items() if n in certs})


def cluster_info(data: Mapping[str, Any], target: x509.Certificate) -> dict[str, str] | None:
    """``cluster-info``'s new ``data`` with its kubeconfig trusting ``target`` where it
    trusted an older certificate of that CA; None when nothing changes (or it is not ours to
    understand: no kubeconfig, bad YAML)."""
    text = data.get("kubeconfig")
    if not isinstance(text, str):
        return None
    try:
        document = kubeconfig.parse(text)
    except kubeconfig.KubeconfigError:
        return None
    held = [c for pem in trustanchors.ca_data_of(document) for c in trustanchors.certs_in_pem(pem)]
    if not _behind(held, target):
        return None
    new = trustanchors.rewrite_kubeconfig(document, target)
    return {**{k: str(v) for k, v in data.items()}, "kubeconfig": yamldoc.dump(new)}


def pem_values(data: Mapping[str, Any], targets: list[x509.Certificate]) -> dict[str, str] | None:
    """A ConfigMap's ``data`` (``kubeadm-config``) with every PEM certificate of a CA in
    ``targets`` that ends before it replaced; None when it holds none."""
    out = {k: str(v) for k, v in data.items()}
    changed = False
    for key, value in out.items():
        raw = value.encode()
        held = trustanchors.certs_in_pem(raw)
        for target in targets:
            if _behind(held, target):
                raw = trustanchors.rewrite_pem(raw, target)
        if raw.decode() != value:
            out[key], changed = raw.decode(), True
    return out if changed else None


def root_ca_current(data: Mapping[str, Any], target: x509.Certificate) -> bool:
    """Whether a ``kube-root-ca.crt`` ConfigMap's ``ca.crt`` trusts ``target``'s CA no
    shorter than ``target``."""
    value = data.get("ca.crt")
    held = trustanchors.certs_in_pem(value.encode()) if isinstance(value, str) else ()
    mine = [c for c in held if carenewal.same_ca(c, target)]
    return any(c.not_valid_after_utc >= target.not_valid_after_utc for c in mine)


def _behind(
    held: list[x509.Certificate] | tuple[x509.Certificate, ...], target: x509.Certificate
) -> bool:
    mine = [c for c in held if carenewal.same_ca(c, target)]
    return bool(mine) and max(c.not_valid_after_utc for c in mine) < target.not_valid_after_utc


def _one(
    spec: nodespec.NodeSpec,
    ca: hoststate.CAFile,
    published: hoststate.Published,
    now: dt.datetime,
) -> Decision:
    local = ca.cert
    assert local is not None
    if not ca.key_present:
        return Decision(ca.name, Step.SKIP, None, f"{ca.name}: the CA key is absent (external CA)")
    if ca.key_error is not None:
        return Decision(ca.name, Step.SKIP, None, f"{ca.name}: {ca.key_error}")
    if not pki.is_ca(local) or not carenewal.self_signed(local):
        return Decision(ca.name, Step.SKIP, None, f"{ca.name}: {ca.path} is not a self-signed CA")
    offered = published.cas.get(ca.name)
    accepted: x509.Certificate | None = None
    refused: str | None = None
    if offered is not None and offered.cert is not None:
        verdict = carenewal.check_published(offered.cert, local, now)
        if verdict.accepted:
            accepted = offered.cert
        else:
            refused = f"{verdict.refusal}: {verdict.detail}"
    elif offered is not None:
        refused = f"{offered.refusal or carenewal.Refusal.UNPARSEABLE}: {offered.error}"
    best = local
    if accepted is not None and accepted.not_valid_after_utc >= local.not_valid_after_utc:
        best = accepted
    if carenewal.due(best, now, spec.ca.renew_before):
        detail = f"{ca.name} ends {best.not_valid_after_utc:%Y-%m-%d}: renewed from its key"
        return Decision(ca.name, Step.RENEW, None, detail, refused, best.not_valid_after_utc)
    if best is accepted:
        return Decision(ca.name, Step.KEEP, accepted, f"{ca.name}: published, in force", refused)
    detail = f"{ca.name}: {ca.path} (until {best.not_valid_after_utc:%Y-%m-%d}) published"
    return Decision(ca.name, Step.PUBLISH, best, detail, refused)
