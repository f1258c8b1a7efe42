"""kucero on a real kubeadm node: the real kubelet restarts the static pods, containerd runs
them, the image is the one built from the Dockerfile, deployed with kustomize as the README
says. The node's leaf certificates are issued for 48 h, inside the default policy's 720 h
``renewBefore``, so kucero's first pass renews them all.

The tests run in file order on one node (one rotation, then edits and faults on top of it);
``make e2e`` runs them (``tests/e2e/README.md``). Timings go to ``bench/results/``.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import checks, deploy, images, monitor, node

pytestmark = pytest.mark.e2e

COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
CONVERGE_TIMEOUT = 600.0
RESULTS = node.REPO / "bench" / "results" / "e2e-realnode.json"
KUBEADM_LEAVES = (
    "admin.conf", "apiserver", "apiserver-etcd-client", "apiserver-kubelet-client",
    "controller-manager.conf", "etcd-healthcheck-client", "etcd-peer", "etcd-server",
    "front-proxy-client", "scheduler.conf", "super-admin.conf",
)  # fmt: skip
ETCD_CLIENT = (
    checks.PKI / "etcd/healthcheck-client.crt",
    checks.PKI / "etcd/healthcheck-client.key",
)
ETCD_PEER = (checks.PKI / "etcd/peer.crt", checks.PKI / "etcd/peer.key")
results: dict[str, Any] = {}


def policy_with(certificates: list[str], validity: int, **kubeadm: Any) -> str:
    """Renew ``certificates`` again now: a renewed leaf has 8760 h left, so a
    ``renewBefore`` of ``validity`` - 30 h (``validity`` > 8790) makes it due, and the schema's
    day between ``renewBefore`` and ``certificateValidity`` is kept; each edit raises
    ``validity`` so the last one's renewals are not due again."""
    doc = yaml.safe_load(deploy.base_policy())
    doc["spec"]["kubeadm"].update(
        certificates=certificates,
        certificateValidity=f"{validity}h",
        renewBefore=f"{validity - 30}h",
        **kubeadm,
    )
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture
def edits_policy(bin_dir: Path, cluster: dict[str, Any], tmp_path: Path) -> Iterator[None]:
    """The test edits the policy; the shipped one is applied again afterwards (otherwise a
    policy that renews every minute would go on restarting components under later tests)."""
    yield
    deploy.apply_policy(bin_dir, cluster, deploy.base_policy(), tmp_path / "restore")


@pytest.fixture(scope="module")
def rotation(bin_dir: Path, cluster: dict[str, Any], tmp_path_factory: Any) -> dict[str, Any]:
    """Deploy kucero and watch its first pass rotate everything, health polled throughout."""
    image, archive = (bin_dir / "e2e" / "kucero.image").read_text().split()
    node.import_image(Path(archive))
    before = checks.containers(bin_dir)
    overlay = deploy.write_overlay(
        tmp_path_factory.mktemp("overlay"),
        bin_dir,
        image,
        deploy.base_policy(),
        int(cluster["supervisor"]),
    )
    with monitor.Monitor(node.node_ip()) as watch:
        t0 = time.monotonic()
        deploy.apply(bin_dir, overlay)
        st = checks.wait_for(
            "kucero.io/status Converged with the desired revision",
            lambda: deploy.converged_to_desired(bin_dir), CONVERGE_TIMEOUT, poll=2,
        )  # fmt: skip
        converged = time.monotonic() - t0
        # every component healthy again before the monitor stops
        checks.wait_for(
            "every component healthy",
            lambda: all(monitor.healthy(u) for u in monitor.endpoints(node.node_ip()).values()), 120,
        )  # fmt: skip
    outages = watch.outages()
    own, with_etcd = apiserver_outages(outages)
    results.update(
        apiserverOwnRestartSeconds=own,
        apiserverDuringEtcdRestartSeconds=with_etcd,
        kubeadmInitSeconds=cluster.get("kubeadmInitSeconds"),
        nodeReadySeconds=cluster.get("readySeconds"),
        deployToConvergedSeconds=round(converged, 1),
        downtimeSeconds={c: round(sum(b - a for a, b in ivs), 2) for c, ivs in outages.items()},
        outages={c: [(round(a, 2), round(b, 2)) for a, b in ivs] for c, ivs in outages.items()},
        timeline=watch.timeline(),
    )
    spans = [iv for ivs in outages.values() for iv in ivs]
    if spans:
        results["rotationSeconds"] = round(max(b for _, b in spans) - min(a for a, _ in spans), 1)
    pids = checks.kucero_pids()
    if pids:
        results["kuceroPeakRssMiB"] = round(max(checks.peak_rss_mib(p) for p in pids), 1)
    write_results()
    return {
        "foreign": checks.foreign_listeners(),
        "status": st, "before": before, "after": checks.containers(bin_dir), "monitor": watch,
        "deployed": time.time() - converged,
    }  # fmt: skip


