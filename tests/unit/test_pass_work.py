"""A pass does each piece of work once: a guard on speed that counts work, never time.

Timings flake on a shared machine; counts do not. A pass observes the host once, parses every
certificate, key, kubeconfig and kubelet config it finds once, and afterwards reads back only
what it wrote (each new file is parsed once more, which is the check that it landed). The only
file parsed twice is a CA key: once to check it matches its certificate, once to sign.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

from reconciler.decide import kubeconfig, kubelet, pki, plan
from reconciler.model import kubeadm, nodespec
from reconciler.node import execute, keys, observe
from reconciler.node import host as host_
from reconciler.run import once

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
ALL_DUE = tuple((name, dt.timedelta(days=5)) for name in kubeadm.NAMES)
SETTINGS = execute.Settings(kubelet_restart_command=("true",))


class Counter:
    """Counts calls of the parsers, by the content they were given."""

    def __init__(self) -> None:
        self.parsed: collections.Counter[tuple[str, str]] = collections.Counter()
        self.observes = 0


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    counts = Counter()

    def counting(module: Any, name: str) -> None:
        real: Callable[..., Any] = getattr(module, name)

        def wrapper(data: Any, *args: Any, **kwargs: Any) -> Any:
            raw = data.encode() if isinstance(data, str) else bytes(data)
            counts.parsed[(name, hashlib.sha256(raw).hexdigest()[:12])] += 1
            return real(data, *args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for module, name in (
        (pki, "load_cert"),
        (pki, "load_key"),
        (kubeconfig, "parse"),
        (kubelet, "parse_config"),
    ):
        counting(module, name)
    real_observe = observe.observe

    def observing(*args: Any, **kwargs: Any) -> Any:
        counts.observes += 1
        return real_observe(*args, **kwargs)

    monkeypatch.setattr(observe, "observe", observing)
    yield counts


def spec() -> nodespec.NodeSpec:
    from reconciler.decide import policy

    loaded = policy.from_mapping(
        {
            "apiVersion": policy.API_VERSION,
            "kind": policy.KIND,
            "spec": {"kubeadm": {"restart": "none"}, "kubelet": {"restart": "none"}},
        }
    )
    return policy.resolve(loaded, {})


def digest_of(root: Path, host_path: str) -> str:
    return hashlib.sha256(host_.Host(root).read(host_path) or b"").hexdigest()[:12]


def ca_key_contents(root: Path) -> set[str]:
    return {digest_of(root, ca.key) for ca in kubeadm.CAS}


def run(root: Path) -> once.PassResult:
    result = once.run_once(host_.Host(root), spec(), None, lambda: NOW, SETTINGS)
    assert result.converged, result.failures
    return result


def test_a_renewing_pass_observes_once_and_parses_each_content_once(
    make_tree: Callable[..., Path], counter: Counter
) -> None:
    root = make_tree(expiries=ALL_DUE)
    result = run(root)
    assert len([r for r in result.results if r.ok]) >= len(kubeadm.NAMES)
    assert counter.observes == 1
    ca_keys = ca_key_contents(root)
    # kubelet.conf, repaired, now names kubelet-client-current.pem: reading kubelet.conf back
    # parses that file again, as part of checking what the pass wrote
    referenced = digest_of(root, kubeadm.KUBELET_CLIENT_CURRENT)
    twice = {
        (name, digest): n
        for (name, digest), n in counter.parsed.items()
        if n > 1
        and not (name == "load_key" and digest in ca_keys and n == 2)
        and not (digest == referenced and n == 2)
    }
    assert twice == {}
    # read back: a renewed file holding the very bytes the pass built and verified is not
    # parsed again (kubelet.conf, repaired to name the rotating file, is: nothing built it
    # from a parse of its own)
    kubeconfigs = sum(n for (name, _), n in counter.parsed.items() if name == "parse")
    renewed_kubeconfigs = sum(1 for leaf in kubeadm.LEAVES if leaf.kind == "kubeconfig")
    assert kubeconfigs == renewed_kubeconfigs + 2
    new_certs = {digest_of(root, leaf.path) for leaf in kubeadm.LEAVES if leaf.key}
    assert not {d for (name, d) in counter.parsed if name == "load_cert"} & new_certs


def test_refresh_reusing_what_the_pass_built_sees_what_reading_afresh_sees(
    make_tree: Callable[..., Path],
) -> None:
    for key_type in ("ecdsa", "rsa"):
        root = make_tree(expiries=ALL_DUE, key_type=key_type)
        node = host_.Host(root)
        before = observe.observe(node)
        the_plan = plan.plan(spec(), before, NOW)
        written = observe.Written()
        execute.execute(node, spec(), before, the_plan, NOW, SETTINGS, written)
        assert len(written.pairs) == len(kubeadm.NAMES) and written.documents
        reused = observe.refresh(node, before, the_plan, written)
        afresh = observe.refresh(node, before, the_plan)
        assert reused.leaves.keys() == afresh.leaves.keys()
        # identities are looked up again only for what the pass replaced: the same as a
        # whole new observation finds (every replaced file is a new inode)
        assert reused.identities == observe.observe(node).identities
        assert any(reused.identities[p] != before.identities[p] for p in before.identities)
        for name, leaf in afresh.leaves.items():
            again = reused.leaves[name]
            assert dataclasses.replace(again, cert=None) == dataclasses.replace(leaf, cert=None)
            assert again.cert is not None and leaf.cert is not None
            assert again.cert.fingerprint(hashes.SHA256()) == leaf.cert.fingerprint(hashes.SHA256())
            assert leaf.key_matches and leaf.issued_by_ca, name
        # a file changed after it was written is parsed and checked in full
        other = root / "etc/kubernetes/pki/apiserver.key"
        other.write_bytes((root / "etc/kubernetes/pki/front-proxy-client.key").read_bytes())
        changed = observe.refresh(node, before, the_plan, written)
        assert changed.leaves["apiserver"].key_matches is False


def test_a_pass_with_nothing_to_do_parses_each_file_once(
    make_tree: Callable[..., Path], counter: Counter
) -> None:
    root = make_tree(kubelet_config_rotation=True, embedded_kubelet_conf=False)
    result = run(root)
    assert not result.planned.actions, result.planned.actions
    assert counter.observes == 1
    assert counter.parsed and max(counter.parsed.values()) == 1, counter.parsed


def test_rsa_keys_of_a_pass_are_made_in_parallel_and_ec_keys_inline(
    make_tree: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    threads: set[str] = set()
    real = keys.new_key_like

    def recording(public_key: Any) -> Any:
        threads.add(threading.current_thread().name)
        return real(public_key)

    monkeypatch.setattr(keys, "new_key_like", recording)
    monkeypatch.setattr(keys, "usable_cores", lambda: 2)
    run(make_tree(expiries=ALL_DUE))
    assert all(name.startswith("keygen") for name in threads), threads

    threads.clear()
    run(make_tree(expiries=ALL_DUE, key_type="ecdsa"))
    assert threads == {threading.current_thread().name}


def test_a_renewing_pass_fsyncs_each_directory_at_its_barriers_not_per_file(
    make_tree: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import stat

    real = os.fsync
    files = 0
    per_directory: collections.Counter[int] = collections.Counter()

    def counting(fd: int) -> None:
        nonlocal files
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            per_directory[st.st_ino] += 1
        else:
            files += 1
        real(fd)

    staged = 0
    real_stage = host_.Host.stage

    def counting_stage(self: host_.Host, *args: Any, **kwargs: Any) -> str:
        nonlocal staged
        staged += 1
        return real_stage(self, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", counting)
    monkeypatch.setattr(host_.Host, "stage", counting_stage)
    root = make_tree(expiries=ALL_DUE, key_type="ecdsa")
    result = run(root)
    renewed = len(result.planned.actions)
    assert renewed >= len(kubeadm.NAMES)
    # every new content is written once, beside its target, and fsynced before the journal
    # points at it; the old contents are hard-linked into the backup, never copied; the only
    # other files fsynced are the backup's marker, the journal and (restart: none) the state
    # file's list of components still serving the old certificates, written after the pass
    assert staged >= renewed
    assert files == staged + 3, (files, staged)
    # a directory is fsynced when an entry is created in it, at the barrier before the journal
    # is written and at the one before it is removed: not once per file written in it (the
    # pki directory alone holds 14 of a pass's files). kubeadm's tmp directory, which holds
    # kucero's own files, has more: the backup made, the journal written then removed, the
    # state file installed then rewritten.
    tmp = (root / "etc/kubernetes/tmp").stat().st_ino
    assert per_directory[(root / "etc/kubernetes/pki").stat().st_ino] == 2, per_directory
    assert max(n for d, n in per_directory.items() if d != tmp) <= 3, per_directory
    assert per_directory[tmp] <= 6, per_directory


def test_a_pass_opens_the_host_root_once_and_leaves_no_descriptor_open(
    make_tree: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    root = make_tree(expiries=ALL_DUE, key_type="ecdsa")
    real = os.open
    opened_root = 0

    def counting(path: Any, *args: Any, **kwargs: Any) -> int:
        nonlocal opened_root
        if kwargs.get("dir_fd") is None and Path(path) == root:
            opened_root += 1
        return real(path, *args, **kwargs)

    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "open", counting)
    run(root)
    monkeypatch.undo()
    # the lock (taken first) and the pass, not one for each of the ~300 paths a pass resolves
    assert opened_root == 2
    assert len(os.listdir("/proc/self/fd")) == before
