"""Issue 6, section 2: ``kucero node --once`` on real trees never loses data.

Each test reproduces one case the review found (pruning and recovery through links, the
confinement race, writes through shared or foreign files, what must not be renewed, SIGTERM
during a restart, retention of failed passes, the kubelet restart of the wrong machine) and
asserts on the tree what an operator would check by hand.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from reconciler import cli, config, fabricate, flags
from reconciler.decide import pki
from reconciler.model import paths
from reconciler.node import host, hostcommands, observe

DAY = dt.timedelta(days=1)
REAL_NOW = dt.datetime.now(dt.UTC)
PKI = "etc/kubernetes/pki"
TMP = "etc/kubernetes/tmp"


def policy(
    tmp_path: Path, spec: str = "{kubeadm: {restart: none}, kubelet: {restart: none}}"
) -> Path:
    path = tmp_path / f"policy-{abs(hash(spec))}.yaml"
    path.write_text(f"apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\nspec: {spec}\n")
    return path


def node_once(
    root: Path, policy_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    code = cli.main(
        ["node", "--once", "--host-root", str(root), "--policy", str(policy_path), *extra]
    )
    out, err = capsys.readouterr()
    return code, out, err


def command(root: Path, policy_path: Path, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "reconciler", "node", "--once"),
        *("--host-root", str(root), "--policy", str(policy_path)),
        *("--kubelet-restart-command", "true", *extra),
    ]


def files(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (links not followed), by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def pki_files(root: Path) -> dict[str, bytes]:
    return files(root / PKI)


def confs(root: Path) -> dict[str, bytes]:
    """The kubeadm kubeconfigs and the PKI, not the kubelet's files (fixed by the same pass)."""
    found = {f"pki/{k}": v for k, v in pki_files(root).items()}
    for name in ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf"):
        found[name] = (root / "etc/kubernetes" / name).read_bytes()
    return found


def backups(root: Path) -> list[Path]:
    return sorted(p for p in (root / TMP).glob("kucero-backup-*") if not p.is_symlink())


# --- 1. pruning and recovery never follow links ------------------------------------------


