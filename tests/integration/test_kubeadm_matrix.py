"""The version matrix: for every Kubernetes minor kucero is tested against
(``tests/controlplane/matrix.VERSIONS``), node trees made by that minor's own kubeadm, renewed
by kucero, and read back by that same kubeadm (and that minor's kubelet).

* control planes made by ``kubeadm init``'s phases, with RSA and ECDSA keys
  (``encryptionAlgorithm``) and with stacked and external etcd;
* workers made by ``kubeadm join`` against a live test control plane whose CA kubeadm made
  with RSA or ECDSA keys, and the kubelet's own TLS bootstrap.

Run with ``make matrix`` (it builds each minor's kubeadm first, tests/controlplane/matrix.sh);
``make test`` leaves these out (``-m "not matrix"``). Without the binaries they skip, with
``CI`` set they fail.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.controlplane import binaries, cluster, kubeadm_join, kubeadm_tree, matrix
from tests.integration import test_kubeadm_crosscheck as crosscheck

pytestmark = [
    pytest.mark.matrix,
    pytest.mark.kubeadm,
    pytest.mark.usefixtures("root_for_kubeadm_check"),
]

ALGORITHMS = ("RSA-2048", "ECDSA-P256")
KEY_TYPES = {"RSA-2048": rsa.RSAPublicKey, "ECDSA-P256": ec.EllipticCurvePublicKey}
TWO_YEARS = dt.timedelta(days=730)
# crosscheck.RENEW_ALL, and serverTLSBootstrap turned on: kucero edits the kubelet's
# config.yaml, which each minor's kubelet must still load and validate.
POLICY = """\
apiVersion: kucero.io/v1alpha1
kind: RotationPolicy
spec:
  kubeadm: {renewBefore: 8761h, certificateValidity: 17520h, restart: none}
  kubelet: {restart: none, rotateServerCertificates: true}
"""


@pytest.fixture(params=matrix.VERSIONS, ids=lambda v: v.minor)
def version(request: pytest.FixtureRequest) -> matrix.Version:
    v: matrix.Version = request.param
    v.require()
    return v


def kubeadm_rows(root: Path, v: matrix.Version, config: str) -> dict[str, dict[str, Any]]:
    """``v``'s ``kubeadm certs check-expiration`` of the tree, by name, with its kind."""
    info = kubeadm_tree.check_expiration(root, kubeadm=v.path("kubeadm"), kubeadm_config=config)
    rows = {c["name"]: c | {"kind": "leaf"} for c in info["certificates"]}
    return rows | {c["name"]: c | {"kind": "ca"} for c in info["certificateAuthorities"]}


