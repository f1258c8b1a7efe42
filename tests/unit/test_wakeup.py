"""Wake-up time as a table: the next renewal window, never later than checkInterval."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.decide import policy, wakeup
from reconciler.node import host, observe

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("moments", "interval", "retry", "expected"),
    [
        pytest.param([], H, None, NOW + H, id="nothing-due-wakes-at-check-interval"),
        pytest.param([NOW + 10 * H], H, None, NOW + H, id="far-window-capped-by-check-interval"),
        pytest.param(
            [NOW + 10 * H, NOW + 0.25 * H], H, None, NOW + 0.25 * H, id="earliest-window-wins"
        ),
        pytest.param([NOW - H], H, None, NOW + H, id="window-already-open-does-not-spin"),
        pytest.param([NOW], H, None, NOW + H, id="window-opening-now-is-past"),
        pytest.param([NOW + H], H, 0.1 * H, NOW + 0.1 * H, id="retry-brings-it-closer"),
        pytest.param([], 0.05 * H, H, NOW + 0.05 * H, id="retry-never-beyond-check-interval"),
    ],
)
def test_next_wake(
    moments: list[dt.datetime],
    interval: dt.timedelta,
    retry: dt.timedelta | None,
    expected: dt.datetime,
) -> None:
    assert wakeup.next_wake(moments, interval, NOW, retry) == expected


def _spec(text: str = "") -> object:
    doc = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n" + text
    return policy.resolve(policy.load(doc), {})


@pytest.mark.parametrize(
    ("policy_text", "expected_names"),
    [
        pytest.param("", {"apiserver"}, id="all-managed-certificates-by-default"),
        pytest.param(
            "spec: {kubeadm: {certificates: [front-proxy-client]}}\n",
            set(),
            id="only-the-listed-ones",
        ),
        pytest.param(
            "spec: {kubeadm: {enabled: false}}\n", None, id="kubeadm-disabled-waits-for-none"
        ),
    ],
)
def test_renewal_moments_follow_the_policy(
    make_tree: Callable[..., Path], policy_text: str, expected_names: set[str] | None
) -> None:
    root = make_tree(now=NOW, expiries={"apiserver": dt.timedelta(days=40)})
    spec = _spec(policy_text)
    moments = dict(wakeup.renewal_moments(spec, observe.observe(host.Host(root), "cp-1")))  # type: ignore[arg-type]
    if expected_names is None:
        assert moments == {}
        return
    soon = {n for n, m in moments.items() if m < NOW + dt.timedelta(days=30)}
    assert soon == expected_names
    if "apiserver" in moments:
        # 40 days left, renewBefore 30 days: the window opens in 10 days
        assert abs(moments["apiserver"] - (NOW + dt.timedelta(days=10))) < dt.timedelta(hours=1)
