"""The endpoint against the real API server, with the RBAC kustomize/ ships: ``/metrics`` over
HTTPS only for a token the API server authenticates (TokenReview) and authorizes for ``get`` on
``/metrics`` (SubjectAccessReview), asked by kucero's own ServiceAccount; the probes answer
without a token; ``/healthz`` turns 500 when a real loop of the node daemon is wedged, and 200
again when it moves."""

from __future__ import annotations

import datetime as dt
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import metrics
from reconciler.cluster import kube
from reconciler.node import execute
from reconciler.run import endpoint, health, node_daemon
from tests.deploy import shipped

# No certificate check: the endpoint's certificate is self-signed, as kube-prometheus scrapes
# kube-controller-manager; what is under test is the token.
INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE


def get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=INSECURE, timeout=15) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def kucero_kube(
    admin_kube: kube.Kube, namespace: str, clients: Any, control_plane: Any
) -> Iterator[kube.Kube]:
    """kucero's worker identity with the RBAC kustomize/ ships (it reviews the tokens)."""
    with shipped.apply_identities(admin_kube, namespace, shipped.NODE):
        token = clients.token(namespace, shipped.NODE)
        door = kube.connect(str(control_plane.token_kubeconfig(f"kucero-{namespace}", token)))
        yield door
        door.close()


@pytest.fixture
def served(kucero_kube: kube.Kube) -> Iterator[endpoint.Endpoint]:
    options = endpoint.Options(("127.0.0.1", 0), secure=True)
    made = endpoint.serve(
        options, metrics.Metrics(), lambda: True, health.Heartbeats(), kucero_kube
    )
    yield made
    made.close()


def test_a_scrape_without_a_token_is_refused_with_401(served: endpoint.Endpoint) -> None:
    status, body = get(served.port, "/metrics")
    assert status == 401 and "kucero_" not in body


def test_a_token_the_api_server_does_not_know_is_refused_with_401(
    served: endpoint.Endpoint,
) -> None:
    status, body = get(served.port, "/metrics", "not-a-token")
    assert status == 401 and "kucero_" not in body


def test_a_service_account_without_the_metrics_reader_role_gets_403(
    served: endpoint.Endpoint, clients: Any, namespace: str
) -> None:
    token = clients.token(namespace, "stranger")
    status, body = get(served.port, "/metrics", token)
    assert status == 403 and f"system:serviceaccount:{namespace}:stranger" in body
    assert "kucero_" not in body


def test_a_service_account_bound_to_the_metrics_reader_role_gets_the_metrics(
    served: endpoint.Endpoint, clients: Any, namespace: str, admin_kube: kube.Kube
) -> None:
    token = clients.token(namespace, "prometheus")
    with shipped.metrics_reader(admin_kube, namespace, "prometheus"):
        status, body = get(served.port, "/metrics", token)
    assert status == 200 and "# TYPE kucero_build_info gauge" in body


def test_the_probes_answer_without_a_token(served: endpoint.Endpoint) -> None:
    assert get(served.port, "/healthz") == (200, "[+]ping ok\nhealthz check passed\n")
    assert get(served.port, "/readyz") == (200, "ok\n")


# --- liveness of real loops ----------------------------------------------------------------

POLICY = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\nspec: {paused: true}\n"


@pytest.fixture
def node_loop(
    tmp_path: Path, admin_kube: kube.Kube, make_node: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[node_daemon.NodeDaemon, endpoint.Endpoint, threading.Event]]:
    """A node daemon on an empty host (a paused policy: nothing to do but observe), watching
    its Node on the real API server, whose pass blocks in the metrics observer until the
    returned event is set; the pass budget is cut to two seconds."""
    make_node("wedge-1")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    (tmp_path / "host").mkdir()
    released, entered = threading.Event(), threading.Event()
    released.set()

    def observer(result: Any, seconds: float) -> None:
        entered.set()
        released.wait()

    monkeypatch.setattr(node_daemon, "pass_budget", lambda spec, grace: 2.0)
    config = node_daemon.Config(
        node_name="wedge-1",
        host_root=str(tmp_path / "host"),
        namespace="default",
        policy_file=str(policy_file),
        policy_defaults={},
        node_labels={},
        lease_seconds=15,
        slot_retry=dt.timedelta(seconds=1),
        failure_retry=dt.timedelta(seconds=1),
        execute=execute.Settings(kubelet_restart_command=("true",)),
    )
    daemon = node_daemon.NodeDaemon(config, admin_kube, observer)
    options = endpoint.Options(("127.0.0.1", 0), secure=True)
    served = endpoint.serve(options, metrics.Metrics(), lambda: True, daemon.heartbeats, None)
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    thread.start()
    assert daemon.ready.wait(30)
    yield daemon, served, released
    released.set()
    stop.set()
    daemon.wake("test over")
    thread.join(30)
    served.close()


def _wait_for(what: str, check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_healthz_fails_while_the_node_pass_loop_is_wedged_and_recovers_when_it_moves(
    node_loop: tuple[node_daemon.NodeDaemon, endpoint.Endpoint, threading.Event],
) -> None:
    daemon, served, released = node_loop
    status, body = get(served.port, "/healthz")
    assert status == 200 and "[+]node-pass ok" in body and "[+]node-watch ok" in body, body
    released.clear()  # the next pass blocks
    daemon.wake("a pass that never ends")
    _wait_for("/healthz 500", lambda: get(served.port, "/healthz")[0] == 500, 20)
    status, body = get(served.port, "/healthz")
    assert "[-]node-pass failed: no progress for" in body and "[+]node-watch ok" in body, body
    assert get(served.port, "/readyz")[0] == 200  # readiness is another question
    released.set()
    _wait_for("/healthz 200 again", lambda: get(served.port, "/healthz")[0] == 200, 20)


def test_healthz_fails_when_the_node_watch_is_stuck_in_its_callback(
    node_loop: tuple[node_daemon.NodeDaemon, endpoint.Endpoint, threading.Event],
    admin_kube: kube.Kube,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemon, served, _ = node_loop
    from reconciler.cluster import nodes, watching

    monkeypatch.setattr(watching, "ALIVE_WITHIN_SECONDS", 2.0)
    with daemon._lock:  # the watch's callback needs it: the next event blocks the watch
        nodes.patch_annotations(admin_kube, "wedge-1", {"example.com/poke": "1"})
        _wait_for("/healthz 500", lambda: get(served.port, "/healthz")[0] == 500, 20)
        body = get(served.port, "/healthz")[1]
        assert "[-]node-watch failed" in body, body
    monkeypatch.setattr(watching, "ALIVE_WITHIN_SECONDS", 3600.0)
    nodes.patch_annotations(admin_kube, "wedge-1", {"example.com/poke": "2"})
    _wait_for("/healthz 200 again", lambda: get(served.port, "/healthz")[0] == 200, 20)