def assert_agree(root: Path, theirs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """kucero's ``check-expiration -o json`` says what this kubeadm says of every file it found."""
    ours = crosscheck.kucero_expiration(root)
    for name, row in theirs.items():
        if row["missing"]:
            assert name not in ours or ours[name].get("missing"), name
            continue
        assert ours[name]["notAfter"] == row["expirationDate"], name
        assert ours[name]["externallyManaged"] == row["externallyManaged"], name
        if row["kind"] == "leaf":
            assert ours[name]["issuer"] == row["caName"], name
    return ours


def renew_all(root: Path, tmp_path: Path, node: str) -> str:
    policy = tmp_path / "renew-all.yaml"
    policy.write_text(POLICY)
    done = crosscheck.kucero(
        "node", "--once", "--host-root", root, "--policy", policy, "--node-name", node,
        "--kubelet-restart-command", "true",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("etcd", ["stacked", "external"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_kubeadm_reads_back_the_control_plane_kucero_renewed(
    version: matrix.Version, algorithm: str, etcd: str, tmp_path: Path
) -> None:
    root = matrix.init(tmp_path / "node", version, algorithm, etcd)
    config = matrix.init_config(version, algorithm, etcd)
    before = kubeadm_rows(root, version, config)
    leaves = matrix.STACKED_LEAVES if etcd == "stacked" else matrix.EXTERNAL_LEAVES
    cas = matrix.STACKED_CAS if etcd == "stacked" else matrix.EXTERNAL_CAS
    assert {n for n, r in before.items() if r["kind"] == "leaf"} == leaves
    assert {n for n, r in before.items() if r["kind"] == "ca"} == cas
    assert not any(r["missing"] or r["externallyManaged"] for r in before.values())
    assert_agree(root, before)
    external = {p: (root / p.lstrip("/")).read_bytes() for p in matrix.EXTERNAL_ETCD_FILES.values()}

    out = renew_all(root, tmp_path, "cp-1")

    after = kubeadm_rows(root, version, config)  # kubeadm fails on any file it cannot parse
    ours = assert_agree(root, after)
    assert set(after) == set(before)
    now = dt.datetime.now(dt.UTC)
    for name, row in after.items():
        if row["kind"] == "ca":
            assert row["expirationDate"] == before[name]["expirationDate"], name
            continue
        expires = dt.datetime.fromisoformat(row["expirationDate"])
        assert abs(expires - (now + TWO_YEARS)) < dt.timedelta(minutes=10), (name, out)
        assert not row["missing"] and not row["externallyManaged"], name
    pki = root / "etc/kubernetes/pki"
    for crt in ("apiserver.crt", "front-proxy-client.crt"):
        key = x509.load_pem_x509_certificate((pki / crt).read_bytes()).public_key()
        assert isinstance(key, KEY_TYPES[algorithm]), crt  # kubeadm's encryptionAlgorithm kept
    if etcd == "external":
        # the etcd cluster's files: its CA key is not here, kucero (like kubeadm) leaves them
        assert ours["apiserver-etcd-client"]["externallyManaged"]
        for path, data in external.items():
            assert (root / path.lstrip("/")).read_bytes() == data, path
    # that minor's kubelet would still start with the node's kubelet.conf and config.yaml
    kubelet = json.loads(matrix.kubelet_check(root, version, "cp-1"))
    assert kubelet["serverTLSBootstrap"] and kubelet["rotateCertificates"], kubelet


@pytest.fixture(scope="module", params=ALGORITHMS)
def joinable_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, cluster.ControlPlane]]:
    """A control plane (with its controller manager) whose cluster CA kubeadm made with RSA or
    ECDSA keys; workers of every minor join it in turn."""
    algorithm: str = request.param
    binaries.require("kubeadm")
    directory = tmp_path_factory.mktemp(f"join-{algorithm}")
    scratch = tmp_path_factory.mktemp(f"join-ca-{algorithm}")
    (scratch / "kubeadm.yaml").write_text(matrix.init_config(matrix.TESTBIN, algorithm))
    matrix.run([binaries.path("kubeadm"), "--rootfs", str(scratch), "init", "phase", "certs",
                "ca", "--config", "/kubeadm.yaml"])  # fmt: skip
    (directory / "pki").mkdir()
    for name in ("ca.crt", "ca.key"):
        shutil.copy2(scratch / "etc/kubernetes/pki" / name, directory / "pki" / name)
    with cluster.guarded(directory, with_controller_manager=True) as plane:
        yield algorithm, plane


def kubeadm_failure(root: Path, v: matrix.Version, config: str) -> str:
    """kubeadm's error line for ``certs check-expiration`` of a tree it cannot report on."""
    with pytest.raises(RuntimeError) as failed:
        kubeadm_rows(root, v, config)
    return next(line for line in str(failed.value).splitlines() if line.startswith("error:"))


def test_each_kubeadm_join_makes_a_worker_kucero_keeps_and_that_kubelet_reads_back(
    version: matrix.Version, joinable_plane: tuple[str, cluster.ControlPlane], tmp_path: Path
) -> None:
    algorithm, plane = joinable_plane
    node = f"worker-{version.minor.replace('.', '-')}-{algorithm.split('-')[0].lower()}"
    root = kubeadm_join.join(tmp_path / "worker", plane, version, node)
    etc, pki = root / "etc/kubernetes", root / "var/lib/kubelet/pki"
    assert not (etc / "bootstrap-kubelet.conf").exists()  # join removed its token
    assert (pki / "kubelet-client-current.pem").is_symlink()
    first = json.loads(matrix.kubelet_check(root, version, node, whoami=True))
    assert first["username"] == f"system:node:{node}"
    ours = crosscheck.kucero_expiration(root)
    assert ours["kubelet-client-current"]["notAfter"] == first["clientNotAfter"]
    assert ours["kubelet.conf"]["notAfter"] == first["clientNotAfter"]
    assert not set(ours) & (matrix.STACKED_LEAVES | {"apiserver-etcd-client"})
    # kubeadm's certs check-expiration does not work on a worker: ca.crt without ca.key reads
    # as an external CA, and it then wants the API server's key. It must fail no differently
    # after kucero.
    config = matrix.init_config(version, algorithm)
    failure = kubeadm_failure(root, version, config)
    assert "apiserver.key" in failure, failure
    # the kubelet's store links kubelet-client-current.pem to a dated file, by an absolute path
    link = os.readlink(pki / "kubelet-client-current.pem")
    kept = [etc / "kubelet.conf", etc / "pki/ca.crt", root / link.lstrip("/")]
    before = {p: p.read_bytes() for p in kept}

    renew_all(root, tmp_path, node)

    # the kubelet rotates its own client certificate: kucero keeps its files as they were
    assert {p: p.read_bytes() for p in kept} == before
    assert os.readlink(pki / "kubelet-client-current.pem") == link
    assert kubeadm_failure(root, version, config) == failure
    assert crosscheck.kucero_expiration(root)["kubelet-client-current"] == ours[
        "kubelet-client-current"
    ] | {"residualSeconds": ANY}
    again = json.loads(matrix.kubelet_check(root, version, node, whoami=True))
    assert not first["serverTLSBootstrap"] and again["serverTLSBootstrap"]  # kucero's edit
    assert again == first | {"serverTLSBootstrap": True}
