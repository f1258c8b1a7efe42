"""The kubelet's certificate configuration: what to repair, decided from values.

Two repairs, both from the original kucero:

* ``kubelet.conf`` made by kubeadm < 1.17 embeds the kubelet's first client certificate, which
  the kubelet never rotates in place. Pointing ``client-certificate``/``client-key`` at
  ``kubelet-client-current.pem`` (the rotated pair) fixes it, but only when that file holds a
  valid certificate for this very node: otherwise the repair would lock the kubelet out.
* ``config.yaml`` gets ``rotateCertificates`` and ``serverTLSBootstrap`` as the policy says. The
  edit is textual (one line replaced or appended) so comments and formatting survive, and then
  checked by parsing: if the result does not mean "the old document plus our two fields", we
  fall back to a full YAML dump of exactly that.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

from cryptography import x509

from reconciler.decide import pki, yamldoc
from reconciler.model import actions, hoststate, nodespec
from reconciler.model.kubeadm import KUBELET_CLIENT_CURRENT

NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
KUBELET_CONFIGURATION = "KubeletConfiguration"
KUBELET_CONFIG_GROUP = "kubelet.config.k8s.io"


def desired_config(rotate_client: bool, rotate_server: bool) -> dict[str, bool]:
    return {"rotateCertificates": rotate_client, "serverTLSBootstrap": rotate_server}


def config_changes(config: Mapping[str, Any], desired: Mapping[str, bool]) -> dict[str, bool]:
    """The fields of ``desired`` that ``config`` does not already have. Unset is the
    kubelet's default, false for both: unset (or null) and wanted false is not a change."""
    return {k: v for k, v in desired.items() if _or_false(config.get(k)) is not v}


def _or_false(value: object) -> object:
    return False if value is None else value


@dataclasses.dataclass(frozen=True)
class ConfigEdit:
    """What a pass changes in ``config.yaml``, and what it refuses or leaves alone, and why."""

    changes: dict[str, bool]
    findings: tuple[actions.Finding, ...] = ()


def approver_known(spec: nodespec.NodeSpec) -> bool:
    """Whether something will approve the kubelet's serving CSRs: kucero's signer is active
    (cluster mode says so in the desired state), or the policy itself sets
    ``kubelet.rotateServerCertificates`` (the operator vouches for an approver)."""
    return spec.serving_csr_approver or spec.kubelet.rotate_server_certificates_set


def conf_on_rotated_file(state: hoststate.Kubelet, fixing_conf: bool) -> bool:
    """Whether ``kubelet.conf`` uses ``kubelet-client-current.pem`` after this pass."""
    creds = state.conf.credentials if state.conf is not None else None
    on_file = creds is not None and not creds.embedded and creds.cert_file == KUBELET_CLIENT_CURRENT
    return fixing_conf or on_file


def config_edit(
    spec: nodespec.NodeSpec, config: Mapping[str, Any], conf_on_rotated: bool
) -> ConfigEdit:
    """The edit of ``config.yaml`` a pass makes; pure, shared by the plan and the executor.

    * ``serverTLSBootstrap: true`` without an approver breaks ``kubectl logs/exec`` and
      metrics on the node: it is switched on only when ``approver_known``; otherwise it is
      left as it is, with an info finding saying why.
    * ``rotateCertificates: false`` while ``kubelet.conf`` uses the rotated
      ``kubelet-client-current.pem`` locks the kubelet out when that certificate expires
      (kubeadm always writes true): refused, with an error finding.
    """
    desired = desired_config(
        spec.kubelet.rotate_client_certificates, spec.kubelet.rotate_server_certificates
    )
    findings = []
    if desired["serverTLSBootstrap"] and not approver_known(spec):
        del desired["serverTLSBootstrap"]
        if config.get("serverTLSBootstrap") is not True:
            findings.append(
                actions.Finding(
                    "kubelet",
                    actions.Reason.SERVING_CSR_APPROVER_UNKNOWN,
                    actions.Severity.INFO,
                    "serverTLSBootstrap left as it is: no approver of kubelet serving CSRs is "
                    "known to run (kucero's signer is not active here) and the policy does not "
                    "set kubelet.rotateServerCertificates; set it to true if one runs",
                )
            )
    changes = config_changes(config, desired)
    if changes.get("rotateCertificates") is False and conf_on_rotated:
        del changes["rotateCertificates"]
        findings.append(
            actions.Finding(
                "kubelet",
                actions.Reason.CLIENT_ROTATION_REQUIRED,
                actions.Severity.ERROR,
                "rotateClientCertificates is false but kubelet.conf uses "
                f"{KUBELET_CLIENT_CURRENT}, which only the kubelet's rotation renews: writing "
                "rotateCertificates: false would lock the kubelet out when it expires; refused",
            )
        )
    if changes.get("serverTLSBootstrap") and not spec.serving_csr_approver:
        findings.append(
            actions.Finding(
                "kubelet",
                actions.Reason.SERVING_CSR_APPROVER_NEEDED,
                actions.Severity.WARNING,
                "serverTLSBootstrap: the policy switches it on; the kubelet's serving CSRs "
                "must be approved by an approver you run (kucero's signer is not active here)",
            )
        )
    return ConfigEdit(changes, tuple(findings))


