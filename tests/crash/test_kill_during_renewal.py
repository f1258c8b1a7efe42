"""A SIGKILL at any point of a renewal pass never costs a certificate its key, and the next pass
converges.

Not by mocking: a real ``kucero node --once`` process renews a full control-plane tree (every
kubeadm certificate and kubeconfig due, kubelet.conf and the kubelet config to repair) and is
killed with SIGKILL, either by itself at its n-th transaction step (``--failpoint n``, every
step in turn) or by the test after a spread of delays. After each kill:

* the tree is all-or-nothing: with no journal on disk, either no file changed or every file a
  pass changes did, and every certificate matches its key; with the journal, every file holds
  its old or its new content (never a torn write) and only journaled files differ;
* ``kucero plan`` reports the interrupted pass exactly when the journal exists;
* the next ``kucero node --once`` (a new process, no failpoint) exits 0 and rolls the
  interrupted pass forward (the staged files are the ones installed); afterwards every
  certificate matches its key and chains to its CA, every leaf expires about a year from now,
  keys are 0600, the kubelet repairs are in place, no temporary file is left and ``kucero plan``
  has nothing to do.

The checks read the files with ``cryptography``, PyYAML and hashlib only, not with the
reconciler's own observation code. The runs go two at a time (one per core): each case has
its own copy of a template tree, built once per key type.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from reconciler import cli, fabricate

POLICY = Path(__file__).resolve().parents[2] / "policies" / "demo.yaml"  # kubeadm.restart: none
# Every certificate and kubeconfig kubeadm makes, 5 days from expiry (renewBefore is 30 days).
KUBEADM_NAMES = (
    "admin.conf",
    "apiserver",
    "apiserver-etcd-client",
    "apiserver-kubelet-client",
    "controller-manager.conf",
    "etcd-healthcheck-client",
    "etcd-peer",
    "etcd-server",
    "front-proxy-client",
    "scheduler.conf",
    "super-admin.conf",
)
DUE = tuple((name, dt.timedelta(days=5)) for name in KUBEADM_NAMES)
JOURNAL = "etc/kubernetes/tmp/kucero-journal.json"
WORKDIR = "etc/kubernetes/tmp"  # kucero's backups, journal, state and lock
BACKUP_PREFIX = "kucero-backup-"
TEMP_PREFIX = ".kucero-tmp-"  # write_atomic's temporary files
KUBELET_CLIENT = "/var/lib/kubelet/pki/kubelet-client-current.pem"
# Renewed leaves are valid certificateValidity (8760 h) from the pass; an hour of slack covers
# a slow machine without accepting the 5 days the template started with.
YEAR, SLACK = dt.timedelta(days=365), dt.timedelta(hours=1)
WORKERS = max(1, min(4, os.cpu_count() or 1))
EXTERNAL_KILLS = 15
# A kill that came after the pass ended is tried again sooner, at most this many times.
RETRIES_WHEN_DONE_FIRST = 3


# --- reading the tree, independently of the reconciler ---------------------------------


def host_file(root: Path, host_path: str) -> Path:
    """``host_path`` under ``root``, following symlinks as if ``root`` were ``/``."""
    path = root / host_path.lstrip("/")
    for _ in range(40):
        if not path.is_symlink():
            return path
        target = os.readlink(path)
        path = root / target.lstrip("/") if target.startswith("/") else path.parent / target
    raise AssertionError(f"{host_path}: symlink loop")


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pair_matches(cert_pem: bytes, key_pem: bytes, where: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        # RSA self-validation costs 36 ms a key and proves nothing a public-key match doesn't
        key = serialization.load_pem_private_key(key_pem, None, unsafe_skip_rsa_key_validation=True)
    except ValueError as e:
        raise AssertionError(f"{where}: unreadable (a torn write?): {e}") from e
    return _spki(cert.public_key()) == _spki(key.public_key())


def kubeconfig_user(root: Path, rel: str) -> dict[str, str]:
    doc = yaml.safe_load((root / rel).read_text())
    (user,) = doc["users"]
    return user["user"]  # type: ignore[no-any-return]


def pairs(root: Path) -> Iterator[tuple[str, bytes, bytes]]:
    """Every (where, certificate PEM, key PEM) on the node: pki/**/*.crt with its .key, and
    every kubeconfig's client credentials, embedded or in files."""
    for crt in sorted((root / "etc/kubernetes/pki").rglob("*.crt")):
        yield str(crt.relative_to(root)), crt.read_bytes(), crt.with_suffix(".key").read_bytes()
    for conf in sorted((root / "etc/kubernetes").glob("*.conf")):
        rel = str(conf.relative_to(root))
        user = kubeconfig_user(root, rel)
        if "client-certificate-data" in user:
            cert = base64.b64decode(user["client-certificate-data"])
            key = base64.b64decode(user["client-key-data"])
        else:
            cert = host_file(root, user["client-certificate"]).read_bytes()
            key = host_file(root, user["client-key"]).read_bytes()
        yield rel, cert, key


