"""``kube.connect`` without the ``kubernetes`` package for the shapes a node meets (in-cluster,
a kubeconfig with a client certificate as files or embedded data, a token, a tokenFile), each
proven against the real API server in a fresh process that must not have imported the client;
a shape it does not handle (an exec plugin) still goes through the client library."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane import cluster

pytestmark = pytest.mark.controlplane

PROBE = textwrap.dedent(
    """
    import json, sys
    from reconciler.cluster import kube
    door = kube.connect(sys.argv[1] if sys.argv[1] != "-" else None)
    who = door.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    print(json.dumps({
        "user": who["status"]["userInfo"]["username"],
        "client_library": any(m.split(".")[0] == "kubernetes" for m in sys.modules),
    }))
    """
)


def probe(kubeconfig: str | None, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, kubeconfig or "-"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")},
            **(env or {}),
        },
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _embedded(plane: cluster.ControlPlane, target: Path) -> Path:
    doc = yaml.safe_load(plane.admin_kubeconfig.read_text())
    user = doc["users"][0]["user"]
    for field in ("client-certificate", "client-key"):
        user[f"{field}-data"] = base64.b64encode(Path(user.pop(field)).read_bytes()).decode()
    cluster_ = doc["clusters"][0]["cluster"]
    ca = Path(cluster_.pop("certificate-authority")).read_bytes()
    cluster_["certificate-authority-data"] = base64.b64encode(ca).decode()
    target.write_text(yaml.safe_dump(doc))
    return target


def test_client_certificate_files_and_embedded_data(
    control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    assert probe(str(control_plane.admin_kubeconfig)) == {
        "user": "kubernetes-admin",
        "client_library": False,
    }
    embedded = _embedded(control_plane, tmp_path / "embedded.kubeconfig")
    assert probe(str(embedded)) == {"user": "kubernetes-admin", "client_library": False}
    assert not list(Path("/tmp").glob("kucero-kubeconfig-*")), "embedded key left on disk"


def test_token_token_file_and_in_cluster(
    control_plane: cluster.ControlPlane, clients: Any, namespace: str, tmp_path: Path
) -> None:
    token = clients.token(namespace, "light")
    user = f"system:serviceaccount:{namespace}:light"
    plain = control_plane.token_kubeconfig(f"light-{namespace}", token)
    assert probe(str(plain)) == {"user": user, "client_library": False}
    doc = yaml.safe_load(plain.read_text())
    (tmp_path / "token").write_text(token)
    doc["users"][0]["user"] = {"tokenFile": "token"}  # relative to the kubeconfig
    (tmp_path / "file.kubeconfig").write_text(yaml.safe_dump(doc))
    assert probe(str(tmp_path / "file.kubeconfig")) == {"user": user, "client_library": False}
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    (sa_dir / "token").write_text(token)
    (sa_dir / "ca.crt").write_bytes((control_plane.pki / "ca.crt").read_bytes())
    host, port = control_plane.server.removeprefix("https://").rsplit(":", 1)
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    script = PROBE.replace(
        'kube.connect(sys.argv[1] if sys.argv[1] != "-" else None)',
        f"kube.connect(None, service_account_dir={str(sa_dir)!r})",
    )
    out = subprocess.run(
        [sys.executable, "-c", script, "-"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"user": user, "client_library": False}


def test_exec_plugin_goes_through_the_client_library(
    control_plane: cluster.ControlPlane, clients: Any, namespace: str, tmp_path: Path
) -> None:
    token = clients.token(namespace, "light-exec")
    doc = yaml.safe_load(control_plane.token_kubeconfig(f"exec-{namespace}", token).read_text())
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": token},
    }
    doc["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "/bin/echo",
            "args": [json.dumps(credential)],
            "interactiveMode": "Never",
        }
    }
    (tmp_path / "exec.kubeconfig").write_text(yaml.safe_dump(doc))
    result = probe(str(tmp_path / "exec.kubeconfig"))
    assert result == {
        "user": f"system:serviceaccount:{namespace}:light-exec",
        "client_library": True,
    }


def _whoami(door: Any) -> str:
    review = door.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(review["status"]["userInfo"]["username"])


@pytest.mark.parametrize("shape", ["light", "client-library"])
def test_a_connection_as_the_kubelets_certificate_keeps_the_servers_trust(
    control_plane: cluster.ControlPlane, clients: Any, namespace: str, tmp_path: Path, shape: str
) -> None:
    """What drain uses (run/turn.py): the same server and CA as the ServiceAccount's
    connection, the kubelet's certificate and key as the only credential."""
    from reconciler.cluster import kube, light

    token = clients.token(namespace, "drainer")
    kubeconfig = control_plane.token_kubeconfig(f"drainer-{namespace}", token)
    if shape == "client-library":  # an exec plugin: light.connect hands it on
        doc = yaml.safe_load(kubeconfig.read_text())
        credential = {
            "apiVersion": "client.authentication.k8s.io/v1",
            "kind": "ExecCredential",
            "status": {"token": token},
        }
        doc["users"][0]["user"] = {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": "/bin/echo",
                "args": [json.dumps(credential)],
                "interactiveMode": "Never",
            }
        }
        kubeconfig = tmp_path / "exec.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(doc))
    door = kube.connect(str(kubeconfig))
    crt, key = control_plane.ca().issue(tmp_path, "kubelet", "system:node:n1", ("system:nodes",))
    kubelet = light.as_client_certificate(door, crt.read_bytes() + key.read_bytes())
    try:
        assert _whoami(door) == f"system:serviceaccount:{namespace}:drainer"
        assert _whoami(kubelet) == "system:node:n1"
    finally:
        kubelet.close()
        door.close()
    assert not list(Path("/tmp").glob("kucero-client-*")), "the key was left on disk"
    with pytest.raises(kube.KubeError, match="client certificate"):
        light.as_client_certificate(door, b"-----BEGIN CERTIFICATE-----\nnot one\n")