def write_results() -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   **results}, indent=1) + "\n")  # fmt: skip


def test_every_leaf_is_renewed_and_kubeadm_check_expiration_agrees(
    bin_dir: Path, rotation: dict[str, Any]
) -> None:
    days = checks.check_expiration(bin_dir)
    assert set(KUBEADM_LEAVES) <= set(days), days
    # issued for 48 h by kubeadm init; renewed for the policy's 8760 h
    short = {name: d for name, d in days.items() if d < 360}
    assert not short, f"kubeadm says these still expire within a year: {short}"
    certs = rotation["status"]["certificates"]
    assert set(KUBEADM_LEAVES) <= set(certs), certs


def test_each_component_was_restarted_once_by_the_kubelet_in_order_etcd_last(
    rotation: dict[str, Any],
) -> None:
    old = {c["id"] for c in rotation["before"]}
    new = [c for c in rotation["after"] if c["id"] not in old and c["name"] in COMPONENTS]
    started = {name: [c for c in new if c["name"] == name] for name in COMPONENTS}
    assert all(len(v) == 1 for v in started.values()), (
        f"each component must get exactly one new container (no crash loop): {started}; "
        f"other processes on kubeadm's ports: {rotation['foreign']}"
    )
    order = sorted(COMPONENTS, key=lambda n: started[n][0]["created"])
    assert order == list(COMPONENTS), order
    running = {c["name"]: c for c in rotation["after"] if c["state"] == "CONTAINER_RUNNING"}
    for name in COMPONENTS:
        assert running[name]["id"] == started[name][0]["id"], f"{name} is not the new container"


def test_each_component_serves_exactly_the_certificate_on_disk(rotation: dict[str, Any]) -> None:
    assert checks.served(6443) == checks.on_disk(checks.PKI / "apiserver.crt")
    etcd = checks.served(2379, ETCD_CLIENT, host=node.node_ip())
    assert etcd == checks.on_disk(checks.PKI / "etcd/server.crt")
    # kubeadm binds etcd's peer port to the node's address (and the e2e config its client
    # port too: tests/e2e/kubeadm.py)
    peer = checks.served(2380, ETCD_PEER, host=node.node_ip())
    assert peer == checks.on_disk(checks.PKI / "etcd/peer.crt")
    # kube-controller-manager and kube-scheduler serve an in-memory certificate made at start:
    # what they load from disk is their kubeconfig's client certificate, proven by their
    # being healthy (and by the API server accepting it, below)
    for name in ("kube-controller-manager", "kube-scheduler"):
        assert monitor.healthy(monitor.endpoints(node.node_ip())[name]), name


