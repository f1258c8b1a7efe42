"""CA renewal in a cluster, against the real API server (and its kube-controller-manager):
the leader publishes renewed CA certificates (certificates only) in the ``kucero-ca``
ConfigMap, real ``kucero node`` processes accept what is their CA and refuse anything else
(Event, metric, nothing written), converge one at a time, and the cluster-level copies follow:
``cluster-info`` (re-signed by the bootstrap signer, what ``kubeadm join`` checks) and the
``kube-root-ca.crt`` ConfigMaps kube-controller-manager republishes after its restart.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from reconciler import fabricate
from reconciler.cluster import capublish, configmaps, events, kube
from reconciler.decide import capublished, carenewal, pki, policy, status
from reconciler.node import host, observe
from reconciler.run import capublisher
from tests.controlplane import cluster
from tests.integration import nodesim

pytestmark = pytest.mark.controlplane

RENEW = "spec: {ca: {mode: renew}, kubeadm: {restart: manifest-move}}\n"
SPEC = policy.resolve(policy.load(nodesim.HEAD + RENEW), {})
CA_LEFT = dt.timedelta(days=100)  # inside ca.renewBefore (365 days)
# whatever the test control plane's CA validity: renewed now, for 34 years
ALWAYS_DUE = policy.resolve(
    policy.load(
        nodesim.HEAD
        + "spec: {ca: {mode: renew, renewBefore: 200000h, certificateValidity: 300000h}}\n"
    ),
    {},
)
CA_FILES = {"ca": "ca", "front-proxy-ca": "front-proxy-ca", "etcd-ca": "etcd/ca"}


@pytest.fixture
def prefix() -> str:
    return f"n{uuid.uuid4().hex[:6]}"


@pytest.fixture
def sims(
    tmp_path: Path,
    admin_kube: kube.Kube,
    make_node: Callable[..., Any],
    namespace: str,
    control_plane: cluster.ControlPlane,
) -> Iterator[Callable[..., nodesim.SimNode]]:
    """``sims(name, control_plane=True, ca_from=None, manifests=(), extra=())``: a Node with
    ``ca.mode: renew`` desired, a tree whose CAs end in 100 days, its ``kucero node``."""
    made: list[nodesim.SimNode] = []

    def make(
        name: str,
        control_plane_node: bool = True,
        ca_from: Path | None = None,
        manifests: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
    ) -> nodesim.SimNode:
        labels = nodesim.CONTROL_PLANE if control_plane_node else {}
        make_node(name, labels=labels)
        nodesim.set_desired(admin_kube, name, RENEW, labels)
        root = nodesim.tree(
            tmp_path,
            name,
            control_plane_node,
            manifests=manifests,
            ca_from=ca_from,
            ca_left=CA_LEFT,
        )
        if not control_plane_node:
            (root / "etc/kubernetes/pki/ca.key").unlink()  # a worker has no CA key
        sim = nodesim.SimNode(name, root, control_plane_node)
        made.append(sim)
        nodesim.start(sim, control_plane.admin_kubeconfig, namespace, *extra)
        return sim

    yield make
    nodesim.stop_all(made)
    nodesim.stop_standins()


def _published(door: kube.Kube, namespace: str) -> dict[str, str]:
    found = capublish.read(door, namespace)
    return dict((found or {}).get("data") or {})


def _cert(root: Path, name: str) -> x509.Certificate:
    return pki.load_cert((root / f"etc/kubernetes/pki/{CA_FILES[name]}.crt").read_bytes())


def _events(door: kube.Kube, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events.list_for(door, namespace, name)]


def test_the_leader_publishes_certificates_only_renews_once_and_a_new_leader_keeps_it(
    admin_kube: kube.Kube, tmp_path: Path, namespace: str
) -> None:
    first = nodesim.tree(tmp_path, "cp-a", ca_left=CA_LEFT)
    second = nodesim.tree(tmp_path, "cp-b", ca_from=first, ca_left=CA_LEFT)
    files_before = nodesim.hashes(first)
    leader = capublisher.CAPublisher(first, namespace)
    out = leader.reconcile(admin_kube, SPEC)
    assert out.wrote and [d.step for d in out.decisions] == ["Renew"] * 3, out
    data = _published(admin_kube, namespace)
    assert sorted(data) == sorted(
        f"{n}.{k}" for n in CA_FILES for k in ("crt", "sha256", "previousNotAfter")
    )
    assert not any("PRIVATE KEY" in v for v in data.values())  # never a key
    for name in CA_FILES:
        cert = pki.load_cert(data[f"{name}.crt"].encode())
        assert data[f"{name}.sha256"] == carenewal.fingerprint(cert)
        assert carenewal.same_ca(cert, _cert(first, name))
        assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=3600)
        old_end = _cert(first, name).not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert data[f"{name}.previousNotAfter"] == old_end
    assert nodesim.hashes(first) == files_before  # the leader writes no file on its node
    assert "CAPublished" in _events(admin_kube, namespace, capublished.NAME)
    version = capublish.read(admin_kube, namespace)["metadata"]["resourceVersion"]  # type: ignore[index]

    # a leader change: the new leader (another control-plane node, same CA keys) keeps it
    again = capublisher.CAPublisher(second, namespace).reconcile(admin_kube, SPEC)
    assert not again.wrote and [d.step for d in again.decisions] == ["Keep"] * 3
    assert capublish.read(admin_kube, namespace)["metadata"]["resourceVersion"] == version  # type: ignore[index]


@pytest.fixture
def cluster_info(admin_kube: kube.Kube) -> Iterator[Callable[[x509.Certificate], dict[str, Any]]]:
    """``cluster_info(ca)``: kube-public/cluster-info as ``kubeadm init`` makes it, trusting
    ``ca``; deleted after the test (the test control plane has none of its own)."""
    where = capublish.CLUSTER_INFO

    def make(ca: x509.Certificate) -> dict[str, Any]:
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "", "cluster": {
                "certificate-authority-data": base64.b64encode(pki.cert_pem(ca)).decode(),
                "server": "https://10.0.0.11:6443",
            }}],
            "contexts": [], "users": [], "current-context": "", "preferences": {},
        }  # fmt: skip
        return configmaps.create_or_replace(
            admin_kube, *where, {"kubeconfig": yaml.safe_dump(kubeconfig)}
        )

    yield make
    with contextlib.suppress(kube.NotFound):
        admin_kube.delete(configmaps.path(*where))


def _jws_ok(kubeconfig: str, signature: str, token_id: str, secret: str) -> bool:
    """kubeadm join's check of cluster-info (bootstrap token discovery): a detached JWS,
    HS256 keyed by the token secret, over the exact kubeconfig text."""
    header, _, mac = signature.partition("..")

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signed = f"{header}.{b64(kubeconfig.encode())}".encode()
    expected = b64(hmac.new(secret.encode(), signed, hashlib.sha256).digest())
    return (
        hmac.compare_digest(expected, mac)
        and token_id in base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)).decode()
    )


def test_a_new_leader_brings_cluster_info_in_step_and_the_bootstrap_signer_re_signs_it(
    admin_kube: kube.Kube,
    tmp_path: Path,
    namespace: str,
    cluster_info: Callable[[x509.Certificate], dict[str, Any]],
) -> None:
    """The first leader published and died before updating cluster-info; the next one does it.
    kube-controller-manager's bootstrapsigner then signs the new kubeconfig for every bootstrap
    token, so ``kubeadm join`` (token discovery, CA key pinned by hash) still works after the
    old CA's end: same key, same ``--discovery-token-ca-cert-hash``."""
    first = nodesim.tree(tmp_path, "cp-a", ca_left=CA_LEFT)
    assert capublisher.CAPublisher(first, namespace).reconcile(admin_kube, SPEC).wrote
    old = _cert(first, "ca")
    cluster_info(old)
    token_id, secret = uuid.uuid4().hex[:6], uuid.uuid4().hex[:16]
    token = {
        "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
        "stringData": {"token-id": token_id, "token-secret": secret,
                       "usage-bootstrap-signing": "true", "usage-bootstrap-authentication": "true"},
    }  # fmt: skip
    admin_kube.create("/api/v1/namespaces/kube-system/secrets", token)
    try:
        signature = f"jws-kubeconfig-{token_id}"

        def signed() -> dict[str, Any] | None:
            data = (capublish.get(admin_kube, capublish.CLUSTER_INFO) or {}).get("data") or {}
            text, sig = data.get("kubeconfig"), data.get(signature)
            return data if text and sig and _jws_ok(text, sig, token_id, secret) else None

        nodesim.wait_for("the bootstrap signer signs cluster-info", signed, 60)
        second = nodesim.tree(tmp_path, "cp-b", ca_from=first, ca_left=CA_LEFT)
        out = capublisher.CAPublisher(second, namespace).reconcile(admin_kube, SPEC)
        assert not out.wrote and out.copies["cluster-info"], out
        published = pki.load_cert(_published(admin_kube, namespace)["ca.crt"].encode())
        data = nodesim.wait_for(
            "cluster-info re-signed with the renewed CA",
            lambda: (
                (d := signed())
                and "certificate-authority-data" in d["kubeconfig"]
                and _ca_in(d["kubeconfig"]) == published
                and d
            ),
            60,
        )
        assert _ca_in(data["kubeconfig"]) != old
        assert _spki_hash(published) == _spki_hash(old)  # what --discovery-token-ca-cert-hash pins
        assert "ClusterInfoUpdated" in _events(admin_kube, namespace, capublished.NAME)
    finally:
        admin_kube.delete(f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{token_id}")


def _ca_in(kubeconfig_text: str) -> x509.Certificate:
    doc = yaml.safe_load(kubeconfig_text)
    data = doc["clusters"][0]["cluster"]["certificate-authority-data"]
    return pki.load_cert(base64.b64decode(data))


def _spki_hash(cert: x509.Certificate) -> str:
    return hashlib.sha256(carenewal.public_key_der(cert)).hexdigest()


def _forged_other_key(root: Path) -> dict[str, str]:
    cert = fabricate.make_ca("kubernetes", dt.datetime.now(dt.UTC), "ecdsa")[0]
    return capublished.encode({"ca": cert}, {})


def _forged_other_subject(root: Path) -> dict[str, str]:
    local = _cert(root, "ca")
    key = pki.load_key((root / "etc/kubernetes/pki/ca.key").read_bytes())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "kubernetes-attacker")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder(extensions=list(local.extensions))
        .subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(5)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=4000))
        .sign(key, pki.signature_hash_for(key))
    )  # fmt: skip
    return capublished.encode({"ca": cert}, {})


