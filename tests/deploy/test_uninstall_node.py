"""docs/uninstall.md, section 3, on a node whose last pass was killed: what is left matches the
doc's table, and the doc's command (its ```sh block as written, ``--host-root /`` pointed at the
simulated node) finishes the pass and leaves only the rows to remove at leisure.

No API server: the pass is ``kucero node --once`` with a policy file, killed by its own
failpoint (the SIGKILL the crash tests use) before and after it writes its journal.
test_uninstall.py checks the same table after a clean run in the cluster.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy import leftovers
from tests.integration import nodesim

TMP = "etc/kubernetes/tmp/"
POLICY = "spec: {kubeadm: {restart: none}, kubelet: {restart: none}}\n"


def other_files(root: Path) -> dict[str, bytes]:
    """Every file of the tree but kucero's own, by path: what a recovery may not change."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "kucero" not in str(p.relative_to(root))
    }


@pytest.mark.parametrize(
    ("step", "journal"),
    [
        pytest.param(1, False, id="killed-before-its-journal"),
        pytest.param(4, True, id="killed-after-its-journal"),
    ],
)
def test_the_doc_finishes_an_interrupted_pass_and_leaves_the_table_rows(
    tmp_path: Path, step: int, journal: bool
) -> None:
    root = nodesim.tree(tmp_path, "uninstall-cp-1", True, due=("apiserver",))
    policy = tmp_path / "policy.yaml"
    policy.write_text(nodesim.spec_text(POLICY))
    command = [sys.executable, "-m", "reconciler", "node", "--once", f"--host-root={root}"]
    killed = subprocess.run(
        [*command, f"--policy={policy}", f"--failpoint={step}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    rows = leftovers.table(leftovers.section(3))
    (in_flight,) = [row for row in rows if row.remove.startswith("**no**")]
    found = leftovers.on_host(root)
    print("kucero on the node after the kill:", *found, sep="\n  ")
    unlisted = [path for path in found if not any(row.matches(path) for row in rows)]
    assert not unlisted, f"not in the doc's table: {unlisted}"
    assert (TMP + "kucero-journal.json" in found) is journal, found
    assert any(in_flight.matches(path) for path in found), found
    before = other_files(root)

    said = leftovers.run(3, tmp_path / "bin", host_root=root)

    assert "recovered:" in said
    after = leftovers.on_host(root)
    print("kucero on the node after the doc's command:", *after, sep="\n  ")
    assert all(path.startswith(TMP) for path in after), after
    assert not any(in_flight.matches(path) for path in after), after
    assert all(any(row.matches(path) for row in rows) for path in after), after
    now = other_files(root)
    changed = {p for p in set(before) | set(now) if before.get(p) != now.get(p)}
    if journal:  # the renewal the journal had decided is finished: the apiserver pair
        assert changed == {"etc/kubernetes/pki/apiserver.crt", "etc/kubernetes/pki/apiserver.key"}
    else:  # nothing was decided: nothing else changes (the due certificate is not renewed)
        assert changed == set()
