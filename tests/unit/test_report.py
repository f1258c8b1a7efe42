"""What reaches the terminal: control and invisible formatting characters are escaped."""

from __future__ import annotations

import pytest

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
