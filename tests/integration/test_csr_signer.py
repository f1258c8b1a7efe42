"""kucero's kubelet serving CSR signer against the real kube-apiserver, every CSR created as
the node user (a client certificate ``CN=system:node:<n>, O=system:nodes`` from the API server's
client CA), never as admin. The signer's host root holds the control plane's own apiserver.crt,
as the leader's node does; its policy allows what the test kubelets ask for
(``signer_env.KUBELET_ALLOWLIST``).

Most tests use a control plane of their own without kube-controller-manager, so that kucero is
the only signer and "signed by the configured CA" proves kucero signed. The race with
kube-controller-manager's ``csrsigning`` (which kubeadm clusters run with the cluster CA) is
tested on the session's control plane, which runs it.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from reconciler import fabricate
from reconciler.cluster import csr as csr_api
from reconciler.cluster import events
from reconciler.cluster import kube as kube_
from reconciler.decide import csr, pki
from tests import csrs, signer_env
from tests.controlplane import binaries, cluster, kubeadm_node

pytestmark = pytest.mark.controlplane
N1 = [("InternalIP", "10.20.0.1"), ("Hostname", "n1"), ("InternalDNS", "n1.cluster.internal")]
N2 = [("InternalIP", "10.20.0.2"), ("Hostname", "n2")]
# The kubelet's manager waits for its certificate and retries with back-off; a minute is ample.
KUBELET_TIMEOUT_SECONDS = 60


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ControlPlane]:
    binaries.require("etcd", "kube-apiserver")
    with signer_env.control_plane(tmp_path_factory.mktemp("csr-plane"), False) as made:
        yield made


@pytest.fixture(scope="module")
def admin(plane: cluster.ControlPlane) -> Iterator[kube_.Kube]:
    made = kube_.connect(str(plane.admin_kubeconfig))
    signer_env.make_node(made, "n1", N1)
    signer_env.make_node(made, "n2", N2)
    yield made
    made.close()


@pytest.fixture(scope="module")
def ca_root(
    tmp_path_factory: pytest.TempPathFactory, plane: cluster.ControlPlane
) -> tuple[Path, Any, Any]:
    root = tmp_path_factory.mktemp("host")
    return signer_env.host_root_with_ca(root, apiserver_crt=plane.pki / "apiserver.crt")


@pytest.fixture  # one signer at a time: tests with another policy start their own
def signer(
    plane: cluster.ControlPlane, admin: kube_.Kube, ca_root: tuple[Path, Any, Any]
) -> Iterator[Any]:
    with signer_env.running_signer(plane, ca_root[0], signer_env.load_policy()) as running:
        yield running


@pytest.fixture(scope="module")
def n1(plane: cluster.ControlPlane) -> kube_.Kube:
    return signer_env.node_kube(plane, "n1")


def _unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns() % 10**12}"


def _certificate(obj: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(obj["status"]["certificate"]))


@pytest.mark.parametrize("key", ["ecdsa", "rsa"])
def test_kubelet_serving_manager_receives_a_certificate_from_kucero(
    plane: cluster.ControlPlane,
    admin: kube_.Kube,
    signer: Any,
    ca_root: tuple[Path, Any, Any],
    tmp_path: Path,
    key: str,
) -> None:
    binaries.require("kubeletserving")
    kubeconfig = plane.user_kubeconfig("system:node:n1", ("system:nodes",))
    argv = [binaries.path("kubeletserving"), f"--kubeconfig={kubeconfig}", "--node-name=n1"]
    argv += [f"--address={t}={a}" for t, a in N1]
    argv += [f"--cert-dir={tmp_path}", f"--key={key}", f"--timeout={KUBELET_TIMEOUT_SECONDS}s"]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=KUBELET_TIMEOUT_SECONDS + 30
    )
    assert done.returncode == 0, done.stderr[-3000:]

    pem = Path(done.stdout.strip()).read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    assert pki.issued_by(cert, ca_root[1]), "not signed by the configured CA"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == ["n1", "n1.cluster.internal"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.20.0.1")]
    assert cert.subject.rfc4514_string() == "CN=system:node:n1,O=system:nodes"
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment == (key == "rsa")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert pki.describe_key(cert.public_key()) == (
        "RSA-2048" if key == "rsa" else "ECDSA-secp256r1"
    )  # type: ignore[arg-type]
    # the CSR the manager created carries kucero's approval
    listed = admin.list(csr_api.PATH, csr_api.WATCH_PARAMS)["items"]
    ours = [c for c in listed if signer_env.signed(c) and _certificate(c) == cert]
    assert len(ours) == 1
    approved = signer_env.conditions(ours[0])["Approved"]
    assert approved["reason"] == "KuceroApproved" and "self-signature" in approved["message"]


def _pem(node: str = "n1", **kwargs: Any) -> bytes:
    kwargs.setdefault("ips", ["10.20.0.1"])  # n1's InternalIP
    return csrs.request_pem(node, **kwargs)


# The API server's NodeRestriction admission refuses these before any signer sees them (kubeadm
# enables it); decide.csr denies them too (SubjectNotRequestor) for clusters without it.
REFUSED = "refused by NodeRestriction"
HOSTILE = [
    pytest.param(
        "n1",
        {"pem": _pem("n2", ips=["10.20.0.2"])},
        REFUSED,
        id="another-nodes-name",
    ),
    pytest.param(
        "n1",
        {"pem": _pem(cn="kube-apiserver")},
        REFUSED,
        id="cn-not-the-requestor",
    ),
    pytest.param(
        "n1", {"pem": _pem(ips=["10.20.0.2"])}, csr.Reason.IP_NOT_OWNED, id="ip-of-another-node"
    ),
    pytest.param(
        "n1",
        {"pem": _pem(dns=["kubernetes.default.svc"])},
        csr.Reason.API_SERVER_NAME,
        id="the-api-servers-name",
    ),
    pytest.param(
        "n1", {"pem": _pem(dns=["n1.example.org"])}, csr.Reason.DNS_NOT_ALLOWED, id="foreign-dns"
    ),
    pytest.param(
        "n1", {"pem": _pem(ips=["10.96.0.1"])}, csr.Reason.SERVICE_IP, id="the-service-ip"
    ),
    pytest.param(
        "n1", {"pem": _pem(ips=["192.168.1.1"])}, csr.Reason.IP_NOT_ALLOWED, id="outside-ranges"
    ),
    pytest.param(
        "n1", {"pem": _pem(emails=["admin@n1"])}, csr.Reason.FORBIDDEN_SAN, id="email-san"
    ),
    pytest.param(
        "n1",
        {"pem": _pem(uris=["spiffe://cluster/ns/kube-system"])},
        csr.Reason.FORBIDDEN_SAN,
        id="uri-san",
    ),
    pytest.param(
        "n1",
        {"usages": ["digital signature", "server auth", "client auth"]},
        csr.Reason.USAGES,
        id="client-auth-usage",
    ),
    pytest.param(
        "n1",
        {"pem": _pem(extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)])},
        csr.Reason.FORBIDDEN_EXTENSION,
        id="ca-true-extension",
    ),
    pytest.param(
        "n1",
        {"pem": _pem(key_kind="rsa-1024"), "usages": csrs.RSA_USAGES},
        csr.Reason.WEAK_KEY,
        id="rsa-1024",
    ),
    pytest.param("n1", {"pem": _pem(ips=[])}, csr.Reason.NO_SANS, id="no-sans"),
]


@pytest.mark.parametrize(("node", "spec", "reason"), HOSTILE)
def test_hostile_request_from_a_node_is_denied_and_never_signed(
    admin: kube_.Kube,
    signer: Any,
    n1: kube_.Kube,
    node: str,
    spec: dict[str, Any],
    reason: csr.Reason | str,
) -> None:
    name = _unique("hostile")
    pem = spec.pop("pem", None) or _pem()
    if reason == REFUSED:  # NodeRestriction: a node may only ask for its own CN
        with pytest.raises(kube_.Forbidden, match="can only create a node CSR"):
            signer_env.create_csr(n1, name, pem, **spec)
        with pytest.raises(kube_.NotFound):
            admin.get(csr_api.path(name))
        return
    signer_env.create_csr(n1, name, pem, **spec)
    obj = signer_env.wait_for(admin, name, signer_env.decided)
    denied = signer_env.conditions(obj)
    assert set(denied) == {"Denied"}, denied
    assert denied["Denied"]["reason"] == reason
    assert not signer_env.signed(obj)
    notes = _events(admin, name, reason)
    assert notes and notes[0]["type"] == "Warning"


# The attack of issue 17: a node adds the API server's names and addresses to its own
# Node.status (NodeRestriction lets it) and asks for a serving certificate for them.
ATTACKS = [
    pytest.param(
        ["kubernetes.default.svc"], [], csr.Reason.API_SERVER_NAME, id="kubernetes-default-svc"
    ),
    pytest.param([], ["10.96.0.1"], csr.Reason.SERVICE_IP, id="the-kubernetes-service-ip"),
    # in the control plane's apiserver.crt (tests/controlplane/flags.py: APISERVER_SANS)
    pytest.param(["localhost"], [], csr.Reason.API_SERVER_NAME, id="localhost"),
    pytest.param([], ["127.0.0.1"], csr.Reason.RESERVED_IP, id="loopback"),
    pytest.param(
        ["n-evil", "kubernetes.default.svc", "localhost"],
        ["10.20.0.66", "10.96.0.1"],
        csr.Reason.API_SERVER_NAME,
        id="all-of-them-beside-its-own",
    ),
]


@pytest.mark.parametrize(("dns", "ips", "reason"), ATTACKS)
def test_node_that_claims_the_api_servers_names_in_its_own_status_is_denied(
    plane: cluster.ControlPlane,
    admin: kube_.Kube,
    signer: Any,
    dns: list[str],
    ips: list[str],
    reason: csr.Reason,
) -> None:
    node = "n-evil"
    own = [("InternalIP", "10.20.0.66"), ("Hostname", node)]
    signer_env.make_node(admin, node, own)
    evil = signer_env.node_kube(plane, node)
    claimed = own + [("InternalDNS", d) for d in dns] + [("InternalIP", i) for i in ips]
    addresses = [{"type": t, "address": a} for t, a in dict.fromkeys(claimed)]
    # as the node itself: NodeRestriction lets a node write its own status
    evil.patch(f"/api/v1/nodes/{node}/status", {"status": {"addresses": addresses}})
    assert admin.get(f"/api/v1/nodes/{node}")["status"]["addresses"] == addresses
    time.sleep(0.5)  # the signer's Node watch sees the claim before the request
    denied_before = signer.metrics.csr_decisions.labels("denied", reason)._value.get()
    name = _unique("attack")
    signer_env.create_csr(evil, name, csrs.request_pem(node, dns=dns, ips=ips))
    obj = signer_env.wait_for(admin, name, signer_env.decided)
    assert set(signer_env.conditions(obj)) == {"Denied"}, signer_env.conditions(obj)
    assert signer_env.conditions(obj)["Denied"]["reason"] == reason
    assert not signer_env.signed(obj)
    notes = _events(admin, name, reason)
    assert notes and notes[0]["type"] == "Warning", notes
    assert _counted(signer.metrics.csr_decisions.labels("denied", reason), denied_before + 1) == (
        denied_before + 1
    )


def test_leaders_own_kubelet_gets_the_names_kubeadm_put_in_its_api_server_certificate(
    plane: cluster.ControlPlane, admin: kube_.Kube, tmp_path: Path
) -> None:
    """A control-plane node tree made by the real kubeadm (node cp-1, 10.0.0.11, its CA,
    apiserver.crt and kube-apiserver manifest): the leader on cp-1 signs its own kubelet's
    request for cp-1 and 10.0.0.11, which are in apiserver.crt, and refuses them to a worker
    that claims 10.0.0.11 in its status."""
    binaries.require("kubeadm")
    if os.geteuid() != 0:
        binaries.gate("kubeadm --rootfs chroots into the node tree: needs root")
    root = kubeadm_node.build(tmp_path / "cp-1", kubeadm_node.free_ports(), "cp-1", "10.0.0.11")
    ca_cert = pki.load_cert((root / "etc/kubernetes/pki/ca.crt").read_bytes())
    loaded = signer_env.load_policy(allowedIPRanges=["10.0.0.0/24"])
    signer_env.make_node(admin, "cp-1", [("InternalIP", "10.0.0.11"), ("Hostname", "cp-1")])
    signer_env.make_node(admin, "w-claims", [("InternalIP", "10.0.0.11"), ("Hostname", "w-claims")])
    with signer_env.running_signer(plane, root, loaded, node_name="cp-1"):
        own = _unique("own")
        cp1 = signer_env.node_kube(plane, "cp-1")
        signer_env.create_csr(cp1, own, csrs.request_pem("cp-1", dns=["cp-1"], ips=["10.0.0.11"]))
        signed = signer_env.wait_for(admin, own, signer_env.signed)  # AssertionError if not
        worker = signer_env.node_kube(plane, "w-claims")
        claim = _unique("claim")
        signer_env.create_csr(worker, claim, csrs.request_pem("w-claims", ips=["10.0.0.11"]))
        denied = signer_env.wait_for(admin, claim, signer_env.decided)
    assert set(signer_env.conditions(signed)) == {"Approved"}
    assert pki.issued_by(_certificate(signed), ca_cert)
    assert signer_env.conditions(denied)["Denied"]["reason"] == csr.Reason.API_SERVER_IP
    assert "/etc/kubernetes/pki/apiserver.crt" in signer_env.conditions(denied)["Denied"]["message"]


def test_dns_check_signs_a_name_that_resolves_to_the_node_and_denies_one_that_does_not(
    plane: cluster.ControlPlane, admin: kube_.Kube, n1: kube_.Kube, ca_root: tuple[Path, Any, Any]
) -> None:
    """resolveDNSNames with an injected resolver (no DNS in tests): only the names that passed
    every other check are looked up."""
    asked: list[str] = []

    def resolve(names: Any) -> dict[str, tuple[str, ...]]:
        asked.extend(names)
        return {n: ("10.20.0.1",) for n in names if n == "n1.cluster.internal"}

    loaded = signer_env.load_policy(resolveDNSNames=True)
    with signer_env.running_signer(plane, ca_root[0], loaded, resolve=resolve):
        good, bad, hostile = _unique("resolves"), _unique("unresolved"), _unique("hostile")
        signer_env.create_csr(n1, good, _pem(dns=["n1.cluster.internal"]))
        signer_env.create_csr(n1, bad, _pem(dns=["n1"]))
        signer_env.create_csr(n1, hostile, _pem(dns=["n1.example.org"]))
        signed = signer_env.wait_for(admin, good, signer_env.signed)
        denied = signer_env.wait_for(admin, bad, signer_env.decided)
        refused = signer_env.wait_for(admin, hostile, signer_env.decided)
    assert pki.issued_by(_certificate(signed), ca_root[1])
    assert signer_env.conditions(denied)["Denied"]["reason"] == csr.Reason.DNS_NOT_RESOLVED
    assert signer_env.conditions(refused)["Denied"]["reason"] == csr.Reason.DNS_NOT_ALLOWED
    assert sorted(asked) == ["n1", "n1.cluster.internal"]


def _bind_node_bootstrapper(admin: kube_.Kube, kind: str, name: str, namespace: str = "") -> None:
    subject = {"kind": kind, "name": name}
    if kind == "User":
        subject["apiGroup"] = "rbac.authorization.k8s.io"
    else:
        subject["namespace"] = namespace
    binding = {
        "metadata": {"name": _unique("csr-creator")},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:node-bootstrapper",
        },
        "subjects": [subject],
    }
    admin.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)


def test_node_name_outside_system_nodes_is_denied(
    plane: cluster.ControlPlane, admin: kube_.Kube, signer: Any
) -> None:
    signer_env.make_node(admin, "n9", [("InternalIP", "10.20.0.9")])
    _bind_node_bootstrapper(admin, "User", "system:node:n9")
    groupless = signer_env.kube_for(plane, "system:node:n9")  # no O=system:nodes
    name = _unique("groupless")
    _wait_for_rbac(lambda: signer_env.create_csr(groupless, name, _pem("n9", ips=["10.20.0.9"])))
    obj = signer_env.wait_for(admin, name, signer_env.decided)
    assert signer_env.conditions(obj)["Denied"]["reason"] == csr.Reason.REQUESTOR_NOT_IN_NODES
    assert not signer_env.signed(obj)


def test_service_account_requestor_is_denied(
    plane: cluster.ControlPlane, admin: kube_.Kube, signer: Any
) -> None:
    namespace = _unique("ns")
    admin.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    admin.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "sa"}})
    token = admin.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/sa/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": []},
        },
    )["status"]["token"]
    _bind_node_bootstrapper(admin, "ServiceAccount", "sa", namespace)
    account = kube_.connect(str(plane.token_kubeconfig(f"sa-{namespace}", token)))
    name = _unique("sa")
    _wait_for_rbac(lambda: signer_env.create_csr(account, name, _pem()))
    obj = signer_env.wait_for(admin, name, signer_env.decided)
    assert signer_env.conditions(obj)["Denied"]["reason"] == csr.Reason.REQUESTOR_NOT_NODE
    assert not signer_env.signed(obj)


def test_garbage_pem_is_refused_by_the_api_server_and_never_signed(
    admin: kube_.Kube, signer: Any, n1: kube_.Kube
) -> None:
    """The API server parses the request and checks its self-signature at creation, so garbage
    never becomes a CSR; decide.csr denies it anyway (tests/unit/test_csr_checks.py)."""
    name = _unique("garbage")
    garbage = (
        b"-----BEGIN CERTIFICATE REQUEST-----\nnot a request\n-----END CERTIFICATE REQUEST-----\n"
    )
    with pytest.raises(kube_.KubeError) as refused:
        signer_env.create_csr(n1, name, garbage)
    assert refused.value.status in (400, 403, 422)  # NodeRestriction parses it first: 403
    with pytest.raises(kube_.NotFound):
        admin.get(csr_api.path(name))


def test_csr_for_another_signer_is_left_untouched(
    admin: kube_.Kube, signer: Any, n1: kube_.Kube
) -> None:
    name = _unique("other")
    other = "kubernetes.io/kube-apiserver-client-kubelet"
    signer_env.create_csr(
        n1, name, _pem(), signer=other, usages=["digital signature", "client auth"]
    )
    control = _unique("control")  # a request kucero does handle, created after it
    signer_env.create_csr(n1, control, _pem(ips=["10.20.0.2"]))
    signer_env.wait_for(admin, control, signer_env.decided)
    time.sleep(0.5)
    assert admin.get(csr_api.path(name)).get("status", {}).get("conditions") is None


def test_request_of_a_node_not_registered_yet_waits_then_is_signed(
    plane: cluster.ControlPlane, admin: kube_.Kube, signer: Any
) -> None:
    late = signer_env.node_kube(plane, "n-late")
    name = _unique("late")
    signer_env.create_csr(late, name, _pem("n-late", ips=["10.20.0.77"]))
    time.sleep(1.0)
    assert not signer_env.decided(admin.get(csr_api.path(name)))  # waiting, not denied
    signer_env.make_node(admin, "n-late", [("InternalIP", "10.20.0.77")])
    obj = signer_env.wait_for(admin, name, signer_env.signed, timeout=40)
    assert signer_env.conditions(obj)["Approved"]["reason"] == "KuceroApproved"


def test_expiration_seconds_is_honoured(
    admin: kube_.Kube, signer: Any, n1: kube_.Kube, ca_root: tuple[Path, Any, Any]
) -> None:
    name = _unique("short")
    signer_env.create_csr(n1, name, _pem(), expirationSeconds=3600)
    cert = _certificate(signer_env.wait_for(admin, name, signer_env.signed))
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.total_seconds() == pytest.approx(3600 + 300, abs=5)  # + the backdate
    assert pki.issued_by(cert, ca_root[1])


def test_ca_replaced_on_disk_is_used_for_the_next_request(
    admin: kube_.Kube, signer: Any, n1: kube_.Kube, ca_root: tuple[Path, Any, Any]
) -> None:
    root, old_cert, old_key = ca_root
    _, new_cert, _ = signer_env.host_root_with_ca(root)  # rewrites the files in place
    try:
        deadline = time.monotonic() + 10
        while signer.cas.reloads == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        name = _unique("rotated")
        signer_env.create_csr(n1, name, _pem())
        cert = _certificate(signer_env.wait_for(admin, name, signer_env.signed))
        assert pki.issued_by(cert, new_cert)
    finally:
        signer_env.host_root_with_ca(root, (old_cert, old_key))
        time.sleep(0.3)
        signer.cas.invalidate()


def test_expired_ca_fails_the_request_with_an_event_and_a_metric(
    plane: cluster.ControlPlane, admin: kube_.Kube, n1: kube_.Kube, tmp_path: Path
) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    expired = fabricate.make_ca("expired", long_ago, "ecdsa", dt.timedelta(days=365))
    root, *_ = signer_env.host_root_with_ca(tmp_path / "root", expired)
    with signer_env.running_signer(plane, root, signer_env.load_policy()) as running:
        name = _unique("expired-ca")
        signer_env.create_csr(n1, name, _pem())
        obj = signer_env.wait_for(admin, name, signer_env.decided)
        # counted right after the condition is written: wait for it the same way
        metric = _counted(running.metrics.csr_decisions.labels("failed", "CAExpired"), 1)
    failed = signer_env.conditions(obj)
    assert set(failed) == {"Failed"} and failed["Failed"]["reason"] == "CAExpired"
    assert not signer_env.signed(obj)
    assert metric == 1
    assert _events(admin, name, "CAExpired")


def test_on_reject_ignore_leaves_hostile_requests_pending(
    plane: cluster.ControlPlane, admin: kube_.Kube, n1: kube_.Kube, ca_root: tuple[Path, Any, Any]
) -> None:
    loaded = signer_env.load_policy(onReject="ignore")
    with signer_env.running_signer(plane, ca_root[0], loaded) as running:
        name = _unique("ignored")
        signer_env.create_csr(n1, name, _pem(ips=["10.20.0.2"]))
        counter = running.metrics.csr_decisions.labels("ignored", "IPAddressNotOwned")
        assert _counted(counter, 1) >= 1
    assert not signer_env.decided(admin.get(csr_api.path(name)))


def _counted(counter: Any, wanted: float) -> float:
    """The counter's value once it reaches ``wanted`` (or after 10 s)."""
    deadline = time.monotonic() + 10
    while counter._value.get() < wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    return float(counter._value.get())