def test_components_went_down_one_at_a_time_and_the_api_server_briefly(
    rotation: dict[str, Any],
) -> None:
    watch: monitor.Monitor = rotation["monitor"]
    print("\n".join(["timeline of the rotation:", *watch.timeline()]))
    # kube-apiserver cannot answer while etcd is down: that outage is etcd's restart, not a
    # second component failing; each component is polled on its own, so two outages may
    # seem to touch by up to a poll interval
    overlaps = watch.overlaps(depends={"kube-apiserver": "etcd"}, slack=2 * monitor.POLL_SECONDS)
    assert overlaps == [], f"{overlaps}; other processes on kubeadm's ports: {rotation['foreign']}"
    outages = watch.outages()
    assert all(outages[c] for c in COMPONENTS), f"every component was restarted: {outages}"
    own, with_etcd = apiserver_outages(outages)
    # aim: kube-apiserver unavailable at most 10 s for its own restart
    assert own and max(own) <= 10.0, f"kube-apiserver's own restart: {own}s down; {outages}"
    # during etcd's restart it cannot serve either: etcd is restarted in place (SIGTERM, the
    # kubelet starts the container again; reconciler/node/linger.py says why not by its
    # manifest, which once kept it down 110 s), then the API server reconnects
    assert with_etcd and max(with_etcd) <= 12.0, f"during etcd's restart: {with_etcd}s"


def apiserver_outages(outages: dict[str, list[tuple[float, float]]]) -> tuple[list[float], ...]:
    """kube-apiserver's outages split into those of its own restart and those overlapping
    etcd's (seconds each)."""
    etcd = outages["etcd"]
    own, with_etcd = [], []
    for a, b in outages["kube-apiserver"]:
        shared = any(a < eb and ea < b for ea, eb in etcd)
        (with_etcd if shared else own).append(round(b - a, 2))
    return own, with_etcd


def test_kubectl_with_the_renewed_admin_conf_works_and_status_is_converged(
    bin_dir: Path, rotation: dict[str, Any]
) -> None:
    conf = yaml.safe_load(node.ADMIN_CONF.read_text())
    data = conf["users"][0]["user"]["client-certificate-data"]
    admin = checks.cert(base64.b64decode(data))
    assert (admin.not_valid_after_utc - admin.not_valid_before_utc).days >= 364
    assert node.node_ready(bin_dir)
    desired = checks.node_annotation(bin_dir, "kucero.io/desired")
    st = deploy.status(bin_dir)
    assert st["phase"] == "Converged" and st["revision"] == desired["revision"], st


def test_kubelet_serving_csr_is_signed_by_kucero_and_logs_and_exec_work(
    bin_dir: Path, rotation: dict[str, Any]
) -> None:
    name = node.node_name()
    config = yaml.safe_load(Path("/var/lib/kubelet/config.yaml").read_text())
    assert config.get("serverTLSBootstrap") is True, "kucero switches serverTLSBootstrap on"

    def signed() -> list[dict[str, Any]]:
        items = checks.kubectl_json(bin_dir, "get", "csr")["items"]
        return [
            c for c in items
            if c["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
            and c["spec"]["username"] == f"system:node:{name}"
            and c.get("status", {}).get("certificate")
        ]  # fmt: skip

    csr = checks.wait_for("the kubelet's serving CSR signed", signed, 120)[-1]
    reasons = {c["type"]: c.get("reason") for c in csr["status"]["conditions"]}
    assert reasons.get("Approved") == "KuceroApproved", reasons
    issued = checks.cert(base64.b64decode(csr["status"]["certificate"]))
    ca = checks.cert((checks.PKI / "ca.crt").read_bytes())
    issued.verify_directly_issued_by(ca)
    current = Path("/var/lib/kubelet/pki/kubelet-server-current.pem")
    checks.wait_for("the kubelet serving kucero's certificate", lambda: (
        checks.served(10250, host=node.node_ip()) == checks.on_disk(current)), 60)  # fmt: skip
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "e2e-busybox", "namespace": "default"},
        "spec": {
            "nodeName": name, "automountServiceAccountToken": False,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "busybox", "image": images.TEST_POD_IMAGE, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "echo hello-from-e2e; exec sleep 3600"],
            }],
        },
    }  # fmt: skip
    subprocess.run(
        [str(bin_dir / "kubectl"), f"--kubeconfig={node.ADMIN_CONF}", "apply", "-f", "-"],
        input=json.dumps(pod), check=True, capture_output=True, text=True,
    )  # fmt: skip
    checks.wait_for("the busybox pod Running", lambda: checks.kubectl_json(
        bin_dir, "get", "pod", "e2e-busybox")["status"].get("phase") == "Running", 120)  # fmt: skip
    logs = node.kubectl(bin_dir, "logs", "e2e-busybox")
    assert "hello-from-e2e" in logs
    out = node.kubectl(bin_dir, "exec", "e2e-busybox", "--", "/bin/sh", "-c", "echo exec-$((6*7))")
    assert out.strip() == "exec-42"