def mismatched(root: Path) -> list[str]:
    return [where for where, cert, key in pairs(root) if not _pair_matches(cert, key, where)]


def snapshot(root: Path) -> dict[str, str]:
    """sha256 (or symlink target) of every file; kucero's backups, journal and lock left out."""
    out = {}
    for directory, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        if rel_dir == WORKDIR:
            dirs[:] = [d for d in dirs if not d.startswith(BACKUP_PREFIX)]
            files = [f for f in files if f not in ("kucero.lock", "kucero-journal.json")]
        for name in files:
            path = Path(directory, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def temporaries(snap: dict[str, str]) -> list[str]:
    return [p for p in snap if os.path.basename(p).startswith(TEMP_PREFIX)]


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    paths = (before.keys() | after.keys()) - set(temporaries(after))
    return {p for p in paths if before.get(p) != after.get(p)}


def leaf_certificates(root: Path) -> dict[str, x509.Certificate]:
    out = {}
    for where, cert_pem, _ in pairs(root):
        cert = x509.load_pem_x509_certificate(cert_pem)
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            out[where] = cert
    return out


def cas(root: Path) -> dict[x509.Name, x509.Certificate]:
    found = (
        x509.load_pem_x509_certificate(p.read_bytes())
        for p in (root / "etc/kubernetes/pki").rglob("*.crt")
    )
    return {
        c.subject: c
        for c in found
        if c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    }


def live_key_files(root: Path) -> set[bytes]:
    """The content of every file that holds a private key in use."""
    keys = {p.read_bytes() for p in (root / "etc/kubernetes/pki").rglob("*.key")}
    confs = {p.read_bytes() for p in (root / "etc/kubernetes").glob("*.conf")}
    return keys | {c for c in confs if b"client-key-data" in c}


# --- running kucero -------------------------------------------------------------------------

_STDOUT = threading.Lock()  # in-process CLI calls swap sys.stdout: one at a time


def kucero_plan(root: Path) -> dict[str, Any]:
    """``kucero plan -o json`` (in-process: it only reads, and start-up would cost 0.2 s)."""
    out = io.StringIO()
    with _STDOUT, contextlib.redirect_stdout(out):
        code = cli.main(["plan", "--host-root", str(root), "--policy", str(POLICY), "-o", "json"])
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


def node_once(root: Path, failpoint: int | None = None) -> list[str]:
    return [
        *(sys.executable, "-m", "reconciler", "node", "--once"),
        *("--host-root", str(root), "--policy", str(POLICY)),
        *("--kubelet-restart-command", "true"),
        *(("--failpoint", str(failpoint)) if failpoint else ()),
    ]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NODE_NAME"}
    return {**env, **extra}


@dataclasses.dataclass(frozen=True)
class Run:
    returncode: int
    output: str
    seconds: float


def run(root: Path, failpoint: int | None = None, kill_after: float | None = None) -> Run:
    """One ``kucero node --once`` process, killed by itself at ``failpoint`` or by us after
    ``kill_after`` seconds (or neither)."""
    env = clean_env()
    began = time.monotonic()
    process = subprocess.Popen(
        node_once(root, failpoint),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if kill_after is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(kill_after)
        process.send_signal(signal.SIGKILL)  # a no-op if it has already exited
    output, _ = process.communicate()
    return Run(process.returncode, output, time.monotonic() - began)


# --- the template trees and what a pass does to them ----------------------------------------


@dataclasses.dataclass(frozen=True)
class Template:
    root: Path
    files: dict[str, str]  # snapshot of the untouched tree
    changes: frozenset[str]  # the files one uninterrupted pass changes
    startup: float  # seconds until a process has imported the reconciler
    seconds: float  # one uninterrupted pass, as a process


def build_template(key_type: str, workdir: Path) -> Template:
    root = fabricate.build(
        workdir / "template",
        dt.datetime.now(dt.UTC),
        fabricate.Options(key_type=key_type, expiries=DUE),
    )
    planned = {(a["action"], a["target"]) for a in kucero_plan(root)["actions"]}
    assert {t for a, t in planned if a == "renew"} == set(KUBEADM_NAMES)
    assert {a for a, _ in planned} >= {"fix-kubelet-conf", "set-kubelet-config", "restart-kubelet"}
    files = snapshot(root)
    # Uninterrupted passes, as many at once as the cases will run: how long one takes under
    # the same load, and what it changes.
    references = [copy(root, workdir / f"reference-{i}") for i in range(WORKERS)]
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        runs = list(pool.map(run, references))
    startup = float("inf")
    for _ in range(2):  # the first may pay for compiling the bytecode
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", "import reconciler.cli"], check=True)
        startup = min(startup, time.monotonic() - began)
    for reference, done in zip(references, runs, strict=True):
        assert done.returncode == 0, done.output
        assert_converged(reference, files, frozenset(changed(files, snapshot(reference))))
    changes = frozenset(changed(files, snapshot(references[0])))
    assert all(changed(files, snapshot(r)) == changes for r in references)
    leaves = [p for p in leaf_certificates(root) if p.endswith(".crt")]
    expected = {*leaves, *(p.removesuffix(".crt") + ".key" for p in leaves)}
    expected |= {str(p.relative_to(root)) for p in (root / "etc/kubernetes").glob("*.conf")}
    assert changes >= expected | {"var/lib/kubelet/config.yaml"}, expected - changes
    return Template(root, files, changes, startup, max(r.seconds for r in runs))


def copy(template: Path, root: Path) -> Path:
    shutil.copytree(template, root, symlinks=True)
    return root


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Template]:
    cache: dict[str, Template] = {}

    def get(key_type: str) -> Template:
        if key_type not in cache:
            cache[key_type] = build_template(key_type, tmp_path_factory.mktemp(key_type))
        return cache[key_type]

    return get


# --- the assertions -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AfterKill:
    journal: dict[str, Any] | None
    installed: int  # files that already hold their new content
    torn: list[str]  # pairs that do not match (only possible while the journal exists)


def assert_all_or_nothing(root: Path, template: Template) -> AfterKill:
    """The state a kill may leave: see the module docstring."""
    now = snapshot(root)
    diff = changed(template.files, now)
    torn = mismatched(root)
    journal_file = root / JOURNAL
    journal = json.loads(journal_file.read_text()) if journal_file.exists() else None
    if journal is None:
        assert diff in (set(), template.changes), f"half a pass applied, no journal: {diff}"
        assert not torn, f"certificates not matching their keys, and no journal: {torn}"
    else:
        entries = {e["path"].lstrip("/"): e for e in journal["files"]}
        assert set(entries) == template.changes, "the journal must cover every file a pass changes"
        for rel, entry in entries.items():
            assert now.get(rel) in (entry["sha256"], entry["oldSha256"]), f"{rel}: torn write"
        assert diff <= set(entries)
    findings = {f["reason"] for f in kucero_plan(root)["findings"]}
    assert ("InterruptedPassPending" in findings) == (journal is not None), findings
    return AfterKill(journal, len(diff), torn)


def assert_converged(root: Path, files: dict[str, str], changes: frozenset[str]) -> None:
    """What any pass that exited 0 must leave, interrupted before or not."""
    now = dt.datetime.now(dt.UTC)
    after = snapshot(root)
    assert not (root / JOURNAL).exists()
    assert not temporaries(after), temporaries(after)
    assert changed(files, after) == changes
    assert not mismatched(root)
    authorities = cas(root)
    for where, cert in leaf_certificates(root).items():
        cert.verify_directly_issued_by(authorities[cert.issuer])
        assert cert.not_valid_before_utc <= now, where
        assert abs(cert.not_valid_after_utc - (now + YEAR)) < SLACK, (where, cert)
    for key in (root / "etc/kubernetes/pki").rglob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key
    for conf in (root / "etc/kubernetes").glob("*.conf"):
        assert conf.stat().st_mode & 0o777 == 0o600, conf
    backups = [p for p in (root / WORKDIR).iterdir() if p.name.startswith(BACKUP_PREFIX)]
    # a backup holds the replaced files themselves (hard links: their modes, 0600 for every
    # key and kubeconfig) in directories only root can enter
    for backup in backups:
        assert backup.stat().st_mode & 0o777 == 0o700, backup
    for file in (f for b in backups for f in b.rglob("*") if f.is_file()):
        if file.suffix in (".key", ".conf"):
            assert file.stat().st_mode & 0o777 == 0o600, file
    # kubelet: kubelet.conf points at the rotating file, the config asks for client rotation
    # (serverTLSBootstrap is left alone: the demo policy does not vouch for an approver), and
    # nothing else in the config changed
    user = kubeconfig_user(root, "etc/kubernetes/kubelet.conf")
    assert user == {"client-certificate": KUBELET_CLIENT, "client-key": KUBELET_CLIENT}
    config_text = (root / "var/lib/kubelet/config.yaml").read_text()
    config = yaml.safe_load(config_text)
    assert config.pop("rotateCertificates") is True
    assert "serverTLSBootstrap" not in config
    assert config == yaml.safe_load(fabricate.kubelet_config_text(rotation=False))
    assert "# written by kubeadm; kucero must keep this comment" in config_text
    planned = kucero_plan(root)
    assert planned["actions"] == [], planned
    assert not [f for f in planned["findings"] if f["severity"] == "error"], planned


def kill_and_converge(
    template: Template, root: Path, failpoint: int | None = None, kill_after: float | None = None
) -> tuple[Run, AfterKill | None]:
    """Kill one pass, check what it left, run the next pass, check that it converged."""
    copy(template.root, root)
    killed = run(root, failpoint, kill_after)
    if killed.returncode == 0:  # it finished first
        assert_converged(root, template.files, template.changes)
        shutil.rmtree(root)
        return killed, None
    assert killed.returncode == -signal.SIGKILL, killed.output
    state = assert_all_or_nothing(root, template)
    again = run(root)
    assert again.returncode == 0, again.output
    assert_converged(root, template.files, template.changes)
    if state.journal is not None:  # rolled forward: the staged files are the ones in place
        on_disk = snapshot(root)
        for entry in state.journal["files"]:
            if not entry["path"].startswith(f"/{WORKDIR}/"):  # (the state file moves on)
                assert on_disk[entry["path"].lstrip("/")] == entry["sha256"], entry["path"]
    shutil.rmtree(root)
    return killed, state


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "stride"),
    [
        pytest.param("ecdsa", 1, id="ecdsa-every-step"),
        # RSA-2048 keys cost 40 ms each; every third step still hits the backup, the journal,
        # and installs both between a certificate and its key and after the key.
        pytest.param("rsa", 3, id="rsa-every-third-step"),
    ],
)
def test_failpoint_kill_at_each_step_then_next_pass_converges(
    templates: Callable[[str], Template], tmp_path: Path, key_type: str, stride: int
) -> None:
    template = templates(key_type)
    states: dict[int, AfterKill] = {}
    finished: list[int] = []
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        running: dict[concurrent.futures.Future[tuple[Run, AfterKill | None]], int] = {}
        step = 1
        while running or not finished:
            # keep every worker busy; stop starting new steps once one ran to the end
            while not finished and len(running) < 2 * WORKERS:
                assert step < 1000, "the pass never got past its failpoints"
                case = pool.submit(kill_and_converge, template, tmp_path / f"step-{step}", step)
                running[case] = step
                step += stride
            done, _ = concurrent.futures.wait(running, return_when="FIRST_COMPLETED")
            for case in done:
                n, (_, state) = running.pop(case), case.result()
                if state is None:
                    finished.append(n)
                else:
                    states[n] = state
    assert max(states) < min(finished), f"killed at {max(states)}, yet {min(finished)} ran through"
    journaled = [s for s in states.values() if s.journal is not None]
    assert any(s.journal is None and s.installed == 0 for s in states.values()), (
        "no kill before the journal"
    )
    assert journaled, "no kill while the journal existed"
    assert any(s.torn for s in journaled), "no kill between a certificate and its key"
    if stride == 1:
        # a kill after every single install: 0, 1, 2, ... of the pass's files in place
        assert {s.installed for s in journaled} == set(range(len(template.changes) + 1))
        assert any(s.journal is None and s.installed for s in states.values()), (
            "no kill after the journal"
        )


