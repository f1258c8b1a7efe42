"""CA renewal on a real kubeadm node, proven past the old CA certificate's end.

The node's CAs are made with a short validity (kubeadm v1beta4 ``caCertificateValidityPeriod``)
and its leaves shorter still. kucero is deployed with the shipped policy (``ca.mode: report``):
its first pass renews the leaves, but only up to their CA's end, and reports the CAs. Then the
policy is edited to ``ca.mode: renew`` as a user would in Git; the leader renews the three CAs
(same key and subject), publishes them in ``kucero-ca``, and the node's pass installs them in
every trust anchor, renews the leaves again past the old end and restarts, verified, what
loads them. While waiting for the old end, the components are asked which CA files they reload
by themselves (``reload``). Then, **past the old CA certificates' end**, every check a user
would make: kubectl, the kubelet (Ready, its client certificate rotated, logs and exec), every
control-plane component serving and trusting its clients, a join's discovery and TLS
bootstrap, the published and cluster copies, kucero itself, and the health timeline.

Timings and the reload table go to ``bench/results/e2e-carenewal.json``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.e2e import checks, deploy, images, join, kubeadm, monitor, node, reload, trust

pytestmark = pytest.mark.e2e

# The CAs end this long after `kubeadm init`; the leaves (kubeadm's, and the kubelet's first
# client certificate) sooner. Measured: deployment, first pass, edit, renewal and the reload
# probes done about 2.6 min after `kubeadm init`; 6 min leave room for a machine twice as
# slow, and every minute more is a minute the run waits.
CA_VALIDITY = "6m0s"
LEAF_VALIDITY = "4m0s"
CONFIG = kubeadm.Config(certificate_validity=LEAF_VALIDITY, ca_validity=CA_VALIDITY)
CONVERGE_TIMEOUT = 300.0
PAST_END_SECONDS = 20.0  # the checks start this long after the old CA certificates' end
MIN_MARGIN_SECONDS = 30.0  # the renewal must be done at least this long before that end
RESULTS = node.REPO / "bench" / "results" / "e2e-carenewal.json"
YEAR = dt.timedelta(days=360)
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
results: dict[str, Any] = {}


def _policy(**ca: Any) -> str:
    doc = yaml.safe_load(deploy.base_policy())
    doc["spec"]["ca"].update(ca)
    return yaml.safe_dump(doc, sort_keys=False)


def _rfc3339(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def ca_cluster(bring_up: Any) -> Iterator[dict[str, Any]]:
    with bring_up(CONFIG) as state:
        yield state


@pytest.fixture(scope="module")
def deployed(bin_dir: Path, ca_cluster: dict[str, Any], tmp_path_factory: Any) -> dict[str, Any]:
    """kucero deployed with the shipped policy, its first pass done."""
    _image, archive = (bin_dir / "e2e" / "kucero.image").read_text().split()
    node.import_image(Path(archive))
    old = trust.ca_files()
    t0 = time.monotonic()
    deploy.apply_policy(bin_dir, ca_cluster, deploy.base_policy(), tmp_path_factory.mktemp("o"))
    st = checks.wait_for(
        "Converged with the desired revision", lambda: deploy.converged_to_desired(bin_dir),
        CONVERGE_TIMEOUT, poll=1,
    )  # fmt: skip
    end = min(c.not_valid_after_utc for c in old.values())
    client = trust.kubelet_client()
    results.update(
        oldCANotAfter=_rfc3339(end),
        deployToConvergedSeconds=round(time.monotonic() - t0, 1),
        kubeletClientAtDeploy={"notAfter": _rfc3339(client.not_valid_after_utc),
                               "clampedToOldCAEnd": client.not_valid_after_utc == end},
    )  # fmt: skip
    return {"old": old, "end": end, "status": st, "admin": node.ADMIN_CONF.read_bytes()}


def _renewed_everywhere(bin_dir: Path, before: str, renewed: dict[str, x509.Certificate]) -> Any:
    st = deploy.converged_to_desired(bin_dir, not_revision=before)
    if not st:
        return None
    cas = st.get("ca", {})
    want = {n: {"phase": "Current", "notAfter": _rfc3339(c.not_valid_after_utc)}
            for n, c in renewed.items()}  # fmt: skip
    return st if cas == want else None


@pytest.fixture(scope="module")
def renewal(
    bin_dir: Path, ca_cluster: dict[str, Any], deployed: dict[str, Any], tmp_path_factory: Any
) -> Iterator[dict[str, Any]]:
    """The edit to ``ca.mode: renew``, the renewal watched to its end, the reload probes, and
    the wait past the old CA certificates' end; health is polled from the edit until the
    module's last test."""
    end: dt.datetime = deployed["end"]
    tmp = tmp_path_factory.mktemp("renewal")
    before = checks.containers(bin_dir)
    revision = deploy.status(bin_dir)["revision"]
    watch = monitor.Monitor(node.node_ip(), with_kubelet=True).__enter__()
    try:
        t0, t0_wall = time.monotonic(), time.time()
        deploy.apply_policy(bin_dir, ca_cluster, _policy(mode="renew"), tmp / "overlay")
        data = checks.wait_for(
            "kucero-ca published", lambda: (d := trust.published(bin_dir)) and len(
                [k for k in d if k.endswith(".crt")]) == 3 and d, CONVERGE_TIMEOUT, poll=0.5,
        )  # fmt: skip
        published_after = time.monotonic() - t0
        renewed = {n: checks.cert(data[f"{n}.crt"].encode()) for n in trust.CA_FILES}
        st = checks.wait_for(
            "Converged with every CA Current",
            lambda: _renewed_everywhere(bin_dir, revision, renewed), CONVERGE_TIMEOUT, poll=0.5,
        )  # fmt: skip
        done_after = time.monotonic() - t0
        results.update(caRenewalSeconds=round(done_after, 1), publishedSeconds=round(
            published_after, 1))  # fmt: skip
        checks.wait_for("every component healthy", lambda: all(
            monitor.healthy(u) for u in watch.endpoints.values()), 120)  # fmt: skip
        after = checks.containers(bin_dir)
        old_ids = {c["id"] for c in before}
        restarted = [c for c in after if c["id"] not in old_ids and c["name"] in COMPONENTS]
        results["restartedContainers"] = [
            c["name"] for c in sorted(restarted, key=lambda c: c["created"])
        ]
        lines = (node.STATE / "kubelet-starts").read_text().splitlines()
        kubelet_starts = [float(line.split()[0]) for line in lines if line.strip()]
        root = checks.wait_for(
            "kube-root-ca.crt of kube-system holding the renewed CA",
            lambda: (r := trust.root_ca(bin_dir, "kube-system")) and r[0] == renewed["ca"] and r,
            120,
        )  # fmt: skip
        checks.wait_for(
            "kucero's projected ca.crt holding the renewed CA",
            lambda: (pids := checks.kucero_pids()) and all(
                trust.pod_ca(p) == renewed["ca"] for p in pids), 180,
        )  # fmt: skip
        pod_ca_after = round(time.monotonic() - t0, 1)
        handed_out = tmp / "handed-out.conf"
        handed_out.write_bytes(
            trust.kubeconfig_trusting(node.ADMIN_CONF.read_bytes(), _pem(deployed["old"]["ca"]))
        )
        whoami_before_end = _whoami(bin_dir, handed_out)
        probes = reload.ask(node.node_ip(), tmp / "probes")
        results.update(
            kuceroPodTrustsRenewedCASeconds=pod_ca_after,
            reloadProbes=probes,
            marginBeforeOldEndSeconds=round((end - _now()).total_seconds()),
        )
        margin = (end - _now()).total_seconds()
        assert margin > MIN_MARGIN_SECONDS, (
            f"the renewal and the probes ended {margin:.0f}s before the old CA's end: too late "
            f"to prove anything (a machine this slow needs a longer CA_VALIDITY)"
        )
        time.sleep(margin + PAST_END_SECONDS)
        yield {
            **deployed, "renewed": renewed, "status": st, "watch": watch, "t0": t0, "t0Wall": t0_wall,
            "doneAfter": done_after, "restarted": restarted, "kubeletStarts": kubelet_starts,
            "rootCA": root, "handedOut": handed_out, "whoamiBeforeEnd": whoami_before_end,
            "probes": probes, "tmp": tmp, "revision": st["revision"],
        }  # fmt: skip
    finally:
        watch.__exit__()
        outages = watch.outages()
        results.update(
            downtimeSeconds={c: round(sum(b - a for a, b in v), 2) for c, v in outages.items()},
            outages={c: [(round(a, 2), round(b, 2)) for a, b in v] for c, v in outages.items()},
            timeline=watch.timeline(),
        )
        write_results()