def _forged_around_our_key(root: Path) -> dict[str, str]:
    """Our CA's subject, public key and extensions, valid for longer, signed by the forger's
    own key: everything a reader can copy, but not the signature only the CA key makes."""
    local = _cert(root, "ca")
    forger = fabricate.new_key("ecdsa")
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder(extensions=list(local.extensions))
        .subject_name(local.subject).issuer_name(local.subject).public_key(local.public_key())
        .serial_number(7).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=9000))
        .sign(forger, pki.signature_hash_for(forger))
    )  # fmt: skip
    return capublished.encode({"ca": cert}, {})


def _garbage(root: Path) -> dict[str, str]:
    return {"ca.crt": "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n",
            "ca.sha256": "0" * 64}  # fmt: skip


def _wrong_fingerprint(root: Path) -> dict[str, str]:
    local = _cert(root, "ca")
    key = pki.load_key((root / "etc/kubernetes/pki/ca.key").read_bytes())
    renewed = carenewal.renew(local, key, 3, dt.datetime.now(dt.UTC), dt.timedelta(days=3650))
    return {**capublished.encode({"ca": renewed}, {}), "ca.sha256": "ab" * 32}


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        pytest.param(_forged_other_key, "KeyMismatch", id="another-key"),
        pytest.param(_forged_other_subject, "SubjectMismatch", id="another-subject"),
        pytest.param(_forged_around_our_key, "NotSelfSigned", id="our-key-signed-by-another"),
        pytest.param(_garbage, "Unparseable", id="garbage"),
        pytest.param(_wrong_fingerprint, "FingerprintMismatch", id="wrong-fingerprint"),
    ],
)
def test_a_tampered_configmap_is_refused_with_an_event_and_a_metric_and_nothing_is_written(
    admin_kube: kube.Kube,
    sims: Callable[..., nodesim.SimNode],
    prefix: str,
    namespace: str,
    forge: Callable[[Path], dict[str, str]],
    reason: str,
) -> None:
    port = cluster.free_port()
    sim = sims(f"{prefix}-cp-1", extra=("--metrics-addr", f"127.0.0.1:{port}"))
    nodesim.wait_for(
        "waiting for the publication",
        lambda: (s := nodesim.status_of(admin_kube, sim.name)) and s.ca.get("ca", {}).get("phase") == "Due",
        60, [sim],
    )  # fmt: skip
    before = nodesim.hashes(sim.root)
    configmaps.create_or_replace(admin_kube, namespace, capublished.NAME, forge(sim.root))
    nodesim.wait_for(
        f"a CARefused Event ({reason})",
        lambda: any(
            e["reason"] == "CARefused" and f"({reason})" in e["note"]
            for e in nodesim.node_events(admin_kube, sim.name)
        ),
        60, [sim],
    )  # fmt: skip
    refusals = dict(nodesim.metric(port, "kucero_ca_refusals_total{"))
    assert refusals == {
        f'kucero_ca_refusals_total{{name="ca",node="{sim.name}",reason="{reason}"}}': 1.0
    }, refusals
    state = nodesim.status_of(admin_kube, sim.name)
    assert state is not None and state.ca["ca"]["phase"] == "Refused", state
    after = nodesim.hashes(sim.root)
    assert {k: v for k, v in after.items() if "kucero" not in k} == {
        k: v for k, v in before.items() if "kucero" not in k
    }  # not one file of the node changed


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(_forged_other_key, id="another-key"),
        pytest.param(_forged_around_our_key, id="our-key-signed-by-another"),
    ],
)
def test_the_leader_never_takes_a_forged_publication_for_the_ca_nor_copies_it_to_cluster_info(
    admin_kube: kube.Kube,
    tmp_path: Path,
    namespace: str,
    cluster_info: Callable[[x509.Certificate], dict[str, Any]],
    forge: Callable[[Path], dict[str, str]],
) -> None:
    """Whoever can write kucero-ca (an author of the namespace, a stolen leader token) puts a
    CA certificate there that ends later than the real one. The leader judges it by the rule
    every node applies (same subject, key and extensions, signed by the CA key): refused, so
    it publishes its own CA in its place (CAPublicationRepaired) and cluster-info, what
    joining nodes trust, only ever gets a certificate of the CA's own key, signed by it."""
    root = nodesim.tree(tmp_path, "cp-a", ca_left=CA_LEFT)
    old = _cert(root, "ca")
    cluster_info(old)
    forged_data = forge(root)
    forged = pki.load_cert(forged_data["ca.crt"].encode())
    configmaps.create_or_replace(admin_kube, namespace, capublished.NAME, forged_data)

    out = capublisher.CAPublisher(root, namespace).reconcile(admin_kube, SPEC)

    (ca,) = [d for d in out.decisions if d.name == "ca"]
    assert ca.refused is not None and out.wrote, out
    published = pki.load_cert(_published(admin_kube, namespace)["ca.crt"].encode())
    info = _ca_in(capublish.get(admin_kube, capublish.CLUSTER_INFO)["data"]["kubeconfig"])  # type: ignore[index]
    for cert in (published, info):
        assert cert != forged
        assert carenewal.check_published(cert, old, dt.datetime.now(dt.UTC)).accepted
    assert "CAPublicationRepaired" in _events(admin_kube, namespace, capublished.NAME)