def test_the_first_pass_restarted_the_kubelet_through_the_configured_command(
    bin_dir: Path, cluster: dict[str, Any], rotation: dict[str, Any]
) -> None:
    starts = (node.STATE / "kubelet-starts").read_text().split("\n")
    restarts = [float(line.split()[0]) for line in starts if line.strip()][1:]
    assert any(t > rotation["deployed"] for t in restarts), (
        f"no kubelet start after kucero was deployed: {starts}"
    )
    assert node.node_ready(bin_dir)


@pytest.mark.usefixtures("edits_policy")
def test_a_policy_edit_reaches_the_node(
    bin_dir: Path, cluster: dict[str, Any], rotation: dict[str, Any], tmp_path: Path
) -> None:
    before_rev = deploy.status(bin_dir)["revision"]
    before = checks.check_expiration(bin_dir)
    old_conf = Path("/etc/kubernetes/scheduler.conf").read_bytes()
    # renew scheduler.conf only
    edited = policy_with(["scheduler.conf"], 8800)
    deploy.apply_policy(bin_dir, cluster, edited, tmp_path)
    st = checks.wait_for(
        "Converged with the edited policy's revision",
        lambda: deploy.converged_to_desired(bin_dir, not_revision=before_rev), CONVERGE_TIMEOUT, poll=2,
    )  # fmt: skip
    assert st["revision"] != before_rev
    assert Path("/etc/kubernetes/scheduler.conf").read_bytes() != old_conf
    after = checks.check_expiration(bin_dir)
    assert after["apiserver"] == before["apiserver"], "only scheduler.conf was to be renewed"


@pytest.mark.usefixtures("edits_policy")
def test_kucero_killed_while_a_manifest_is_out_the_next_process_puts_it_back_and_finishes(
    bin_dir: Path, cluster: dict[str, Any], rotation: dict[str, Any], tmp_path: Path
) -> None:
    before_rev = deploy.status(bin_dir)["revision"]
    parked = Path("/etc/kubernetes/tmp/kucero-manifests/kube-scheduler.yaml")
    edited = policy_with(["scheduler.conf"], 8840)
    pids = checks.kucero_pids()
    assert pids, "no kucero process found on the node"
    deploy.apply_policy(bin_dir, cluster, edited, tmp_path)
    # kube-scheduler stops answering within half a second of its manifest leaving, and the
    # manifest goes back then: kill as soon as it is seen out
    checks.wait_for("kube-scheduler's manifest parked", parked.exists, 300, poll=0.005)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert parked.exists(), "the manifest was already back when kucero was killed"
    st = checks.wait_for(
        "Converged again after the SIGKILL",
        lambda: deploy.converged_to_desired(bin_dir, not_revision=before_rev), CONVERGE_TIMEOUT, poll=2,
    )  # fmt: skip
    assert Path("/etc/kubernetes/manifests/kube-scheduler.yaml").exists()
    assert not parked.exists()
    assert monitor.healthy(monitor.endpoints(node.node_ip())["kube-scheduler"])
    assert st["phase"] == "Converged"