def write_results() -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.write_text(json.dumps({"measured": when, **results}, indent=1, default=str) + "\n")


def _whoami(bin_dir: Path, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", "auth", "whoami", "-o", "json"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


KUBECONFIGS = ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf",
               "kubelet.conf")  # fmt: skip
# What the reload probes must find (docs/deploy.md, "CA renewal"): True where the component
# loads a new content of the file by itself.
RELOADS = {
    ("kube-apiserver", "--client-ca-file"): True,
    ("kube-apiserver", "--requestheader-client-ca-file"): True,
    ("kube-controller-manager", "--client-ca-file"): True,
    ("kube-scheduler", "client CA of extension-apiserver-authentication"): True,
    ("kubelet", "authentication.x509.clientCAFile"): True,
    ("etcd", "--trusted-ca-file"): False,
    ("etcd", "--peer-trusted-ca-file"): False,
}
LEAVES = {"ca": ("apiserver.crt", "apiserver-kubelet-client.crt"),
          "front-proxy-ca": ("front-proxy-client.crt",),
          "etcd-ca": ("etcd/server.crt", "etcd/peer.crt", "apiserver-etcd-client.crt")}  # fmt: skip


def _kubeconfig_ca(name: str) -> x509.Certificate:
    doc = yaml.safe_load((Path("/etc/kubernetes") / name).read_text())
    return checks.cert(
        base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])
    )


