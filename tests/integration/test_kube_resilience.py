"""The door keeps working through what a long-running process meets: an API server restart
(the watch resumes, and re-lists when its resourceVersion is gone) and the rotation of a bound
service-account token (the token file is re-read; the old token is really revoked).

The restart tests use a control plane of their own (about 4 s to start), so stopping its API
server disturbs no other test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from reconciler.cluster import configmaps, kube
from tests.controlplane import cluster
from tests.integration import test_kube_door as door_tests

pytestmark = pytest.mark.controlplane

# kube-apiserver caches a successful token authentication for 10 s.
REVOCATION_SECONDS = 30


@pytest.fixture(scope="module")
def own_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ControlPlane]:
    directory = tmp_path_factory.mktemp("restartable")
    with cluster.guarded(directory) as plane:
        yield plane


def _etcd_delete(plane: cluster.ControlPlane, key: str) -> None:
    """Delete a key straight in etcd (through its JSON gateway), behind the API server's back."""
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    request = urllib.request.Request(f"{cluster.etcd_url(plane)}/v3/kv/deleterange", body)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()).get("deleted") == "1"


def test_watch_survives_api_server_restart_and_relists_when_gone(
    own_plane: cluster.ControlPlane,
) -> None:
    door = kube.connect(str(own_plane.admin_kubeconfig))
    ns = "default"
    for name in ("kept", "vanishes"):
        configmaps.create_or_replace(door, ns, name, {"k": "v"})
    recorder = door_tests.Recorder()
    stop, thread = door_tests.start_watch(door, configmaps.collection(ns), recorder)
    try:
        recorder.wait_for(lambda: recorder.lists == [["kept", "vanishes"]])
        cluster.stop_apiserver(own_plane)
        # While it is down, a change the watch cannot see: after the restart, the watch's
        # resourceVersion is older than the new watch cache (410) and only a re-list shows it.
        _etcd_delete(own_plane, f"/registry/configmaps/{ns}/vanishes")
        cluster.start_apiserver(own_plane)
        configmaps.create_or_replace(door, ns, "after-restart", {"k": "v"})
        recorder.wait_for(lambda: ("ADDED", "after-restart") in recorder.events, timeout=60)
        assert len(recorder.lists) == 2, "410 Gone must lead to a second list"
        assert recorder.lists[1] == ["after-restart", "kept"] or recorder.lists[1] == ["kept"]
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def _bound_token(core: Any, namespace: str, account: str, secret: str) -> str:
    """A TokenRequest token bound to the Secret ``secret``: deleting it revokes the token."""
    made = core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=secret))
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(
            audiences=[],
            expiration_seconds=3600,
            bound_object_ref=client.V1BoundObjectReference(
                api_version="v1", kind="Secret", name=secret, uid=made.metadata.uid
            ),
        )
    )
    status = core.create_namespaced_service_account_token(account, namespace, request).status
    return str(status.token)


def _whoami(door: kube.Kube) -> str:
    review = door.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(review["status"]["userInfo"]["username"])


def _swap(directory: Path, token: str, generation: int) -> None:
    """Replace the token as the kubelet does for a projected volume: write a new timestamped
    directory, then atomically repoint the ``..data`` symlink that ``token`` goes through."""
    target = directory / f"..{generation}"
    target.mkdir()
    (target / "token").write_text(token)
    link = directory / "..data_tmp"
    link.symlink_to(target.name)
    os.replace(link, directory / "..data")
    if not (directory / "token").is_symlink():
        (directory / "token").symlink_to("..data/token")


@pytest.mark.parametrize("mode", ["in-cluster", "kubeconfig-tokenFile"])
def test_rotated_bound_token_is_reread_and_old_one_revoked(
    mode: str,
    control_plane: cluster.ControlPlane,
    clients: Any,
    admin: Any,
    namespace: str,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(admin)
    clients.token(namespace, "rotating")  # creates the service account
    first = _bound_token(core, namespace, "rotating", "bind-1")
    account_dir = tmp_path / "serviceaccount"
    account_dir.mkdir()
    shutil.copy(control_plane.pki / "ca.crt", account_dir / "ca.crt")
    _swap(account_dir, first, 1)
    if mode == "in-cluster":
        host, port = control_plane.server.removeprefix("https://").rsplit(":", 1)
        env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
        door = kube.connect(None, environ=env, service_account_dir=str(account_dir))
    else:
        config = tmp_path / "kubeconfig"
        base = yaml.safe_load(control_plane.token_kubeconfig("rotating", "unused").read_text())
        base["users"][0]["user"] = {"tokenFile": str(account_dir / "token")}
        config.write_text(yaml.safe_dump(base))
        door = kube.connect(str(config))
    expected = f"system:serviceaccount:{namespace}:rotating"
    assert _whoami(door) == expected

    second = _bound_token(core, namespace, "rotating", "bind-2")
    _swap(account_dir, second, 2)
    core.delete_namespaced_secret("bind-1", namespace)  # revokes the first token
    with_first = kube.connect(str(control_plane.token_kubeconfig("old-token", first)))
    deadline = time.monotonic() + REVOCATION_SECONDS
    while True:  # the revocation is real (once the API server's token cache lets go)...
        try:
            _whoami(with_first)
        except kube.Unauthorized:
            break
        assert time.monotonic() < deadline, "the first token still works"
        time.sleep(0.5)
    assert _whoami(door) == expected  # ...and the long-lived door moved to the new token
