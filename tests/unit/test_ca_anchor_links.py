"""A worker's trust anchors as root on that worker could lay them out, against a CA install
(``--ca-bundle``: the same code path as a publication the node accepted).

The worker's DaemonSet mounts ``/etc/kubernetes`` (its ``pki/`` included, writable since CA
renewal) and ``/var/lib/kubelet``; its kubelet ``config.yaml`` names the ``clientCAFile``.
Whatever those files say, kucero writes a CA certificate only into files that really lie in
kubeadm's and the kubelet's directories (where links and ``..`` lead, not how a path starts),
never through a link out of its host root, never into a second name of a hard-linked file, and
one file reached by two anchors is written once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from reconciler.decide import pki
from tests.unit.test_ca_once import (
    CAS,
    DUE,
    QUIET,
    REAL_NOW,
    RENEW,
    ca_cert,
    kubeconfig_ca,
    node_once,
)

HOSTILE = b"# a host file that holds the cluster CA certificate\n"


@pytest.fixture
def renew_policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(RENEW)
    return path


@pytest.fixture
def worker_and_bundle(
    make_tree: Callable[..., Path],
    renew_policy: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> tuple[Path, Path]:
    """A worker (no CA key) of a cluster whose CAs were just renewed offline on its first
    control-plane node, and the bundle of the renewed certificates."""
    first = make_tree(now=REAL_NOW, **DUE, **QUIET)
    worker = make_tree(now=REAL_NOW, control_plane=False, ca_from=str(first), **QUIET)
    (worker / "etc/kubernetes/pki/ca.key").unlink()
    assert node_once(first, renew_policy, capsys)[0] == 0
    bundle = tmp_path / "kucero-ca-bundle.pem"
    bundle.write_bytes(
        b"".join((first / f"etc/kubernetes/pki/{f}.crt").read_bytes() for f in CAS.values())
    )
    return worker, bundle


def _client_ca_file(root: Path, value: str) -> None:
    path = root / "var/lib/kubelet/config.yaml"
    config = yaml.safe_load(path.read_text())
    config.setdefault("authentication", {}).setdefault("x509", {})["clientCAFile"] = value
    path.write_text(yaml.safe_dump(config))


def _host_file_with_the_ca(root: Path) -> Path:
    """``/srv/ca.crt`` on the worker: outside kubeadm's and the kubelet's directories."""
    target = root / "srv/ca.crt"
    target.parent.mkdir()
    target.write_bytes(HOSTILE + (root / "etc/kubernetes/pki/ca.crt").read_bytes())
    return target


@pytest.mark.parametrize(
    ("client_ca_file", "link"),
    [
        pytest.param("/etc/kubernetes/pki/../../../srv/ca.crt", None, id="dot-dot-past-the-prefix"),
        pytest.param("/var/lib/kubelet/pki-link/ca.crt", ("var/lib/kubelet/pki-link", "/srv"),
                     id="through-a-planted-directory-link"),
        pytest.param("/var/lib/kubelet/ca-link.crt", ("var/lib/kubelet/ca-link.crt", "/srv/ca.crt"),
                     id="through-a-planted-file-link"),
    ],
)  # fmt: skip
def test_a_client_ca_file_leading_outside_the_kubelets_and_kubeadms_directories_is_not_written(
    worker_and_bundle: tuple[Path, Path],
    renew_policy: Path,
    capsys: pytest.CaptureFixture[str],
    client_ca_file: str,
    link: tuple[str, str] | None,
) -> None:
    worker, bundle = worker_and_bundle
    outside = _host_file_with_the_ca(worker)
    before = outside.read_bytes()
    _client_ca_file(worker, client_ca_file)
    if link is not None:
        (worker / link[0]).symlink_to(link[1])

    code, out = node_once(worker, renew_policy, capsys, "--ca-bundle", bundle)

    assert outside.read_bytes() == before  # the host file kept its old CA certificate
    assert "TrustAnchorNotWritable" in out and "resolves to /srv/ca.crt" in out, out
    assert code == 1  # a finding an operator must act on
    renewed = pki.load_cert(bundle.read_bytes())
    assert ca_cert(worker, "ca") == renewed  # the real anchors were installed
    assert kubeconfig_ca(worker / "etc/kubernetes/kubelet.conf") == renewed


def test_a_ca_file_linked_out_of_the_host_root_is_never_written(
    worker_and_bundle: tuple[Path, Path],
    renew_policy: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """pki/ca.crt a link to an absolute path, and another to a relative path climbing out:
    both resolve inside the host root (as a chroot would), so the real file outside the root
    (which holds the cluster CA) is neither read as the node's CA nor written."""
    worker, bundle = worker_and_bundle
    outside = tmp_path / "outside-the-root" / "ca.crt"
    outside.parent.mkdir()
    outside.write_bytes(HOSTILE + (worker / "etc/kubernetes/pki/ca.crt").read_bytes())
    before = outside.read_bytes()
    ca_file = worker / "etc/kubernetes/pki/ca.crt"
    for target in (str(outside), os.path.relpath(outside, ca_file.parent)):
        ca_file.unlink(missing_ok=True)
        ca_file.symlink_to(target)
        node_once(worker, renew_policy, capsys, "--ca-bundle", bundle)
        assert outside.read_bytes() == before, target
        assert ca_file.is_symlink() and os.readlink(ca_file) == target


def test_a_hard_linked_ca_file_is_replaced_and_its_other_name_keeps_its_content(
    worker_and_bundle: tuple[Path, Path],
    renew_policy: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """kucero replaces by rename, never in place: a second name of the inode (a host file
    outside kucero's directories) is left exactly as it was."""
    worker, bundle = worker_and_bundle
    other = worker / "srv/ca.crt"
    other.parent.mkdir()
    os.link(worker / "etc/kubernetes/pki/ca.crt", other)
    before = other.read_bytes()

    code, out = node_once(worker, renew_policy, capsys, "--ca-bundle", bundle)

    assert code == 0, out
    assert ca_cert(worker, "ca") == pki.load_cert(bundle.read_bytes())
    assert other.read_bytes() == before  # (its inode lives on in the backup too)


def test_a_client_ca_file_that_is_a_link_to_the_ca_file_is_written_once(
    worker_and_bundle: tuple[Path, Path],
    renew_policy: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two anchors, one file: one install through the CA file's own name, the link kept."""
    worker, bundle = worker_and_bundle
    link = worker / "var/lib/kubelet/client-ca.crt"
    link.symlink_to("/etc/kubernetes/pki/ca.crt")
    _client_ca_file(worker, "/var/lib/kubelet/client-ca.crt")

    code, out = node_once(worker, renew_policy, capsys, "--ca-bundle", bundle)

    assert code == 0, out
    installs = [line for line in out.splitlines() if line.startswith("install-ca")]
    assert [line.split()[1] for line in installs] == [
        "/etc/kubernetes/pki/ca.crt",
        "/etc/kubernetes/kubelet.conf",
    ], out
    assert link.is_symlink() and ca_cert(worker, "ca") == pki.load_cert(bundle.read_bytes())