def test_report_mode_reports_the_cas_and_renews_the_leaves_only_up_to_their_end(
    bin_dir: Path, deployed: dict[str, Any]
) -> None:
    """The shipped policy: the CAs are Due in the status and nothing of them is written; the
    leaves (6 minutes from kubeadm) are renewed, but no further than their CA's end."""
    old: dict[str, x509.Certificate] = deployed["old"]
    assert trust.ca_files() == old, "report mode wrote a CA file"
    assert trust.published(bin_dir) == {}, "report mode published a CA"
    want = {
        n: {"phase": "Due", "notAfter": _rfc3339(c.not_valid_after_utc)} for n, c in old.items()
    }
    assert deployed["status"]["ca"] == want, deployed["status"]
    for ca, files in LEAVES.items():
        for name in files:
            leaf = checks.cert((checks.PKI / name).read_bytes())
            assert leaf.not_valid_after_utc == old[ca].not_valid_after_utc, (name, leaf)


def test_kubectl_works_with_the_renewed_admin_conf_and_a_handed_out_one_stops_at_the_old_end(
    bin_dir: Path, renewal: dict[str, Any]
) -> None:
    assert _now() > renewal["end"]
    mine = _whoami(bin_dir, node.ADMIN_CONF)
    assert mine.returncode == 0, mine.stderr
    assert json.loads(mine.stdout)["status"]["userInfo"]["username"] == "kubernetes-admin"
    assert _kubeconfig_ca("admin.conf") == renewal["renewed"]["ca"]
    assert node.kubectl(bin_dir, "get", "--raw", "/readyz").strip() == "ok"
    # the same credentials with the old CA certificate embedded: fine before its end...
    assert renewal["whoamiBeforeEnd"].returncode == 0, renewal["whoamiBeforeEnd"].stderr
    # ...and refused by kubectl itself after it, as docs/deploy.md tells users
    handed_out = _whoami(bin_dir, renewal["handedOut"])
    assert handed_out.returncode != 0 and "expired" in handed_out.stderr, handed_out.stderr


