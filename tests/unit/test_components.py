"""Which static pods load which files, and where they listen: read from manifests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import fabricate
from reconciler.decide import components, plan, policy
from reconciler.model import kubeadm, staticpod
from reconciler.node import host, observe

EXPECTED = {
    "apiserver": ["kube-apiserver"],
    "apiserver-kubelet-client": ["kube-apiserver"],
    "apiserver-etcd-client": ["kube-apiserver"],
    "front-proxy-client": ["kube-apiserver"],
    "etcd-server": ["etcd"],
    "etcd-peer": ["etcd"],
    "controller-manager.conf": ["kube-controller-manager"],
    "scheduler.conf": ["kube-scheduler"],
    "admin.conf": [],
    "super-admin.conf": [],
    "etcd-healthcheck-client": [],
}


def _pods(root: Path) -> dict[str, staticpod.StaticPod]:
    return observe.observe(host.Host(root)).static_pods


def _manifest(command: list[str], mounts: list[tuple[str, str, str]]) -> str:
    """mounts: (name, mountPath in the container, hostPath)"""
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "x", "labels": {"component": "x"}},
            "spec": {
                "containers": [
                    {
                        "name": "x",
                        "command": command,
                        "volumeMounts": [{"name": n, "mountPath": m} for n, m, _ in mounts],
                    }
                ],
                "volumes": [{"name": n, "hostPath": {"path": h}} for n, _, h in mounts],
            },
        }
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_kubeadm_file_restarts_the_components_whose_flags_name_it(
    make_tree: Any, name: str
) -> None:
    pods = _pods(make_tree(key_type="ecdsa"))
    assert [c for c, _ in components.affected([name], pods)] == EXPECTED[name]


@pytest.mark.parametrize(
    ("name", "command", "mounts", "endpoint"),
    [
        pytest.param(
            "kube-apiserver",
            ["kube-apiserver"],
            [],
            staticpod.Endpoint("serving", "127.0.0.1", 6443, None),
            id="apiserver-without-flags-uses-kubeadm-defaults",
        ),
        pytest.param(
            "kube-scheduler",
            ["kube-scheduler", "--bind-address=10.1.2.3", "--secure-port", "1234"],
            [],
            staticpod.Endpoint("serving", "10.1.2.3", 1234, None),
            id="single-address-is-probed-there-and-space-separated-values-are-read",
        ),
        pytest.param(
            "kube-controller-manager",
            ["kcm", "--bind-address=0.0.0.0", "--tls-cert-file=/certs/kcm.crt"],
            [("c", "/certs", "/srv/kcm")],
            staticpod.Endpoint("serving", "127.0.0.1", 10257, "/srv/kcm/kcm.crt"),
            id="all-addresses-probed-on-loopback-cert-mapped-through-its-mount",
        ),
        pytest.param(
            "kube-apiserver",
            ["kube-apiserver", "--tls-cert-file=/not/mounted.crt"],
            [],
            staticpod.Endpoint("serving", "127.0.0.1", 6443, None),
            id="a-path-no-volume-provides-is-inside-the-image",
        ),
        pytest.param(
            "etcd",
            [
                "etcd",
                "--listen-client-urls=https://10.0.0.11:2379,https://127.0.0.1:2379",
                "--cert-file=/etc/kubernetes/pki/etcd/server.crt",
            ],
            [("e", "/etc/kubernetes/pki/etcd", "/etc/kubernetes/pki/etcd")],
            staticpod.Endpoint("serving", "127.0.0.1", 2379, "/etc/kubernetes/pki/etcd/server.crt"),
            id="etcd-client-url-on-loopback-preferred",
        ),
    ],
)
def test_endpoint_read_from_flags(
    name: str, command: list[str], mounts: list[tuple[str, str, str]], endpoint: staticpod.Endpoint
) -> None:
    pod = components.parse(name, f"/m/{name}.yaml", _manifest(command, mounts))
    assert pod.serving == endpoint


def test_etcd_health_uses_the_healthcheck_client_beside_its_server_cert() -> None:
    pod = components.parse(
        "etcd",
        "/m/etcd.yaml",
        _manifest(["etcd", "--cert-file=/pki/server.crt"], [("e", "/pki", "/etc/k/pki/etcd")]),
    )
    assert pod.health_path == "/health"
    assert pod.health_client == (
        "/etc/k/pki/etcd/healthcheck-client.crt",
        "/etc/k/pki/etcd/healthcheck-client.key",
    )
    assert [e.role for e in pod.endpoints] == ["serving", "peer"]


@pytest.mark.parametrize(
    "text",
    ["{", "kind: Pod\n", "spec: {containers: []}\n"],
    ids=["not-yaml", "no-spec", "no-container"],
)
def test_unreadable_manifest_is_an_error_naming_the_file(text: str) -> None:
    with pytest.raises(components.ComponentError, match=r"/m/etcd\.yaml"):
        components.parse("etcd", "/m/etcd.yaml", text)


@pytest.mark.parametrize(
    ("grace", "seconds"),
    [pytest.param(None, 30.0, id="absent-is-kubernetes-default"), pytest.param(45, 45.0, id="set")],
)
def test_termination_grace_period_and_command_line_come_from_the_manifest(
    grace: int | None, seconds: float
) -> None:
    doc = yaml.safe_load(_manifest(["kube-apiserver", "--secure-port=6443"], []))
    if grace is not None:
        doc["spec"]["terminationGracePeriodSeconds"] = grace
    pod = components.parse("kube-apiserver", "/m/a.yaml", yaml.safe_dump(doc))
    assert pod.grace_seconds == seconds
    assert pod.argv == ("kube-apiserver", "--secure-port=6443")


@pytest.mark.parametrize("grace", [-1, "30", 1.5, True], ids=["negative", "text", "float", "bool"])
def test_bad_termination_grace_period_is_an_error_naming_the_field(grace: object) -> None:
    doc = yaml.safe_load(_manifest(["kube-apiserver"], []))
    doc["spec"]["terminationGracePeriodSeconds"] = grace
    with pytest.raises(components.ComponentError, match="terminationGracePeriodSeconds"):
        components.parse("kube-apiserver", "/m/a.yaml", yaml.safe_dump(doc))


def test_static_pod_path_comes_from_the_kubelet_config() -> None:
    assert components.static_pod_path({"staticPodPath": "/srv/pods/"}) == "/srv/pods"
    assert components.static_pod_path({}) == kubeadm.MANIFESTS
    assert components.static_pod_path(None) == kubeadm.MANIFESTS


def test_manifests_in_a_custom_static_pod_path_are_the_ones_restarted(
    make_tree: Any, now: dt.datetime
) -> None:
    root = make_tree(key_type="ecdsa", expiries={"apiserver": dt.timedelta(days=5)})
    (root / "etc/kubernetes/manifests").rename(root / "srv-pods")
    (root / "srv").mkdir()
    (root / "srv-pods").rename(root / "srv/pods")
    config = root / "var/lib/kubelet/config.yaml"
    config.write_text(config.read_text().replace("/etc/kubernetes/manifests", "/srv/pods"))
    seen = observe.observe(host.Host(root))
    assert seen.static_pods["kube-apiserver"].manifest == "/srv/pods/kube-apiserver.yaml"
    spec = policy.resolve(policy.load("apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"), {})
    restarts = [
        a.target for a in plan.plan(spec, seen, now).actions if a.kind == "restart-static-pod"
    ]
    assert restarts == ["kube-apiserver"]


def test_fabricated_manifests_name_the_requested_ports(tmp_path: Path, now: dt.datetime) -> None:
    ports = (("kube-apiserver", 16443), ("etcd", 16379), ("etcd-peer", 16380))
    fabricate.build(tmp_path, now, fabricate.Options(key_type="ecdsa", ports=ports))
    pods = _pods(tmp_path)
    assert pods["kube-apiserver"].serving.port == 16443
    assert [e.port for e in pods["etcd"].endpoints] == [16379, 16380]
    assert pods["kube-scheduler"].serving.port == 10259


@pytest.mark.parametrize(
    ("urls", "host", "port"),
    [
        ("https://[::1]:2379", "127.0.0.1", 2379),
        ("https://[fd00::5]:2379", "fd00::5", 2379),
        ("https://10.0.0.11:2380,https://0.0.0.0:2381", "127.0.0.1", 2381),
        ("https://10.0.0.11:2380", "10.0.0.11", 2380),
    ],
    ids=["ipv6-loopback", "ipv6-address", "any-address-preferred", "single-address"],
)
def test_etcd_listen_urls(urls: str, host: str, port: int) -> None:
    pod = components.parse(
        "etcd", "/m/etcd.yaml", _manifest(["etcd", f"--listen-client-urls={urls}"], [])
    )
    assert (pod.serving.host, pod.serving.port) == (host, port)


def test_plain_http_etcd_url_is_refused() -> None:
    with pytest.raises(components.ComponentError, match="https"):
        components.parse(
            "etcd",
            "/m/etcd.yaml",
            _manifest(["etcd", "--listen-client-urls=http://127.0.0.1:2379"], []),
        )


def test_restart_none_keeps_reporting_components_the_state_file_says_run_old_certs(
    make_tree: Any, now: dt.datetime
) -> None:
    import json

    from reconciler.model import paths

    root = make_tree(key_type="ecdsa", embedded_kubelet_conf=False, kubelet_config_rotation=True)
    state = {"pendingRestarts": [], "restartRequired": {"etcd": {"serving": True}}}
    (root / paths.STATE.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (root / paths.STATE.lstrip("/")).write_text(json.dumps(state))
    text = (
        "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\nspec: {kubeadm: {restart: none}}\n"
    )
    spec = policy.resolve(policy.load(text), {})
    the_plan = plan.plan(spec, observe.observe(host.Host(root)), now)
    assert the_plan.actions == ()
    assert [(f.target, f.reason) for f in the_plan.findings] == [("etcd", "RestartRequired")]
