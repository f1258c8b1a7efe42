"""kucero's own journal and state files: schema checks, fuzzed, and the damaged-file cases of
issue 6 through the CLI on real trees.

The fuzz tests run ``KUCERO_FUZZ_EXAMPLES`` documents each (default 500: the quick profile
in ``make unit``); ``KUCERO_FUZZ_EXAMPLES=25000`` is the long profile (4 tests x 25,000 =
100,000 documents). The only acceptable outcome for any document is a valid value or an
``OwnFileError``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import cli
from reconciler.decide import ownfiles
from reconciler.model import paths
from reconciler.node import host, transaction

EXAMPLES = int(os.environ.get("KUCERO_FUZZ_EXAMPLES", "500"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
SHA = "a" * 64
VALID_JOURNAL: dict[str, Any] = {
    "backup": "/etc/kubernetes/tmp/kucero-backup-20260101T000000Z",
    "files": [
        {
            "path": "/etc/kubernetes/pki/apiserver.crt",
            "sha256": SHA,
            "mode": 0o644,
            "oldSha256": SHA,
            "oldMode": 0o644,
            "owner": [0, 0],
        },
        {"path": "/etc/kubernetes/tmp/kucero-state.json", "sha256": SHA, "mode": 0o600},
    ],
}
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=40,
)
journal_keys = st.sampled_from(
    ["backup", "files", "path", "sha256", "mode", "oldSha256", "oldMode", "owner"]
)


def _accepts_or_refuses(parse: Any, data: bytes) -> Any:
    try:
        return parse(data)
    except ownfiles.OwnFileError:
        return None


def _assert_valid_journal(doc: dict[str, Any] | None) -> None:
    if doc is None:
        return
    assert doc["backup"].startswith(f"{paths.TMP}/{paths.BACKUP_PREFIX}")
    for entry in doc["files"]:
        assert entry["path"].startswith(ownfiles.WRITABLE_PREFIXES) and ".." not in entry["path"]


@FUZZ
@given(json_values)
def test_any_json_document_is_a_journal_or_an_own_file_error(value: object) -> None:
    _assert_valid_journal(_accepts_or_refuses(ownfiles.parse_journal, json.dumps(value).encode()))


@FUZZ
@given(st.data())
def test_a_mutated_journal_is_a_journal_or_an_own_file_error(data: st.DataObject) -> None:
    doc = copy.deepcopy(VALID_JOURNAL)
    for _ in range(data.draw(st.integers(1, 3))):
        files = doc.get("files")
        entries = [e for e in files if isinstance(e, dict)] if isinstance(files, list) else []
        target: dict[str, Any] = data.draw(st.sampled_from([doc, *entries]))
        key = data.draw(journal_keys)
        if data.draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = data.draw(
                json_values
                | st.sampled_from(
                    ["/etc/kubernetes/../../etc/shadow", "/etc/shadow", -1, 0o10000, True]
                )
            )
    _assert_valid_journal(_accepts_or_refuses(ownfiles.parse_journal, json.dumps(doc).encode()))


@FUZZ
@given(json_values)
def test_any_json_document_is_a_state_or_an_own_file_error(value: object) -> None:
    state = _accepts_or_refuses(ownfiles.parse_state, json.dumps(value).encode())
    assert state is None or set(state["pendingRestarts"]) <= ownfiles.RESTARTABLE


@FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_any_bytes_are_a_journal_or_state_or_an_own_file_error(data: bytes, journal: bool) -> None:
    _accepts_or_refuses(ownfiles.parse_journal if journal else ownfiles.parse_state, data)


def test_the_valid_journal_parses() -> None:
    assert ownfiles.parse_journal(json.dumps(VALID_JOURNAL).encode()) == VALID_JOURNAL


# --- damaged own files through the CLI ------------------------------------------------------


def _pass(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"
        "spec: {kubeadm: {restart: none}, kubelet: {restart: none}}\n"
    )
    code = cli.main(["node", "--once", "--host-root", str(root), "--policy", str(policy)])
    out, err = capsys.readouterr()
    return code, out + err


def test_a_state_file_nested_100000_deep_is_reported_not_a_traceback(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(key_type="ecdsa")
    state = root / paths.STATE.lstrip("/")
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text("[" * 100_000 + "]" * 100_000)
    assert cli.main(["plan", "--host-root", str(root), "-o", "json"]) == 0
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert f"{paths.STATE}: nested too deeply; pending restarts forgotten" in [
        f["detail"] for f in findings
    ]
    code, out = _pass(root, tmp_path, capsys)  # the pass rewrites it with a valid document
    assert code == 0, out
    assert ownfiles.parse_state(state.read_bytes()) == {"pendingRestarts": []}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            {"backup": VALID_JOURNAL["backup"], "files": [{"sha256": SHA, "mode": 384}]},
            "files[0]: missing path",
        ),
        (
            {
                "backup": VALID_JOURNAL["backup"],
                "files": [{"path": "/etc/shadow", "sha256": SHA, "mode": 384}],
            },
            "files[0].path",
        ),
        (
            {"backup": "/etc/kubernetes/pki", "files": VALID_JOURNAL["files"]},
            "backup: not a kucero backup",
        ),
        (
            {
                "backup": VALID_JOURNAL["backup"],
                "files": [{"path": "/etc/kubernetes/a", "sha256": SHA, "mode": "0600"}],
            },
            "files[0].mode",
        ),
    ],
    ids=["entry-without-path", "path-outside-kubernetes", "backup-is-pki", "mode-of-wrong-type"],
)
def test_a_damaged_journal_is_reported_and_nothing_is_written(
    make_tree: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: object, message: str
) -> None:
    root = make_tree(key_type="ecdsa", expiries={"apiserver": dt.timedelta(days=5)})
    journal = root / paths.JOURNAL.lstrip("/")
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text(json.dumps(damage))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != "kucero.lock"}
    code, out = _pass(root, tmp_path, capsys)
    assert code == 1 and "cannot recover an interrupted pass" in out and message in out, out
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != "kucero.lock"}
    assert after == before


# --- the transaction's last guard --------------------------------------------------------


def test_the_transaction_refuses_two_writes_to_one_file_and_writes_to_a_ca_file(
    tmp_path: Path,
) -> None:
    pki_dir = tmp_path / "etc/kubernetes/pki"
    pki_dir.mkdir(parents=True)
    (pki_dir / "a.key").write_bytes(b"a")
    (pki_dir / "b.key").symlink_to("a.key")
    (pki_dir / "ca.key").write_bytes(b"ca")
    (pki_dir / "c.key").symlink_to("/etc/kubernetes/pki/ca.key")
    node = host.Host(tmp_path)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    shared = [
        transaction.Write("/etc/kubernetes/pki/a.key", b"1"),
        transaction.Write("/etc/kubernetes/pki/b.key", b"2"),
    ]
    with pytest.raises(
        transaction.TransactionError, match=r"b\.key is the same file as /etc/kubernetes/pki/a\.key"
    ):
        transaction.apply(node, shared, now, retain=1)
    with pytest.raises(
        transaction.TransactionError, match=r"protected /etc/kubernetes/pki/ca\.key"
    ):
        transaction.apply(
            node,
            [transaction.Write("/etc/kubernetes/pki/c.key", b"x")],
            now,
            retain=1,
            protected=("/etc/kubernetes/pki/ca.key",),
        )
    assert (pki_dir / "a.key").read_bytes() == b"a" and (pki_dir / "ca.key").read_bytes() == b"ca"
    assert not (tmp_path / "etc/kubernetes/tmp").exists()  # refused before any backup