@pytest.mark.usefixtures("edits_policy")
def test_kucero_pod_force_deleted_while_a_manifest_is_out_the_next_pod_finishes(
    bin_dir: Path, cluster: dict[str, Any], rotation: dict[str, Any], tmp_path: Path
) -> None:
    before_rev = deploy.status(bin_dir)["revision"]
    parked = Path("/etc/kubernetes/tmp/kucero-manifests/kube-controller-manager.yaml")
    (old_pod,) = kucero_pods(bin_dir)
    edited = policy_with(["controller-manager.conf"], 8880)
    deploy.apply_policy(bin_dir, cluster, edited, tmp_path)
    checks.wait_for("kube-controller-manager's manifest parked", parked.exists, 300, poll=0.05)
    node.kubectl(bin_dir, "-n", deploy.NAMESPACE, "delete", "pod", old_pod, "--force",
                 "--grace-period=0")  # fmt: skip
    # the DaemonSet's controller is kube-controller-manager's: the replacement comes only
    # once the old pod (SIGTERM from the kubelet) has put the manifest back
    st = checks.wait_for(
        "Converged by the next pod",
        lambda: deploy.converged_to_desired(bin_dir, not_revision=before_rev), CONVERGE_TIMEOUT, poll=2,
    )  # fmt: skip
    assert old_pod not in kucero_pods(bin_dir)
    assert Path("/etc/kubernetes/manifests/kube-controller-manager.yaml").exists()
    assert not parked.exists()
    assert st["phase"] == "Converged"


def kucero_pods(bin_dir: Path) -> list[str]:
    pods = checks.kubectl_json(
        bin_dir, "-n", deploy.NAMESPACE, "get", "pods",
        "-l", "app.kubernetes.io/component=control-plane,app.kubernetes.io/name=kucero",
    )["items"]  # fmt: skip
    return [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]


@pytest.mark.usefixtures("edits_policy")
def test_a_component_that_does_not_come_back_is_rolled_back_to_its_old_certificate(
    bin_dir: Path, cluster: dict[str, Any], rotation: dict[str, Any], tmp_path: Path
) -> None:
    """kube-apiserver's image is removed from containerd, so after kucero renews
    ``apiserver`` and moves the manifest out and back, the kubelet cannot start it
    (ErrImageNeverPull). Once kucero has begun the rollback (its journal says so) the image
    is imported again: the rolled-back kube-apiserver starts and serves the old certificate."""
    old = checks.served(6443)
    assert old == checks.on_disk(checks.PKI / "apiserver.crt")
    journal = Path("/etc/kubernetes/tmp/kucero-restart.json")
    (image,) = [n for n in node.kubeadm.image_names(bin_dir) if "/kube-apiserver:" in n]
    (archive,) = (bin_dir / "e2e").glob("kube-apiserver_*.oci.tar")
    subprocess.run(["ctr", "-n", "k8s.io", "images", "rm", image], check=True, capture_output=True)
    try:
        edited = policy_with(["apiserver"], 8920, healthTimeout="30s")
        deploy.apply_policy(bin_dir, cluster, edited, tmp_path)
        checks.wait_for(
            "kucero rolling kube-apiserver back",
            lambda: journal.exists() and json.loads(journal.read_text()).get("phase") == "rollback",
            300, poll=0.1,
        )  # fmt: skip
    finally:
        node.import_image(archive)
    st = checks.wait_for(
        "status Failed with the rollback", lambda: (s := deploy.status(bin_dir)).get("phase") == "Failed" and s,
        300, poll=0.5,
    )  # fmt: skip
    assert "rolled back" in st["message"], st
    assert checks.served(6443) == old, "the old certificate is served again"
    assert checks.on_disk(checks.PKI / "apiserver.crt") == old