def _events(admin: kube_.Kube, name: str, reason: str) -> list[dict[str, Any]]:
    """The Events about CSR ``name`` with ``reason`` (recorded right after the condition)."""
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in events.list_for(admin, "default", name) if e["reason"] == reason]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _wait_for_rbac(create: Any) -> None:
    """A new RoleBinding reaches the authorizer's cache within a second or so."""
    deadline = time.monotonic() + 10
    while True:
        try:
            create()
            return
        except kube_.Forbidden:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def session_kube(control_plane: cluster.ControlPlane) -> Iterator[kube_.Kube]:
    made = kube_.connect(str(control_plane.admin_kubeconfig))
    yield made
    made.close()


def test_with_controller_manager_signing_too_first_signer_wins_and_nothing_fails(
    control_plane: cluster.ControlPlane, session_kube: kube_.Kube, tmp_path: Path
) -> None:
    """kubeadm clusters: KCM's csrsigning signs kubelet-serving with the same cluster CA. Both
    race once kucero approves; every CSR ends with exactly one certificate and no Failed."""
    ca_cert = pki.load_cert((control_plane.pki / "ca.crt").read_bytes())
    ca_key = pki.load_key((control_plane.pki / "ca.key").read_bytes())
    root, *_ = signer_env.host_root_with_ca(tmp_path / "root", (ca_cert, ca_key))
    nodes = [f"race-{i}" for i in range(10)]
    for i, node in enumerate(nodes):
        signer_env.make_node(session_kube, node, [("InternalIP", f"10.30.0.{i + 1}")])
    names = []
    try:
        with signer_env.running_signer(control_plane, root, signer_env.load_policy()) as running:
            for i, node in enumerate(nodes):
                name = _unique(f"race-{i}")
                kube = signer_env.node_kube(control_plane, node)
                signer_env.create_csr(kube, name, _pem(node, ips=[f"10.30.0.{i + 1}"]))
                names.append(name)
            done = [signer_env.wait_for(session_kube, n, signer_env.signed) for n in names]
            time.sleep(0.5)  # let a losing writer finish
            by_reason = {
                r: running.metrics.csr_decisions.labels("approved", r)._value.get()
                for r in ("KuceroApproved", "SignedElsewhere")
            }
            errors = sum(
                m.value
                for m in running.metrics.csr_decisions.collect()[0].samples
                if m.labels.get("decision") in ("error", "failed")
            )
        for obj in done:
            assert set(signer_env.conditions(obj)) == {"Approved"}
            assert pki.issued_by(_certificate(obj), ca_cert)
        assert by_reason["KuceroApproved"] + by_reason["SignedElsewhere"] == len(names)
        assert errors == 0
    finally:
        for node in nodes:
            session_kube.delete(f"/api/v1/nodes/{node}")