def test_the_kubelet_works_past_the_old_end_with_a_rotated_client_certificate(
    bin_dir: Path, renewal: dict[str, Any]
) -> None:
    ca: x509.Certificate = renewal["renewed"]["ca"]
    end: dt.datetime = renewal["end"]
    assert node.node_ready(bin_dir)
    assert trust.lease_renewed(bin_dir, "kube-node-lease", node.node_name()) > end
    assert _kubeconfig_ca("kubelet.conf") == ca
    # kube-controller-manager signs the kubelet's client certificates no further than its CA's
    # end: the one the kubelet had before the renewal ended with the old CA; the kubelet must
    # have rotated it, and the new one comes from the renewed CA's full validity
    client = trust.kubelet_client()
    results["kubeletClientPastEnd"] = {"notAfter": _rfc3339(client.not_valid_after_utc)}
    client.verify_directly_issued_by(ca)
    assert client.not_valid_after_utc > _now() + YEAR, client
    serving = trust.kubelet_serving()
    results["kubeletServingPastEnd"] = {"notAfter": _rfc3339(serving.not_valid_after_utc)}
    assert serving.not_valid_after_utc > end, serving
    assert trust.verify_error(node.node_ip(), 10250, trust.CA_FILES["ca"]) is None
    _busybox(bin_dir, "e2e-ca-busybox", node_name=node.node_name())
    assert "hello-from-e2e" in node.kubectl(bin_dir, "logs", "e2e-ca-busybox")
    out = node.kubectl(bin_dir, "exec", "e2e-ca-busybox", "--", "/bin/sh", "-c", "echo $((6*7))")
    assert out.strip() == "42"


def _busybox(bin_dir: Path, name: str, node_name: str | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "automountServiceAccountToken": False, "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "busybox", "image": images.TEST_POD_IMAGE, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "echo hello-from-e2e; exec sleep 3600"],
            }],
        },
    }  # fmt: skip
    if node_name:
        pod["spec"]["nodeName"] = node_name
    subprocess.run(
        [str(bin_dir / "kubectl"), f"--kubeconfig={node.ADMIN_CONF}", "apply", "-f", "-"],
        input=json.dumps(pod), check=True, capture_output=True, text=True, timeout=30,
    )  # fmt: skip

    def running() -> dict[str, Any] | None:
        found = checks.kubectl_json(bin_dir, "get", "pod", name)
        return dict(found) if found["status"].get("phase") == "Running" else None

    return dict(checks.wait_for(f"pod {name} Running", running, 120))