def _atomic_swap(sa_dir: Path, name: str, data: bytes) -> None:
    """What the kubelet's atomic writer does to a projected volume: the files live in a
    timestamped directory, ``..data`` points at it, ``ca.crt`` at ``..data/ca.crt``; an update
    makes a new directory and swaps ``..data`` by a rename."""
    version = sa_dir / f"..{name}"
    version.mkdir()
    (version / "ca.crt").write_bytes(data)
    (sa_dir / "..data_tmp").symlink_to(version.name)
    (sa_dir / "..data_tmp").replace(sa_dir / "..data")
    if not (sa_dir / "ca.crt").is_symlink():
        (sa_dir / "ca.crt").symlink_to("..data/ca.crt")


def test_in_cluster_ca_bundle_is_read_again_when_the_kubelet_swaps_in_a_renewed_ca(
    control_plane: cluster.ControlPlane, clients: Any, namespace: str, tmp_path: Path
) -> None:
    """A CA renewal (same key and subject) reaches a pod as a new projected ``ca.crt``; a
    process that kept the old, ended certificate cannot verify the API server any more. The
    same connection object (and a ``within`` view made before) follows the file."""
    import datetime as dt

    from reconciler.cluster import kube
    from reconciler.decide import carenewal, pki

    ca_cert = pki.load_cert((control_plane.pki / "ca.crt").read_bytes())
    ca_key = pki.load_key((control_plane.pki / "ca.key").read_bytes())
    now = dt.datetime.now(dt.UTC)
    # the CA as a pod still holds it after the old certificate's end: same key, ended
    ended = carenewal.renew(ca_cert, ca_key, 2, now - dt.timedelta(days=2), dt.timedelta(days=1))
    renewed = carenewal.renew(ca_cert, ca_key, 3, now, dt.timedelta(days=3650))
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    (sa_dir / "token").write_text(clients.token(namespace, "bundle"))
    _atomic_swap(sa_dir, "1", pki.cert_pem(ended))
    host, port = control_plane.server.removeprefix("https://").rsplit(":", 1)
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    door = kube.connect(None, environ=env, service_account_dir=str(sa_dir))
    view = door.within(lambda: 30.0, "a test budget")
    door.retry_attempts = view.retry_attempts = 1
    with pytest.raises(kube.Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
        _whoami(door)
    _atomic_swap(sa_dir, "2", pki.cert_pem(renewed))
    user = f"system:serviceaccount:{namespace}:bundle"
    assert _whoami(door) == user
    assert _whoami(view) == user
    # damage (not a CA bundle) keeps the bundle read before
    _atomic_swap(sa_dir, "3", b"not a certificate\n")
    assert _whoami(door) == user
    door.close()
