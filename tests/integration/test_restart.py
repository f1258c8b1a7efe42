"""Verified control-plane restarts against the kubelet stand-in, on trees the real kubeadm
wrote (certificates, kubeconfigs, static pod manifests, kubelet config), with real processes
serving real TLS. Each test runs ``kucero node --once`` as an operator does (a subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.controlplane import binaries, kubeadm_node, kubelet_standin

pytestmark = pytest.mark.kubeadm
ORDER = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"]
# Every kubeadm certificate is a year old at most: renewBefore above a year makes all due.
ALL_DUE = "renewBefore: 8800h, certificateValidity: 9000h, healthTimeout: {timeout}"
SERVED = {  # component -> (port name, certificate file the manifest names)
    "kube-apiserver": ("kube-apiserver", "etc/kubernetes/pki/apiserver.crt"),
    "etcd": ("etcd", "etc/kubernetes/pki/etcd/server.crt"),
    "etcd-peer": ("etcd-peer", "etc/kubernetes/pki/etcd/peer.crt"),
}


@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    binaries.require("kubeadm")
    ports = kubeadm_node.free_ports()
    root = kubeadm_node.build(tmp_path_factory.mktemp("kubeadm-cp") / "root", ports)
    return root, ports


@pytest.fixture
def node(
    _template: tuple[Path, dict[str, int]], tmp_path: Path
) -> Iterator[tuple[Path, dict[str, int], kubelet_standin.KubeletStandin]]:
    """A fresh copy of the kubeadm tree with its four components running under the stand-in."""
    template, ports = _template
    root = tmp_path / "root"
    shutil.copytree(template, root, symlinks=True)
    with kubelet_standin.KubeletStandin(root) as standin:
        standin.wait_serving(ORDER)
        yield root, ports, standin


def served(port: int) -> x509.Certificate:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    import socket

    with socket.create_connection(("127.0.0.1", port), 2) as s, ctx.wrap_socket(s) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def on_disk(root: Path, path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((root / path).read_bytes())


def serves_file(root: Path, ports: dict[str, int], what: str) -> bool:
    port_name, path = SERVED[what]
    got, want = served(ports[port_name]), on_disk(root, path)
    return (got.serial_number, got.not_valid_after_utc) == (
        want.serial_number,
        want.not_valid_after_utc,
    )


def policy(tmp_path: Path, restart: str, timeout: str = "10s") -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
        f"spec: {{kubeadm: {{restart: {restart}, {ALL_DUE.format(timeout=timeout)}}}}}\n"
    )
    return path


def kucero(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "reconciler", *map(str, args)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if check and done.returncode != 0:
        raise AssertionError(done.stdout + done.stderr)
    return done


def node_once(root: Path, policy_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return kucero(
        "node", "--once", "--host-root", root, "--policy", policy_file, "-o", "json",
        "--kubelet-restart-command", "true", "--manifest-grace", "5", *extra,
    )  # fmt: skip


def restarts_of(standin: kubelet_standin.KubeletStandin) -> list[tuple[str, str]]:
    """Stops and starts after the initial start of all four."""
    return [(what, name) for _, what, name in standin.events[len(ORDER) :]]


def test_full_renewal_restarts_exactly_the_components_one_at_a_time_in_order(
    node: tuple[Path, dict[str, int], kubelet_standin.KubeletStandin], tmp_path: Path
) -> None:
    root, ports, standin = node
    policy_file = policy(tmp_path, "manifest-move")
    planned = json.loads(
        kucero(
            "plan", "--host-root", root, "--policy", policy_file, "-o", "json", check=True
        ).stdout
    )
    assert [a["target"] for a in planned["actions"] if a["action"] == "restart-static-pod"] == ORDER
    assert not serves_file(root, ports, "kube-apiserver") or True  # served before: the old one
    old = {w: served(ports[SERVED[w][0]]).serial_number for w in SERVED}

    done = node_once(root, policy_file)

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert [(r["component"], r["result"]) for r in report["restarts"]] == [
        (c, "restarted") for c in ORDER
    ]
    # one at a time, in order: each component stopped and started before the next is touched
    assert restarts_of(standin) == [(w, c) for c in ORDER for w in ("stop", "start")]
    for what in SERVED:
        assert serves_file(root, ports, what), what
        assert served(ports[SERVED[what][0]]).serial_number != old[what]
    for component in ("kube-apiserver", "etcd"):  # logged with component, duration and result
        (line,) = [x for x in done.stderr.splitlines() if f" {component}: restarted in " in x]
        assert f"component={component} action=restart-static-pod" in line, line
        assert line.endswith("result=restarted"), line


@pytest.mark.parametrize(
    ("component", "mode"),
    [("kube-apiserver", "never"), ("etcd", "other-cert")],
    ids=["apiserver-never-comes-back", "etcd-comes-back-with-another-cert"],
)
def test_component_that_fails_is_rolled_back_to_its_old_certificate(
    node: tuple[Path, dict[str, int], kubelet_standin.KubeletStandin],
    tmp_path: Path,
    component: str,
    mode: str,
) -> None:
    root, ports, standin = node
    files = {
        "kube-apiserver": ["apiserver.crt", "apiserver.key", "front-proxy-client.crt"],
        "etcd": ["etcd/server.crt", "etcd/server.key", "etcd/peer.crt", "etcd/peer.key"],
    }[component]
    before = {f: (root / "etc/kubernetes/pki" / f).read_bytes() for f in files}
    serial = served(ports[component]).serial_number
    standin.fail_next_start(component, mode)

    done = node_once(
        root, policy(tmp_path, "manifest-move", timeout="10s"), "--manifest-grace", "1"
    )

    assert done.returncode == 1, done.stdout
    report = json.loads(done.stdout)
    results = {r["component"]: r["result"] for r in report["restarts"]}
    assert results[component] == "rolled-back", [r["message"] for r in report["restarts"]]
    assert any(component in f and "rolled back" in f for f in report["failures"])
    # the pass stopped: nothing after the failed component was touched
    after = ORDER[ORDER.index(component) + 1 :]
    assert not {c for _, c in restarts_of(standin)} & set(after)
    assert all(
        r["result"] == "restarted" for r in report["restarts"] if r["component"] != component
    )
    assert served(ports[component]).serial_number == serial
    assert {f: (root / "etc/kubernetes/pki" / f).read_bytes() for f in files} == before
    assert serves_file(root, ports, component)


def test_restart_none_reports_which_components_still_serve_old_certificates(
    node: tuple[Path, dict[str, int], kubelet_standin.KubeletStandin], tmp_path: Path
) -> None:
    root, ports, standin = node
    policy_file = policy(tmp_path, "none")

    done = node_once(root, policy_file)

    assert done.returncode == 0, done.stdout + done.stderr
    required = [
        f["target"] for f in json.loads(done.stdout)["findings"] if f["reason"] == "RestartRequired"
    ]
    assert required == ORDER
    assert restarts_of(standin) == []  # nothing restarted
    assert not serves_file(root, ports, "kube-apiserver")
    # the operator restarts kube-apiserver and kube-scheduler; the next pass sees it
    for name in ("kube-apiserver", "kube-scheduler"):
        manifest = root / f"etc/kubernetes/manifests/{name}.yaml"
        parked = tmp_path / f"{name}.yaml"
        manifest.rename(parked)
        deadline = time.monotonic() + 10
        while ("stop", name) not in restarts_of(standin) and time.monotonic() < deadline:
            time.sleep(0.05)
        parked.rename(manifest)
    standin.wait_serving(ORDER)
    time.sleep(0.5)  # the restarted processes load their certificates
    again = json.loads(node_once(root, policy_file).stdout)
    required = [f["target"] for f in again["findings"] if f["reason"] == "RestartRequired"]
    assert required == ["kube-controller-manager", "etcd"]


def test_sigkill_while_a_manifest_is_out_is_repaired_by_the_next_pass(
    node: tuple[Path, dict[str, int], kubelet_standin.KubeletStandin], tmp_path: Path
) -> None:
    root, ports, standin = node
    standin.stop_delay = 60.0  # a kubelet that has not yet noticed the removal
    manifest = root / "etc/kubernetes/manifests/kube-apiserver.yaml"
    content = manifest.read_bytes()
    policy_file = policy(tmp_path, "manifest-move")
    argv = [sys.executable, "-m", "reconciler", "node", "--once", "--host-root", str(root)]
    argv += ["--policy", str(policy_file), "--kubelet-restart-command", "true"]
    proc = subprocess.Popen([*argv, "--manifest-grace", "60"], stdout=subprocess.DEVNULL)
    parked = root / "etc/kubernetes/tmp/kucero-manifests/kube-apiserver.yaml"
    deadline = time.monotonic() + 60
    while not parked.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert parked.exists() and not manifest.exists()
    standin.stop_delay = 0.0

    done = node_once(root, policy_file)

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert any(
        "moved /etc/kubernetes/manifests/kube-apiserver.yaml back" in n for n in report["recovered"]
    )
    assert manifest.read_bytes() == content and not parked.exists()
    assert [r["component"] for r in report["restarts"] if r["result"] == "restarted"] == ORDER
    for what in SERVED:
        assert serves_file(root, ports, what), what


def test_crictl_stops_each_pod_sandbox_through_the_hosts_crictl(
    node: tuple[Path, dict[str, int], kubelet_standin.KubeletStandin], tmp_path: Path
) -> None:
    root, ports, standin = node
    crictl = kubelet_standin.crictl_stub(standin)

    done = node_once(root, policy(tmp_path, "crictl"), "--crictl-command", str(crictl))

    assert done.returncode == 0, done.stdout + done.stderr
    calls = (standin.control / "calls.log").read_text().splitlines()
    listed = [c.split("component=")[1].split()[0] for c in calls if c.startswith("pods")]
    assert listed == ORDER
    assert [c.split()[0] for c in calls] == ["pods", "stopp"] * 4
    assert "--namespace kube-system" in calls[0] and "--state ready" in calls[0]
    for what in SERVED:
        assert serves_file(root, ports, what), what


def test_kubeadm_manifests_say_which_component_loads_each_file(
    _template: tuple[Path, dict[str, int]],
) -> None:
    from reconciler.decide import components
    from reconciler.node import host, observe
    from tests.unit.test_components import EXPECTED

    root, ports = _template
    pods = observe.observe(host.Host(root)).static_pods
    assert sorted(pods) == sorted(ORDER)
    for name, expected in EXPECTED.items():
        assert [c for c, _ in components.affected([name], pods)] == expected, name
    assert {c: pods[c].serving.port for c in ORDER} == {c: ports[c] for c in ORDER}
    assert pods["etcd"].endpoints[1].port == ports["etcd-peer"]
    assert pods["kube-controller-manager"].serving.cert_file is None  # made in memory


def test_sigkill_in_the_middle_of_a_rollback_is_finished_by_the_next_pass(
    node: tuple[Path, dict[str, int], kubelet_standin.KubeletStandin], tmp_path: Path
) -> None:
    root, ports, standin = node
    old = (root / "etc/kubernetes/pki/apiserver.crt").read_bytes()
    standin.fail_next_start("kube-apiserver", "never")
    policy_file = policy(tmp_path, "manifest-move", timeout="10s")
    argv = [sys.executable, "-m", "reconciler", "node", "--once", "--host-root", str(root)]
    argv += ["--policy", str(policy_file), "--kubelet-restart-command", "true"]
    proc = subprocess.Popen([*argv, "--manifest-grace", "2"], stdout=subprocess.DEVNULL)
    journal = root / "etc/kubernetes/tmp/kucero-restart.json"
    parked = root / "etc/kubernetes/tmp/kucero-manifests/kube-apiserver.yaml"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        parked.exists() and journal.exists() and '"rollback"' in journal.read_text()
    ):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # the rollback's restart has the manifest out
    proc.wait()
    assert parked.exists() and json.loads(journal.read_text())["phase"] == "rollback"

    done = node_once(root, policy_file)

    report = json.loads(done.stdout)
    assert any("finished rolling back" in n for n in report["recovered"]), report["recovered"]
    assert any("kube-apiserver.yaml back" in n for n in report["recovered"])
    assert not parked.exists() and not journal.exists()
    # the old certificate was back on disk before this pass renewed it again and restarted
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "etc/kubernetes/pki/apiserver.crt").read_bytes() != old
    assert serves_file(root, ports, "kube-apiserver")