def test_certificate_write_after_another_signer_neither_fails_nor_overwrites(
    control_plane: cluster.ControlPlane, session_kube: kube_.Kube
) -> None:
    """The losing side of the race, made deterministic: KCM has signed; kucero's write based
    on the approved-but-unsigned version (409) or on the signed one (422) returns None."""
    signer_env.make_node(session_kube, "race-x", [("InternalIP", "10.30.1.1")])
    try:
        node = signer_env.node_kube(control_plane, "race-x")
        name = _unique("lost-race")
        created = signer_env.create_csr(node, name, _pem("race-x", ips=["10.30.1.1"]))
        cond = csr_api.condition("Approved", "TestApproved", "by the test", _now())
        approved = csr_api.add_condition(session_kube, created, cond)
        signed = signer_env.wait_for(session_kube, name, signer_env.signed)  # by KCM
        assert csr_api.put_certificate(session_kube, approved, b"not used") is None
        assert csr_api.put_certificate(session_kube, signed, _other_pem()) is None
        after = session_kube.get(csr_api.path(name))
        assert after["status"]["certificate"] == signed["status"]["certificate"]
    finally:
        session_kube.delete("/api/v1/nodes/race-x")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _other_pem() -> bytes:
    cert, _ = fabricate.make_ca("other", _now(), "ecdsa")
    return pki.cert_pem(cert)


