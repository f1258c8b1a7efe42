"""The one back-off policy (``reconciler.retrying``), and a failed node pass's use of it: waits
double up to their cap, jittered to 50-100 %; a loop that lasts as long as the process stops at
once when told to."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from pathlib import Path

import pytest
import tenacity

from reconciler import retrying
from reconciler.decide import policy
from reconciler.node import execute, hostcommands
from reconciler.run import node_daemon

HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"


@pytest.mark.parametrize(
    ("failures", "nominal"),
    [
        pytest.param(1, 0.5, id="first-failure-waits-first"),
        pytest.param(2, 1.0, id="second-doubles"),
        pytest.param(4, 4.0, id="fourth-doubles-thrice"),
        pytest.param(7, 30.0, id="seventh-is-capped"),
        pytest.param(10_000, 30.0, id="ten-thousandth-is-capped-without-overflow"),
        pytest.param(0, 0.5, id="zero-counts-as-the-first"),
    ],
)
def test_backoff_doubles_up_to_its_cap_jittered_to_half_or_more(
    failures: int, nominal: float
) -> None:
    wait = retrying.backoff(first=0.5, cap=30.0)
    delays = [retrying.delay(wait, failures) for _ in range(200)]
    assert all(nominal / 2 <= d <= nominal for d in delays), (min(delays), max(delays))
    assert max(delays) - min(delays) > nominal / 10  # jittered: nodes do not retry in step


class Flaky(Exception):
    pass


def test_until_stopped_retries_with_back_off_until_the_call_succeeds() -> None:
    calls: list[float] = []

    def call() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise Flaky()
        return "done"

    stop = threading.Event()
    assert retrying.until_stopped(stop, call, Flaky, retrying.backoff(0.02, 1.0)) == "done"
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert len(calls) == 3 and gaps[0] >= 0.01 and gaps[1] >= 0.02


def test_until_stopped_ends_a_wait_at_once_and_starts_no_attempt_after_stop() -> None:
    stop = threading.Event()
    calls: list[int] = []

    def call() -> None:
        calls.append(1)
        raise Flaky()

    def told(state: tenacity.RetryCallState) -> None:
        stop.set()  # just before a wait of a minute or more

    began = time.monotonic()
    result = retrying.until_stopped(stop, call, Flaky, retrying.backoff(120.0, 120.0), told)
    assert result is None and calls == [1] and time.monotonic() - began < 5


def test_until_stopped_lets_an_error_it_was_not_told_to_retry_through() -> None:
    def call() -> None:
        raise KeyError("a bug, not a flaky server")

    with pytest.raises(KeyError):
        retrying.until_stopped(threading.Event(), call, Flaky, retrying.backoff(0.01, 0.01))


def test_failed_node_passes_back_off_from_retry_period_up_to_check_interval(
    tmp_path: Path,
) -> None:
    daemon = node_daemon.NodeDaemon(
        node_daemon.Config(
            node_name="cp-1",
            host_root=str(tmp_path),
            namespace="kube-system",
            policy_file=None,
            policy_defaults={},
            node_labels={},
            lease_seconds=60,
            slot_retry=dt.timedelta(seconds=10),
            failure_retry=dt.timedelta(minutes=1),
            execute=execute.Settings(kubelet_restart_command=()),
            commands=hostcommands.Given(str(tmp_path)),
        ),
        None,
    )
    spec = policy.resolve(policy.load(HEAD + "spec: {checkInterval: 10m}\n"), {})
    waits = [daemon._failed(spec).total_seconds() for _ in range(6)]
    nominal = [60, 120, 240, 480, 600, 600]  # doubling, capped at checkInterval
    assert all(n / 2 <= w <= n for w, n in zip(waits, nominal, strict=True)), waits
    assert daemon._failed(None) <= node_daemon.NO_SPEC_RETRY_CAP  # no desired state at all