@pytest.mark.parametrize("target", ["../pki", "../../.."], ids=["to-pki", "to-host-root"])
def test_pruning_never_deletes_what_a_backup_named_link_points_to(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    (root / TMP).mkdir(exist_ok=True)
    link = root / TMP / "kucero-backup-20250101T000000Z"
    link.symlink_to(target)
    os.utime(root / TMP / target, (1, 1), follow_symlinks=False)  # the oldest "backup"
    before = pki_files(root)
    code, out, err = node_once(
        root,
        policy(
            tmp_path, "{kubeadm: {restart: none, backup: {retain: 1}}, kubelet: {restart: none}}"
        ),
        capsys,
    )
    assert code == 0, out + err
    assert link.is_symlink() and (root / "etc/kubernetes/admin.conf").exists()
    after = pki_files(root)
    assert set(after) == set(before)  # nothing deleted; only apiserver's pair was renewed
    assert {k for k in before if after[k] != before[k]} == {"apiserver.crt", "apiserver.key"}
    assert len(backups(root)) == 1


def test_recovery_never_empties_a_planted_new_link_without_a_journal(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    planted = root / TMP / "kucero-backup-20250101T000000Z"
    planted.mkdir(parents=True)
    (planted / "new").symlink_to("/etc/kubernetes/pki")
    before = pki_files(root)
    code, out, err = node_once(root, policy(tmp_path), capsys)
    assert code == 0, out + err
    assert pki_files(root) == before and (planted / "new").is_symlink()


def test_recovery_never_follows_new_in_a_backup_kucero_made(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    the_policy = policy(tmp_path)
    assert node_once(root, the_policy, capsys)[0] == 0
    (made,) = backups(root)
    assert (made / paths.BACKUP_MARKER).is_file()
    (made / "new").symlink_to("/etc/kubernetes/pki")  # as if a crash had left staged copies
    before = pki_files(root)
    code, out, err = node_once(root, the_policy, capsys)
    assert code == 0, out + err
    assert pki_files(root) == before and (made / "new").is_symlink()


# --- 2. the confinement race --------------------------------------------------------------


def test_swapping_tmp_for_a_link_outside_while_passes_run_writes_nothing_outside(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(
        now=REAL_NOW, key_type="ecdsa", expiries={"admin.conf": 5 * DAY, "apiserver": 5 * DAY}
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    due = {
        rel: data
        for rel, data in files(root).items()
        if rel.startswith(("etc/kubernetes/pki/apiserver.", "etc/kubernetes/admin.conf"))
    }
    tmp = root / TMP
    tmp.mkdir(exist_ok=True)
    done = threading.Event()
    swaps = 0

    real, link = root / "etc/kubernetes/tmp.real", root / "etc/kubernetes/tmp.link"
    extra = iter(range(1_000_000))

    def repair() -> None:
        """Back to one real tmp: a pass may have made a new tmp while it was swapped away."""
        if tmp.is_symlink():
            tmp.unlink()
        if link.is_symlink():
            link.unlink()
        if real.exists():
            if tmp.exists():
                os.rename(tmp, root / f"etc/kubernetes/tmp.made-by-a-pass-{next(extra)}")
            os.rename(real, tmp)

    def swap() -> None:
        nonlocal swaps
        while not done.is_set():
            try:
                link.symlink_to(outside)
                os.rename(tmp, real)
                os.rename(link, tmp)
                time.sleep(0)
                os.rename(tmp, link)
                os.rename(real, tmp)
                link.unlink()
            except OSError:
                repair()
            swaps += 1

    swapper = threading.Thread(target=swap)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the swapper with the pass as often as possible
    swapper.start()
    try:
        deadline = time.monotonic() + 6
        passes = 0
        crashes: list[OSError] = []
        while time.monotonic() < deadline and passes < 40:
            for rel, data in due.items():  # due again for every pass
                (root / rel).write_bytes(data)
            try:
                node_once(root, policy(tmp_path), capsys)
            except OSError as e:  # the check-then-use resolution of old raced into tracebacks
                crashes.append(e)
            passes += 1
    finally:
        done.set()
        swapper.join()
        sys.setswitchinterval(interval)
    assert swaps > 100 and passes > 3
    assert sorted(p.name for p in outside.rglob("*")) == []
    assert crashes == []


def test_a_fifo_in_place_of_a_certificate_is_an_error_not_a_hang(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    (root / PKI / "apiserver.crt").unlink()
    os.mkfifo(root / PKI / "apiserver.crt")
    done = subprocess.run(
        command(root, policy(tmp_path)), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "/etc/kubernetes/pki/apiserver.crt: is a FIFO, not a regular file" in done.stdout


# --- 3. writes through shared or foreign files --------------------------------------------


def _ca(root: Path) -> tuple[x509.Certificate, pki.PrivateKey]:
    return (
        pki.load_cert((root / PKI / "ca.crt").read_bytes()),
        pki.load_key((root / PKI / "ca.key").read_bytes()),
    )


def test_a_key_shared_by_two_certificates_through_a_link_is_refused(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(
        now=REAL_NOW,
        key_type="ecdsa",
        expiries={"apiserver": 5 * DAY, "apiserver-kubelet-client": 5 * DAY},
    )
    ca_cert, ca_key = _ca(root)
    shared = pki.load_key((root / PKI / "apiserver.key").read_bytes())
    client = pki.load_cert((root / PKI / "apiserver-kubelet-client.crt").read_bytes())
    reissued = pki.renew(client, ca_cert, ca_key, shared, 7, REAL_NOW - 360 * DAY, 365 * DAY)
    (root / PKI / "apiserver-kubelet-client.crt").write_bytes(pki.cert_pem(reissued))
    (root / PKI / "apiserver-kubelet-client.key").unlink()
    (root / PKI / "apiserver-kubelet-client.key").symlink_to("apiserver.key")
    before = pki_files(root)
    code, out, _ = node_once(root, policy(tmp_path), capsys)
    assert code == 1
    assert out.count("SharedFile") == 2, out
    assert pki_files(root) == before
    seen = observe.observe(host.Host(root))
    assert (
        seen.leaves["apiserver"].key_matches and seen.leaves["apiserver-kubelet-client"].key_matches
    )


def test_a_kubeconfig_whose_client_key_is_the_ca_key_never_overwrites_it(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"admin.conf": 5 * DAY})
    ca_cert, ca_key = _ca(root)
    conf = root / "etc/kubernetes/admin.conf"
    doc = yaml.safe_load(conf.read_text())
    old = pki.load_cert(
        __import__("base64").b64decode(doc["users"][0]["user"]["client-certificate-data"])
    )
    # a client certificate for the CA's own key: "matches" when the kubeconfig points at ca.key
    cert = pki.renew(old, ca_cert, ca_key, ca_key, 9, REAL_NOW - 360 * DAY, 365 * DAY)
    (root / PKI / "admin.crt").write_bytes(pki.cert_pem(cert))
    doc["users"][0]["user"] = {
        "client-certificate": "/etc/kubernetes/pki/admin.crt",
        "client-key": "/etc/kubernetes/pki/ca.key",
    }
    conf.write_text(yaml.safe_dump(doc))
    before = confs(root)
    the_policy = policy(tmp_path)
    for _ in range(2):  # not then, not on any later pass
        _, out, _ = node_once(root, the_policy, capsys)
        assert "admin.conf" in out and "NotKubeadmManaged" in out, out
        assert confs(root) == before  # the CA key above all


def test_two_kubeconfigs_on_one_file_are_refused_not_renewed_twice(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(
        now=REAL_NOW,
        key_type="ecdsa",
        expiries={"admin.conf": 5 * DAY, "super-admin.conf": 5 * DAY},
    )
    (root / "etc/kubernetes/super-admin.conf").unlink()
    (root / "etc/kubernetes/super-admin.conf").symlink_to("admin.conf")
    before = confs(root)
    code, out, _ = node_once(root, policy(tmp_path), capsys)
    assert code == 1 and out.count("SharedFile") == 2, out
    assert confs(root) == before


def test_two_kubeconfigs_referring_to_one_certificate_file_are_not_renewed(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(
        now=REAL_NOW,
        key_type="ecdsa",
        expiries={"admin.conf": 5 * DAY, "super-admin.conf": 5 * DAY},
    )
    ca = _ca(root)
    pair = fabricate.make_leaf(
        ca,
        "kubernetes-admin",
        ("kubeadm:cluster-admins",),
        fabricate.CLIENT,
        (),
        REAL_NOW,
        5 * DAY,
        "ecdsa",
    )
    (root / PKI / "admins.pem").write_bytes(pki.cert_pem(pair[0]) + pki.key_pem(pair[1]))
    for name in ("admin.conf", "super-admin.conf"):
        (root / "etc/kubernetes" / name).write_bytes(
            fabricate.kubeconfig_text(
                ca[0], None, "kubernetes-admin", "10.0.0.11", files="/etc/kubernetes/pki/admins.pem"
            )
        )
    before = confs(root)
    _, out, _ = node_once(root, policy(tmp_path), capsys)
    assert out.count("NotKubeadmManaged") == 2 and "rolled back" not in out, out
    assert confs(root) == before


# --- 4. what must not be renewed -----------------------------------------------------------


def test_a_ca_certificate_at_a_leaf_path_is_a_finding_not_a_renewal(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    ca_cert, ca_key = _ca(root)
    leaf = pki.load_cert((root / PKI / "apiserver.crt").read_bytes())
    key = pki.load_key((root / PKI / "apiserver.key").read_bytes())
    builder = x509.CertificateBuilder(
        issuer_name=ca_cert.subject,
        subject_name=leaf.subject,
        public_key=key.public_key(),  # type: ignore[arg-type]
        serial_number=11,
        not_valid_before=REAL_NOW - DAY,
        not_valid_after=REAL_NOW + 5 * DAY,
        extensions=[],
    ).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    (root / PKI / "apiserver.crt").write_bytes(
        pki.cert_pem(builder.sign(ca_key, pki.signature_hash_for(ca_key)))
    )
    before = pki_files(root)
    code, out, _ = node_once(root, policy(tmp_path), capsys)
    assert code == 1 and "CACertificateAtLeafPath" in out, out
    assert pki_files(root) == before


def test_a_leaf_whose_ca_is_not_valid_yet_is_not_renewed(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    ca_cert, ca_key = _ca(root)
    future = x509.CertificateBuilder(
        issuer_name=ca_cert.subject,
        subject_name=ca_cert.subject,
        public_key=ca_key.public_key(),  # type: ignore[arg-type]
        serial_number=12,
        not_valid_before=REAL_NOW + 2 * DAY,
        not_valid_after=REAL_NOW + 3650 * DAY,
        extensions=list(ca_cert.extensions),
    ).sign(ca_key, pki.signature_hash_for(ca_key))
    (root / PKI / "ca.crt").write_bytes(pki.cert_pem(future))
    before = pki_files(root)
    code, out, _ = node_once(root, policy(tmp_path), capsys)
    assert code == 1 and "CANotYetValid" in out, out
    assert pki_files(root) == before


# --- 5. SIGTERM and SIGINT during a manifest-move restart ---------------------------------


def _restart_tree(make_tree: Any) -> Path:
    """A tree whose scheduler is due, its components on free ports for the kubelet stand-in
    (restarts are verified: something must serve what the manifests name)."""
    from tests.controlplane import kubeadm_node

    root: Path = make_tree(
        now=REAL_NOW,
        key_type="ecdsa",
        expiries={"scheduler.conf": 5 * DAY},
        embedded_kubelet_conf=False,
        kubelet_config_rotation=True,
        ports=tuple(kubeadm_node.free_ports().items()),
    )
    return root


def _wait_for(path: Path, process: subprocess.Popen[str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


MANIFEST = "etc/kubernetes/manifests/kube-scheduler.yaml"
PARKED = f"{TMP}/kucero-manifests/kube-scheduler.yaml"


def test_manifest_move_restart_puts_the_manifest_back(make_tree: Any, tmp_path: Path) -> None:
    from tests.controlplane import kubelet_standin

    root = _restart_tree(make_tree)
    content = (root / MANIFEST).read_bytes()
    # a kubelet that takes half a second to notice, so the parked manifest can be seen
    with kubelet_standin.KubeletStandin(root, stop_delay=0.5) as standin:
        standin.wait_serving(["kube-scheduler"])
        process = subprocess.Popen(
            command(
                root, policy(tmp_path, "{kubeadm: {healthTimeout: 20s}}"), "--manifest-grace", "5"
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        _wait_for(root / PARKED, process)
        assert not (root / MANIFEST).exists()  # really out of the kubelet's directory
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    assert "restart-static-pod   kube-scheduler" in out
    assert (root / MANIFEST).read_bytes() == content and not (root / PARKED).exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_manifest_move_puts_the_manifest_back_and_frees_the_lock(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], signum: signal.Signals
) -> None:
    from tests.controlplane import kubelet_standin

    root = _restart_tree(make_tree)
    the_policy = policy(tmp_path, "{kubeadm: {healthTimeout: 20s}}")
    content = (root / MANIFEST).read_bytes()
    # a kubelet slow to notice: the manifest stays parked until the signal
    with kubelet_standin.KubeletStandin(root, stop_delay=30) as standin:
        standin.wait_serving(["kube-scheduler"])
        process = subprocess.Popen(
            command(root, the_policy, "--manifest-grace", "5"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for(root / PARKED, process)
        started = time.monotonic()
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
        assert time.monotonic() - started < 3  # did not sit out the 5 s grace
        assert process.returncode == 1, out + err
        assert f"interrupted by {signum.name}" in err
        assert (root / MANIFEST).read_bytes() == content and not (root / PARKED).exists()
        # the lock is free and the restart is still owed: the next pass does it
        standin.stop_delay = 0.0
        code, out, err = node_once(
            root, the_policy, capsys, "--kubelet-restart-command", "true", "--manifest-grace", "5"
        )
    assert code == 0, out + err
    assert "restart-static-pod   kube-scheduler" in out and "ok" in out
    assert (root / MANIFEST).read_bytes() == content


# --- 6. retention over several passes, failed ones included --------------------------------


def test_retention_holds_over_many_passes_including_failed_ones(
    make_tree: Any, tmp_path: Path
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    the_policy = policy(
        tmp_path, "{kubeadm: {restart: none, backup: {retain: 2}}, kubelet: {restart: none}}"
    )
    due = {p: (root / PKI / p).read_bytes() for p in ("apiserver.crt", "apiserver.key")}

    def small_files() -> None:  # every write over 200 bytes fails with EFBIG: the pass fails
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    for failing in (False, False, True, True, False, True, False):
        for name, data in due.items():  # due again
            (root / PKI / name).write_bytes(data)
        done = subprocess.run(
            command(root, the_policy),
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=small_files if failing else None,
        )
        assert done.returncode == (1 if failing else 0), done.stdout + done.stderr
        made = backups(root)
        assert 1 <= len(made) <= 2, made
        assert not [p for p in made if (p / "new").exists()]  # no staged key left anywhere
    pairs = observe.observe(host.Host(root)).leaves
    assert pairs["apiserver"].key_matches


# --- 7. the kubelet restart never hits another machine -------------------------------------


def test_default_kubelet_restart_is_refused_when_host_root_is_not_pid1s_root(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 5 * DAY})
    before = files(root)
    code, out, err = node_once(root, policy(tmp_path, "{kubeadm: {restart: none}}"), capsys)
    assert code == 2, out + err
    assert "--kubelet-restart-command" in err and "PID 1" in err
    assert files(root) == before  # refused before any write, the lock file included


def test_no_kubelet_restart_command_is_needed_when_the_policy_never_restarts_it(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa")
    code, out, err = node_once(root, policy(tmp_path), capsys)
    assert code == 0, out + err


@pytest.mark.parametrize(
    ("spec", "given", "expected"),
    [
        pytest.param(
            "{kubelet: {restart: none}}", {}, ((), ("crictl",)), id="nothing-needed-nothing-refused"
        ),
        pytest.param("{}", {}, "--kubelet-restart-command", id="default-kubelet-restart-refused"),
        pytest.param(
            "{kubelet: {restart: none}, kubeadm: {restart: crictl}}",
            {},
            "--crictl-command",
            id="default-crictl-refused-when-the-policy-uses-it",
        ),
        pytest.param(
            "{kubeadm: {restart: crictl}}",
            {"kubelet_restart": "true", "crictl": "/opt/bin/crictl --timeout 5s"},
            (("true",), ("/opt/bin/crictl", "--timeout", "5s")),
            id="given-commands-are-always-used",
        ),
    ],
)
def test_host_commands_are_judged_from_the_desired_state(
    tmp_path: Path, spec: str, given: dict[str, str], expected: Any
) -> None:
    """What the node daemon asks before each pass: a mounted tree (not PID 1's root) needs a
    command only when the desired state would run it."""
    desired_spec = cli_policy_spec(policy(tmp_path, spec))
    commands = hostcommands.Given(str(tmp_path), **given)
    if isinstance(expected, str):
        with pytest.raises(hostcommands.Refused, match=expected) as refused:
            hostcommands.for_spec(commands, desired_spec)
        assert str(refused.value).startswith("give ") and "PID 1's root" in str(refused.value)
    else:
        found = hostcommands.for_spec(commands, desired_spec)
        assert (found.kubelet_restart, found.crictl) == expected


def cli_policy_spec(path: Path) -> Any:
    settings = config.settings_from(flags.parser().parse_args(["plan", "--policy", str(path)]))
    return cli._load_spec(settings)


@pytest.mark.parametrize("same", [True, False], ids=["pid1s-root", "another-root"])
def test_default_kubelet_restart_enters_pid1_only_when_host_root_is_its_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, same: bool
) -> None:
    (tmp_path / "host").mkdir()
    (tmp_path / "disk").mkdir()
    (tmp_path / "pid1-root").symlink_to(tmp_path / "host")  # as /proc/1/root is a link
    monkeypatch.setattr(hostcommands, "PID1_ROOT", str(tmp_path / "pid1-root"))
    root = tmp_path / ("host" if same else "disk")
    settings = config.settings_from(
        flags.parser().parse_args(["node", "--once", "--host-root", str(root)])
    )
    spec = cli._load_spec(settings)
    given = hostcommands.Given(str(root))
    if same:
        assert hostcommands.kubelet_restart(given, spec) == (
            *hostcommands.NSENTER,
            *("systemctl", "restart", "kubelet"),
        )
    else:
        with pytest.raises(hostcommands.Refused, match="--kubelet-restart-command"):
            hostcommands.kubelet_restart(given, spec)