@pytest.mark.parametrize("key_type", ["ecdsa", "rsa"])
def test_sigkill_from_outside_at_spread_delays_then_next_pass_converges(
    templates: Callable[[str], Template], tmp_path: Path, key_type: str
) -> None:
    template = templates(key_type)
    # From just before start-up ends to just after the pass ends, evenly.
    first, last = 0.8 * template.startup, 1.05 * template.seconds
    delays = [first + (last - first) * i / (EXTERNAL_KILLS - 1) for i in range(EXTERNAL_KILLS)]

    def kill_at(i: int) -> AfterKill | None:
        """Kill at ``delays[i]``; when the pass finished first (the machine sped up since the
        timed pass), converge-check that too and try again sooner, down to start-up."""
        delay = delays[i]
        for attempt in range(RETRIES_WHEN_DONE_FIRST + 1):
            _, state = kill_and_converge(template, tmp_path / f"kill-{i}-{attempt}", None, delay)
            if state is not None:
                return state
            delay = max(0.5 * template.startup, 0.7 * delay)
        return None

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(pool.map(kill_at, range(EXTERNAL_KILLS)))
    killed = [state for state in outcomes if state is not None]
    summary = (
        f"{key_type}: pass {template.seconds:.2f}s (start-up {template.startup:.2f}s), "
        f"{len(killed)}/{EXTERNAL_KILLS} killed, {sum(s.journal is not None for s in killed)} "
        f"with the journal open, {sum(bool(s.torn) for s in killed)} between a cert and its key"
    )
    print(summary)
    assert len(killed) >= EXTERNAL_KILLS // 3, summary


def test_crash_after_the_journal_leaves_no_copy_of_the_live_keys(
    templates: Callable[[str], Template], tmp_path: Path
) -> None:
    """The transaction drops its staged copies once the journal is gone ("don't keep two
    copies of every new private key around"); a kill in between must not keep them either."""
    template = templates("ecdsa")
    root = copy(template.root, tmp_path / "node")
    # the last step: after every backup and install (2 steps a file), the journal and its removal
    killed = run(root, failpoint=2 * len(template.changes) + 2)
    assert killed.returncode == -signal.SIGKILL, killed.output
    state = assert_all_or_nothing(root, template)
    assert state.journal is None and state.installed == len(template.changes)
    assert run(root).returncode == 0
    assert_converged(root, template.files, template.changes)
    live = live_key_files(root)
    copies = [
        str(f.relative_to(root))
        for f in (root / WORKDIR).rglob("*")
        if f.is_file() and f.read_bytes() in live
    ]
    assert not copies, f"copies of live private keys left in backups: {copies}"
