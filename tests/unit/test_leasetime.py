"""When a Lease held by someone else may be taken: on observed time, the written duration
capped at the configured one."""

from __future__ import annotations

import pytest

from reconciler.decide import leasetime


@pytest.mark.parametrize(
    ("unchanged_for", "written", "left"),
    [
        pytest.param(0.0, 15, 15.0, id="just-seen"),
        pytest.param(10.0, 15, 5.0, id="part-way"),
        pytest.param(16.0, 15, -1.0, id="past-its-duration"),
        pytest.param(0.0, 5, 5.0, id="shorter-than-configured-is-honoured"),
        pytest.param(0.0, 10**9, 15.0, id="huge-is-capped"),
        pytest.param(0.0, None, 15.0, id="missing-is-the-configured-one"),
        pytest.param(0.0, "15", 15.0, id="a-string-is-garbage"),
        pytest.param(0.0, True, 15.0, id="a-boolean-is-garbage"),
        pytest.param(0.0, -3, 15.0, id="negative-is-garbage"),
        pytest.param(float("nan"), 15, 15.0, id="nan-counts-as-just-seen"),
    ],
)
def test_left(unchanged_for: float, written: object, left: float) -> None:
    assert leasetime.left(unchanged_for, written, 15.0) == left
