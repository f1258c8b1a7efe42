"""Generated policies, kubeconfigs and kubelet configs: every one is either accepted or refused
with our own error (``PolicyError``, ``KubeconfigError``, ``ValueError``), never an unhandled
exception, and what is accepted can be used (resolved, edited, dumped and read back).

Three kinds of input each: YAML text from a YAML-ish alphabet (syntax, anchors, aliases,
tags, flow and block styles), well-formed documents of the right shape with any JSON-ish value
at any place, and valid documents with one field replaced. Profiles and counts: tests/conftest.py
(``quick`` in ``make test``, ``long`` in ``make fuzz``).
"""

from __future__ import annotations

import base64
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from reconciler.decide import kubeconfig, kubelet, policy, yamldoc
from reconciler.model import hoststate

# Characters that make YAML interesting: structure, anchors/aliases, tags, quotes, comments.
YAML_ALPHABET = "abkl01.-_ :,[]{}&*!|>'\"#?\n\t%@`\\<=~"
KEYS = st.sampled_from(
    ["a", "b", "spec", "kubeadm", "kubelet", "users", "user", "name", "1", "", "<<", "true"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["720h", "1h", "-3h", "0s", "2020-01-01", "none", "true", "apiserver"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
YAML_TEXT = st.text(alphabet=YAML_ALPHABET, max_size=200)


def dumped(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False)


# --- policies ----------------------------------------------------------------------------

HEAD = {"apiVersion": policy.API_VERSION, "kind": policy.KIND}
# A valid policy that sets every field the schema has, so checking it walks every subschema.
FULL_POLICY: dict[str, Any] = {
    **HEAD,
    "metadata": {"name": "full", "labels": {"a": "b"}},
    "spec": {
        "paused": False,
        "checkInterval": "1h",
        "kubeadm": {
            "enabled": True,
            "renewBefore": "720h",
            "certificateValidity": "8760h",
            "certificates": ["apiserver", "etcd-server"],
            "restart": "crictl",
            "healthTimeout": "5m",
            "backup": {"retain": 3},
        },
        "kubelet": {
            "fixKubeletConf": True,
            "rotateClientCertificates": True,
            "rotateServerCertificates": False,
            "restart": "none",
        },
        "csrSigner": {
            "enabled": True,
            "caCertPath": "/etc/kubernetes/pki/ca.crt",
            "caKeyPath": "/etc/kubernetes/pki/ca.key",
            "certificateValidity": "2160h",
            "allowedDNSSuffixes": [".cluster.example"],
            "maxDNSNames": 2,
            "allowedIPRanges": ["10.0.0.0/8", "fd00::/8"],
            "requireNodeAddresses": False,
            "resolveDNSNames": True,
            "serviceCIDRs": ["10.96.0.0/12", "fd00:10:96::/112"],
            "clusterDomain": "k8s.internal",
            "onReject": "ignore",
        },
        "rollout": {"maxConcurrentNodes": 2, "cordon": True, "drain": False},
        "overrides": [
            {
                "nodeSelector": {
                    "matchLabels": {"pool": "edge"},
                    "matchExpressions": [
                        {"key": "zone", "operator": "In", "values": ["a", "b"]},
                        {"key": "gpu", "operator": "DoesNotExist"},
                    ],
                },
                "spec": {
                    "paused": True,
                    "checkInterval": "30m",
                    "kubeadm": {"renewBefore": "1000h"},
                    "kubelet": {"restart": "systemctl"},
                    "csrSigner": {"onReject": "deny"},
                },
            }
        ],
    },
}
POLICY_FIELDS = [
    ("spec", "paused"),
    ("spec", "checkInterval"),
    ("spec", "kubeadm", "renewBefore"),
    ("spec", "kubeadm", "certificateValidity"),
    ("spec", "kubeadm", "certificates"),
    ("spec", "kubeadm", "restart"),
    ("spec", "kubeadm", "backup", "retain"),
    ("spec", "kubelet", "fixKubeletConf"),
    ("spec", "kubelet", "rotateClientCertificates"),
    ("spec", "kubelet", "rotateServerCertificates"),
    ("spec", "csrSigner", "allowedIPRanges"),
    ("spec", "csrSigner", "allowedDNSSuffixes"),
    ("spec", "csrSigner", "maxDNSNames"),
    ("spec", "rollout", "maxConcurrentNodes"),
    ("spec", "overrides"),
    ("spec", "overrides", 0, "nodeSelector"),
    ("spec", "overrides", 0, "spec", "kubeadm", "renewBefore"),
    ("spec", "overrides", 0, "spec", "checkInterval"),
    ("spec", "overrides", 0, "spec", "kubelet"),
    ("metadata",),
    ("kind",),
]


def use_policy(text: str) -> None:
    try:
        loaded = policy.load(text, "fuzz.yaml")
    except policy.PolicyError as e:
        assert e.errors and all(line.startswith("fuzz.yaml: ") for line in e.errors)
        return
    for labels in ({}, {"pool": "edge"}):
        spec = policy.resolve(loaded, labels)
        doc = {**HEAD, "spec": policy.spec_document(spec)["spec"]}
        again = policy.resolve(policy.load(dumped(doc), "again"), {})
        assert again.kubeadm == spec.kubeadm and again.kubelet == spec.kubelet


@given(YAML_TEXT)
def test_policy_yaml_text(text: str) -> None:
    use_policy("apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n" + text)


@given(st.dictionaries(KEYS | st.sampled_from(["apiVersion", "kind", "metadata"]), VALUES))
def test_policy_any_mapping(extra: dict[str, Any]) -> None:
    use_policy(dumped({**HEAD, **extra}))


@given(st.sampled_from(POLICY_FIELDS), VALUES)
def test_policy_one_field_replaced(field: tuple[str | int, ...], value: Any) -> None:
    doc: dict[str, Any] = {
        **HEAD,
        "spec": {
            "kubeadm": {"renewBefore": "720h"},
            "overrides": [
                {"nodeSelector": {"matchLabels": {"pool": "edge"}}, "spec": {"kubeadm": {}}}
            ],
        },
    }
    parent: Any = doc
    for part in field[:-1]:
        if isinstance(parent, dict):
            parent = parent.setdefault(part, {})
        elif isinstance(parent, list) and isinstance(part, int) and part < len(parent):
            parent = parent[part]
        else:
            break
    else:
        if isinstance(parent, dict):
            parent[field[-1]] = value
    use_policy(dumped(doc))


# --- kubeconfigs -------------------------------------------------------------------------

PEM = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [
        {
            "name": "kubernetes",
            "cluster": {
                "certificate-authority-data": base64.b64encode(PEM).decode(),
                "server": "https://10.0.0.11:6443",
            },
        }
    ],
    "contexts": [{"name": "admin@k", "context": {"cluster": "kubernetes", "user": "admin"}}],
    "current-context": "admin@k",
    "users": [
        {
            "name": "admin",
            "user": {
                "client-certificate-data": base64.b64encode(PEM).decode(),
                "client-key-data": base64.b64encode(b"KEY").decode(),
            },
        }
    ],
}
KUBECONFIG_FIELDS = [
    ("clusters",),
    ("clusters", 0),
    ("clusters", 0, "cluster"),
    ("clusters", 0, "cluster", "certificate-authority-data"),
    ("clusters", 0, "cluster", "certificate-authority"),
    ("clusters", 0, "name"),
    ("contexts",),
    ("contexts", 0, "context"),
    ("contexts", 0, "context", "user"),
    ("contexts", 0, "context", "cluster"),
    ("contexts", 0, "name"),
    ("current-context",),
    ("users",),
    ("users", 0),
    ("users", 0, "name"),
    ("users", 0, "user"),
    ("users", 0, "user", "client-certificate-data"),
    ("users", 0, "user", "client-key-data"),
    ("users", 0, "user", "client-certificate"),
    ("users", 0, "user", "client-key"),
]


def use_kubeconfig(text: str) -> None:
    try:
        doc = kubeconfig.parse(text)
        creds = kubeconfig.credentials(doc, "/etc/kubernetes/admin.conf")
    except kubeconfig.KubeconfigError:
        return
    assert isinstance(creds, hoststate.Credentials)
    for data in (
        kubeconfig.with_embedded(doc, creds.user, b"CERT", b"KEY", ca_pem=PEM),
        kubeconfig.with_file_references(doc, creds.user, "/a.pem", "/a.pem"),
    ):
        again = kubeconfig.credentials(kubeconfig.parse(data), "/etc/kubernetes/admin.conf")
        assert again.user == creds.user


@given(YAML_TEXT)
def test_kubeconfig_yaml_text(text: str) -> None:
    use_kubeconfig(text)


@given(st.sampled_from(KUBECONFIG_FIELDS), VALUES)
def test_kubeconfig_one_field_replaced(field: tuple[str | int, ...], value: Any) -> None:
    doc: Any = yaml.safe_load(dumped(KUBECONFIG))
    parent = doc
    for part in field[:-1]:
        parent = parent[part]
    parent[field[-1]] = value
    use_kubeconfig(dumped(doc))


# --- kubelet configs ---------------------------------------------------------------------

KUBELET_HEAD = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
KUBELET_KEYS = st.sampled_from(
    ["rotateCertificates", "serverTLSBootstrap", "authentication", "kind", "apiVersion", "x"]
)


def use_kubelet_config(text: str, changes: dict[str, bool]) -> None:
    try:
        config = kubelet.parse_config(text)
    except ValueError:
        return
    edited = kubelet.set_fields(text, changes)
    assert kubelet.parse_config(edited) == {**config, **changes}


@given(
    YAML_TEXT,
    st.dictionaries(st.sampled_from(["rotateCertificates", "serverTLSBootstrap"]), st.booleans()),
)
def test_kubelet_config_yaml_text(text: str, changes: dict[str, bool]) -> None:
    use_kubelet_config(KUBELET_HEAD + text, changes)


@given(
    st.dictionaries(KUBELET_KEYS | KEYS, VALUES, max_size=6),
    st.dictionaries(st.sampled_from(["rotateCertificates", "serverTLSBootstrap"]), st.booleans()),
    st.booleans(),
)
def test_kubelet_config_any_mapping(
    fields: dict[str, Any], changes: dict[str, bool], flow: bool
) -> None:
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        **fields,
    }
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=flow)
    use_kubelet_config(text, changes)


@given(YAML_TEXT)
def test_yamldoc_refuses_only_with_its_own_error(text: str) -> None:
    try:
        yamldoc.load(text, unique_keys=True, string_keys=True)
    except yamldoc.YAMLDocError as e:
        assert "\n" not in str(e)