@pytest.mark.parametrize(("ips", "outcome"), [(["10.20.0.1"], "signed"), (["10.20.0.2"], "Failed")])
def test_approved_by_kucero_before_a_restart_is_finished(
    admin: kube_.Kube,
    n1: kube_.Kube,
    plane: cluster.ControlPlane,
    ca_root: tuple[Path, Any, Any],
    ips: list[str],
    outcome: str,
) -> None:
    """A crash between approval and certificate: the next signer signs it if it still passes,
    else fails it (Denied cannot follow Approved); it is never left approved and unsigned."""
    name = _unique("resumed")
    created = signer_env.create_csr(n1, name, _pem(ips=ips))
    cond = csr_api.condition("Approved", "KuceroApproved", "before the crash", _now())
    csr_api.add_condition(admin, created, cond)  # what the crashed kucero had written
    with signer_env.running_signer(plane, ca_root[0], signer_env.load_policy()):
        obj = signer_env.wait_for(
            admin, name, lambda o: signer_env.signed(o) or "Failed" in signer_env.conditions(o)
        )
    if outcome == "signed":
        assert pki.issued_by(_certificate(obj), ca_root[1])
    else:
        assert signer_env.conditions(obj)["Failed"]["reason"] == csr.Reason.IP_NOT_OWNED
        assert not signer_env.signed(obj)