def test_every_control_plane_component_serves_and_trusts_its_clients_past_the_old_end(
    bin_dir: Path, renewal: dict[str, Any]
) -> None:
    renewed: dict[str, x509.Certificate] = renewal["renewed"]
    end: dt.datetime = renewal["end"]
    ip = node.node_ip()
    etcd_ca = trust.CA_FILES["etcd-ca"]
    assert trust.verify_error("127.0.0.1", 6443, trust.CA_FILES["ca"]) is None
    health = (
        checks.PKI / "etcd/healthcheck-client.crt",
        checks.PKI / "etcd/healthcheck-client.key",
    )
    assert trust.verify_error(ip, 2379, etcd_ca, health) is None
    peer = (checks.PKI / "etcd/peer.crt", checks.PKI / "etcd/peer.key")
    assert trust.verify_error(ip, 2380, etcd_ca, peer) is None
    # kube-apiserver -> etcd with its --etcd-cafile and client certificate
    assert node.kubectl(bin_dir, "get", "--raw", "/readyz/etcd").strip() == "ok"
    # kube-controller-manager and kube-scheduler still hold their leader leases: their
    # kubeconfigs trust the API server and it trusts their client certificates
    for name in ("kube-controller-manager", "kube-scheduler"):
        assert trust.lease_renewed(bin_dir, "kube-system", name) > end, name
        assert _kubeconfig_ca(f"{name.removeprefix('kube-')}.conf") == renewed["ca"]
    scheduled = _busybox(bin_dir, "e2e-ca-scheduled")  # no nodeName: the scheduler places it
    assert scheduled["spec"]["nodeName"] == node.node_name()
    node.kubectl(bin_dir, "create", "namespace", "e2e-ca-fresh")
    fresh = checks.wait_for(
        "kube-root-ca.crt in a namespace made past the old end",
        lambda: trust.root_ca(bin_dir, "e2e-ca-fresh"), 60,
    )  # fmt: skip
    assert fresh[0] == renewed["ca"]
    ends = trust.kubeadm_ca_ends(bin_dir)
    for name, cert in renewed.items():  # kubeadm names them as kucero does
        assert abs(ends[name] - cert.not_valid_after_utc) < dt.timedelta(minutes=1), ends
    days = checks.check_expiration(bin_dir)
    assert min(days.values()) >= 360, days
    assert all(monitor.healthy(u) for u in monitor.endpoints(ip).values())


def test_a_join_past_the_old_end_discovers_the_renewed_ca_and_bootstraps_a_kubelet(
    bin_dir: Path, renewal: dict[str, Any]
) -> None:
    renewed: x509.Certificate = renewal["renewed"]["ca"]
    command = join.join_command(bin_dir)
    # same key: the pin in join commands handed out before the renewal still holds
    assert command["caCertHash"] == join.ca_cert_hash(renewed)
    assert command["caCertHash"] == join.ca_cert_hash(renewal["old"]["ca"])
    name = "kucero-e2e-joiner"
    try:
        found = join.discover(bin_dir, command, name)
        log = found["log"].decode()
        assert "TLS certificate validates against pinned roots" in log, log[-3000:]
        assert checks.cert(found["ca.crt"]) == renewed
        assert checks.cert(join.cluster_ca(found["bootstrap-kubelet.conf"])) == renewed
        csr, crt, key = join.bootstrap_client(
            bin_dir, found["bootstrap-kubelet.conf"], name, renewal["tmp"] / "join"
        )
    finally:
        join.delete_token(bin_dir, command["token"])
    reasons = {c["type"]: c.get("reason") for c in csr["status"]["conditions"]}  # type: ignore[index]
    assert reasons.get("Approved") == "AutoApproved", reasons
    issued = checks.cert(crt.read_bytes())
    issued.verify_directly_issued_by(renewed)
    assert issued.not_valid_after_utc > _now() + YEAR, "signed no further than the old CA's end"
    conf = renewal["tmp"] / "join" / "node.conf"
    doc = yaml.safe_load(found["bootstrap-kubelet.conf"])
    doc["users"][0]["user"] = {"client-certificate": str(crt), "client-key": str(key)}
    conf.write_text(yaml.safe_dump(doc))
    who = _whoami(bin_dir, conf)
    assert who.returncode == 0, who.stderr
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == f"system:node:{name}"