def client_cert_problem(
    cert: x509.Certificate | None,
    key_matches: bool,
    node_name: str | None,
    now: dt.datetime,
    issued_by_ca: bool = True,
) -> str | None:
    """Why ``kubelet-client-current.pem`` must not be used, or None when it can be."""
    if cert is None:
        return "holds no certificate"
    if not key_matches:
        return "its certificate does not match its key"
    if not issued_by_ca:
        return "its certificate is not signed by the cluster CA (/etc/kubernetes/pki/ca.crt)"
    if now < cert.not_valid_before_utc:
        return f"its certificate is not valid before {cert.not_valid_before_utc.isoformat()}"
    if now >= cert.not_valid_after_utc:
        return f"its certificate expired at {cert.not_valid_after_utc.isoformat()}"
    cn = pki.common_name(cert)
    if node_name is None:
        return "the node name is unknown (set --node-name or NODE_NAME)"
    if cn != NODE_PREFIX + node_name:
        return f"its certificate is for {cn!r}, not {NODE_PREFIX + node_name!r}"
    if NODES_GROUP not in pki.organizations(cert):
        return f"its certificate is not in group {NODES_GROUP!r}"
    return None


def node_name_from(cert: x509.Certificate | None) -> str | None:
    cn = pki.common_name(cert) if cert is not None else None
    if cn and cn.startswith(NODE_PREFIX):
        return cn[len(NODE_PREFIX) :]
    return None


def set_fields(text: str, changes: Mapping[str, bool]) -> str:
    """``text`` with top-level boolean ``changes`` applied, keeping every other byte."""
    original = _load_mapping(text)
    edited = text
    for key, value in changes.items():
        line = f"{key}: {'true' if value else 'false'}"
        pattern = re.compile(rf"^{re.escape(key)}[ \t]*:[^\n#]*?(?P<comment>[ \t]+#[^\n]*)?$", re.M)
        if pattern.search(edited):
            edited = pattern.sub(_keep_comment(line), edited, count=1)
        else:
            edited = edited + ("" if edited.endswith("\n") or not edited else "\n") + line + "\n"
    wanted = {**original, **changes}
    try:
        if _load_mapping(edited) == wanted:
            return edited
    except ValueError:
        pass
    return yamldoc.dump(wanted)


def _keep_comment(line: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        return line + (match.group("comment") or "")

    return replace


def parse_config(text: str | bytes) -> dict[str, Any]:
    """A ``KubeletConfiguration``; anything else (a link to ``admin.conf``, an empty file) is
    a ``ValueError`` so it is reported and never edited."""
    doc = _load_mapping(text)
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if (
        kind != KUBELET_CONFIGURATION
        or not isinstance(api_version, str)
        or not api_version.startswith(KUBELET_CONFIG_GROUP + "/")
    ):
        raise ValueError(
            f"not a {KUBELET_CONFIGURATION} (apiVersion {api_version!r}, kind {kind!r}); "
            "left untouched"
        )
    return doc


def _load_mapping(text: str | bytes) -> dict[str, Any]:
    try:
        doc = yamldoc.load(text)
    except yamldoc.YAMLDocError as e:
        raise ValueError(f"invalid YAML: {e}") from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError("not a KubeletConfiguration (expected a YAML mapping)")
    return doc
