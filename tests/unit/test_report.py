"""What reaches the terminal: control and invisible formatting characters are escaped; what
``kucero check-expiration`` says about who renews each certificate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler import cli
from reconciler.decide import report


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain é ✓", "plain é ✓"),
        ("cp\x1b[31m-1", "cp\\x1b[31m-1"),
        ("a\nb\tc\r", "a\\x0ab\\x09c\\x0d"),
        ("\x7f\x9b", "\\x7f\\x9b"),
        ("evil\u202etxt.exe\u200b", "evil\\u202etxt.exe\\u200b"),
    ],
    ids=["printable-unchanged", "escape", "newline-and-tab", "del-and-c1", "bidi-and-zero-width"],
)
def test_printable(text: str, shown: str) -> None:
    assert report.printable(text) == shown


def test_table_cells_are_escaped_so_rows_stay_rows() -> None:
    out = report.table(["A", "B"], [["x\ny", "\x1b]0;title\x07"]])
    assert out.count("\n") == 2 and "\x1b" not in out and "\x07" not in out


def test_check_expiration_says_nobody_renews_what_kucero_never_renews(
    make_tree: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """External etcd: the etcd CA's key is not on the node, so its client certificate
    (apiserver-etcd-client) and CA are externally managed; kucero's plan never renews them,
    and check-expiration once said "renewedBy: kucero" for them all the same."""
    root = make_tree(key_type="ecdsa")
    (root / "etc/kubernetes/pki/etcd/ca.key").unlink()
    assert cli.main(["check-expiration", "--host-root", str(root), "-o", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    client = rows["apiserver-etcd-client"]
    assert client["externallyManaged"] is True
    assert client["renewedBy"].startswith("nobody"), client
    assert rows["etcd-ca"]["renewedBy"].startswith("nobody"), rows["etcd-ca"]
    assert "etcd/ca.key is absent" in rows["etcd-ca"]["renewedBy"]
    # what the plan does renew is still said to be kucero's
    assert rows["apiserver"]["renewedBy"] == "kucero"
    assert rows["ca"]["renewedBy"].startswith("kucero with ca.mode: renew")
    plan_out = [r for r in rows.values() if r["kind"] != "ca" and r["issuer"] == "etcd-ca"]
    assert plan_out and all(r["renewedBy"].startswith("nobody") for r in plan_out)