def test_the_published_cas_the_status_and_every_copy_hold_the_renewed_cas(
    bin_dir: Path, renewal: dict[str, Any]
) -> None:
    renewed: dict[str, x509.Certificate] = renewal["renewed"]
    old: dict[str, x509.Certificate] = renewal["old"]
    assert trust.ca_files() == renewed
    data = trust.published(bin_dir)
    for name, cert in renewed.items():
        assert data[f"{name}.sha256"] == cert.fingerprint(hashes.SHA256()).hex()
        assert data[f"{name}.previousNotAfter"] == _rfc3339(old[name].not_valid_after_utc)
        assert cert.subject == old[name].subject
        assert cert.public_key() == old[name].public_key()
    st = deploy.status(bin_dir)
    assert st["phase"] == "Converged", st
    assert st["ca"] == {
        n: {"phase": "Current", "notAfter": _rfc3339(c.not_valid_after_utc)}
        for n, c in renewed.items()
    }
    for kubeconfig in KUBECONFIGS:
        assert _kubeconfig_ca(kubeconfig) == renewed["ca"], kubeconfig
    assert trust.cluster_info_ca(bin_dir) == renewed["ca"]
    for namespace in ("default", "kube-system"):
        found = trust.root_ca(bin_dir, namespace)
        assert found and found[0] == renewed["ca"], namespace
    # kube-controller-manager reads --root-ca-file at start: the copies changed after its
    # restart, not when the file was rewritten
    (kcm,) = [c for c in renewal["restarted"] if c["name"] == "kube-controller-manager"]
    written = renewal["rootCA"][1].timestamp()
    results["kubeRootCAWrittenAfterControllerManagerStartSeconds"] = round(
        written - kcm["created"], 1
    )
    assert written >= kcm["created"] - 1.0, (written, kcm)


def test_kucero_itself_reaches_the_api_server_past_the_old_end(
    bin_dir: Path, ca_cluster: dict[str, Any], renewal: dict[str, Any]
) -> None:
    """kucero's pods trust the API server with their projected ca.crt: read again when the
    kubelet swaps in the renewed CA (``light.CABundle``), or they would go deaf now."""
    pids = checks.kucero_pids()
    assert pids and all(trust.pod_ca(p) == renewal["renewed"]["ca"] for p in pids)
    # what such a pod held before: OpenSSL (Python's ssl, as kucero) refuses it now
    old_ca = renewal["tmp"] / "old-ca.crt"
    old_ca.write_bytes(_pem(renewal["old"]["ca"]))
    refused = trust.verify_error("127.0.0.1", 6443, old_ca)
    assert refused and "expired" in refused, refused
    assert trust.lease_renewed(bin_dir, "kube-system", "kucero-leader-election") > renewal["end"]
    edited = yaml.safe_load(_policy(mode="renew"))
    edited["spec"]["checkInterval"] = "50m"
    deploy.apply_policy(
        bin_dir, ca_cluster, yaml.safe_dump(edited, sort_keys=False), renewal["tmp"] / "again"
    )
    st = checks.wait_for(
        "Converged with a policy edited past the old end",
        lambda: deploy.converged_to_desired(bin_dir, not_revision=renewal["revision"]), 120,
    )  # fmt: skip
    assert st["phase"] == "Converged"


def test_the_reload_table_is_what_the_node_showed(renewal: dict[str, Any]) -> None:
    seen = {(p["component"], p["anchor"]): p["reloadsByItself"] for p in renewal["probes"]}
    print("\n".join(f"{c} {a}: {'reloads' if r else 'needs a restart'}"
                    for (c, a), r in seen.items()))  # fmt: skip
    assert seen == RELOADS


def test_no_component_was_down_longer_than_a_restart_and_none_at_the_old_end(
    renewal: dict[str, Any],
) -> None:
    watch: monitor.Monitor = renewal["watch"]
    watch.__exit__()
    print("\n".join(["timeline of the CA renewal:", *watch.timeline()]))
    assert watch.overlaps(depends={"kube-apiserver": "etcd"}, slack=2 * monitor.POLL_SECONDS) == []
    outages = watch.outages()
    started = {c["name"] for c in renewal["restarted"]}
    assert set(COMPONENTS) <= started, f"every component restarted: {renewal['restarted']}"
    assert any(t > renewal["t0Wall"] for t in renewal["kubeletStarts"]), "the kubelet restarted"
    for component, spans in outages.items():
        limit = 12.0 if component in ("kube-apiserver", "etcd") else 15.0
        assert all(b - a <= limit for a, b in spans), (component, spans)
    done = renewal["t0"] - watch.start + renewal["doneAfter"]
    late = {c: [s for s in v if s[0] > done + 5.0] for c, v in outages.items()}
    assert not any(late.values()), f"down after the renewal was done (at {done:.1f}s): {late}"