def test_several_nodes_accept_the_publication_and_converge_one_at_a_time(
    admin_kube: kube.Kube,
    sims: Callable[..., nodesim.SimNode],
    prefix: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Three control-plane nodes and a worker sharing one cluster's CAs; the leader (its own
    node's keys) renews and publishes once; each node installs it in every trust anchor and
    restarts, verified, what loads them (kube-apiserver through the kubelet stand-in), taking
    turns through the rotation slot; then every anchor everywhere holds the same certificate."""
    from tests.integration.test_node_daemon import Recorder

    names = [f"{prefix}-cp-{i}" for i in (1, 2, 3)]
    first = sims(names[0], manifests=("kube-apiserver",))
    fleet = [first] + [
        sims(n, ca_from=first.root, manifests=("kube-apiserver",)) for n in names[1:]
    ]
    fleet.append(sims(f"{prefix}-w-1", control_plane_node=False, ca_from=first.root))
    everyone = [s.name for s in fleet]
    recorder = Recorder(admin_kube, everyone, namespace)
    try:
        leader = capublisher.CAPublisher(first.root, namespace)
        assert leader.reconcile(admin_kube, SPEC).wrote
        published = {
            n: pki.load_cert(v.encode())
            for n, v in capublished_certs(_published(admin_kube, namespace)).items()
        }

        def all_current() -> bool:
            for name in everyone:
                s = nodesim.status_of(admin_kube, name)
                if s is None or s.phase != status.Phase.CONVERGED:
                    return False
                if any(v.get("phase") != "Current" for v in s.ca.values()):
                    return False
            return True

        nodesim.wait_for("every node installed the published CAs", all_current, 120, fleet)
    finally:
        recorder.stop.set()
    assert recorder.overlaps == [], recorder.overlaps  # one node at a time
    assert sorted(set(recorder.rotated)) == sorted(everyone)
    for sim in fleet:
        seen = observe.observe(host.Host(sim.root))
        for anchor in seen.anchors:
            assert anchor.certs == (published[anchor.ca],), (sim.name, anchor.path)
        for leaf in seen.leaves.values():
            assert leaf.issued_by_ca, (sim.name, leaf.name)
    first_cp = nodesim.status_of(admin_kube, names[0])
    assert first_cp is not None
    assert first_cp.ca["ca"]["notAfter"] == published["ca"].not_valid_after_utc.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def test_the_publisher_renews_when_the_policy_turns_to_renew_not_after_its_period(
    admin_kube: kube.Kube, tmp_path: Path, namespace: str
) -> None:
    """The user's edit (``ca.mode: report`` -> ``renew``) reaches the running publisher at
    once: on the real node it used to wait for the publisher's next period (10 min), and the
    nodes with it (``CAAwaitingPublication``)."""
    root = nodesim.tree(tmp_path, "cp-edit", ca_left=CA_LEFT)
    in_force = [policy.load(nodesim.HEAD + "spec: {ca: {mode: report}}\n")]
    publisher = capublisher.CAPublisher(root, namespace, period_seconds=600.0)
    stop = threading.Event()
    thread = threading.Thread(
        target=publisher.run, args=(admin_kube, stop, lambda: in_force[0]), daemon=True
    )
    thread.start()
    try:
        nodesim.wait_for("the publisher's first look", lambda: publisher.reconciles >= 1, 30)
        time.sleep(1.0)
        assert _published(admin_kube, namespace) == {}, "report mode publishes nothing"
        in_force[0] = policy.load(nodesim.HEAD + RENEW)
        publisher.policy_changed()  # what the controller does when the revision changes
        data = nodesim.wait_for(
            "the renewal published", lambda: _published(admin_kube, namespace), 10
        )
        renewed = pki.load_cert(data["ca.crt"].encode())
        assert carenewal.same_ca(renewed, _cert(root, "ca"))
        assert renewed.not_valid_after_utc > _cert(root, "ca").not_valid_after_utc
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def capublished_certs(data: dict[str, str]) -> dict[str, str]:
    return {k.removesuffix(".crt"): v for k, v in data.items() if k.endswith(".crt")}


def test_kube_root_ca_follows_the_controller_manager_restart(tmp_path: Path) -> None:
    """kube-controller-manager publishes ``--root-ca-file`` as every namespace's
    kube-root-ca.crt, read when it starts: after the CA file is renewed, the ConfigMaps keep
    the old certificate until it restarts, then carry the renewed one; the leader's check of
    its namespace's copy says so."""
    directory = tmp_path / "plane"
    with cluster.guarded(directory, with_controller_manager=True) as plane:
        door = kube.connect(str(plane.admin_kubeconfig))
        try:
            namespace = f"t-{uuid.uuid4().hex[:8]}"
            door.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
            root_ca = (namespace, capublish.ROOT_CA)
            nodesim.wait_for("kube-root-ca.crt", lambda: capublish.get(door, root_ca), 60)
            ca_file = plane.pki / "ca.crt"
            old = pki.load_cert(ca_file.read_bytes())
            key = pki.load_key((plane.pki / "ca.key").read_bytes())
            # the leader's node, seen through a host root holding the plane's CA as kubeadm's
            node_root = tmp_path / "leader"
            (node_root / "etc/kubernetes/pki").mkdir(parents=True)
            (node_root / "etc/kubernetes/pki/ca.crt").write_bytes(pki.cert_pem(old))
            (node_root / "etc/kubernetes/pki/ca.key").write_bytes(pki.key_pem(key))
            leader = capublisher.CAPublisher(node_root, namespace)
            out = leader.reconcile(door, ALWAYS_DUE)
            assert out.wrote and out.copies[capublish.ROOT_CA] is False
            published = pki.load_cert(_published(door, namespace)["ca.crt"].encode())

            ca_file.write_bytes(pki.cert_pem(published))  # what the node's pass installs...
            time.sleep(2)
            assert _root_ca(door, root_ca) == old  # ...is not read until a restart
            cluster.restart_controller_manager(plane)  # what the node's pass restarts
            nodesim.wait_for(
                "kube-root-ca.crt republished", lambda: _root_ca(door, root_ca) == published, 90
            )
            again = leader.reconcile(door, ALWAYS_DUE)
            assert again.copies[capublish.ROOT_CA] is True
        finally:
            door.close()


def _root_ca(door: kube.Kube, where: tuple[str, str]) -> x509.Certificate | None:
    found = capublish.get(door, where)
    text = ((found or {}).get("data") or {}).get("ca.crt")
    return pki.load_cert(text.encode()) if text else None
