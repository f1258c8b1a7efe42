"""Go's time.ParseDuration, case for case (the table of Go's own tests)."""

from __future__ import annotations

import datetime as dt

import pytest

from reconciler.decide import duration
from reconciler.decide.duration import HOUR, MICROSECOND, MILLISECOND, MINUTE, NANOSECOND, SECOND

VALID = [
    ("0", 0),
    ("5s", 5 * SECOND),
    ("30s", 30 * SECOND),
    ("1478s", 1478 * SECOND),
    ("-5s", -5 * SECOND),
    ("+5s", 5 * SECOND),
    ("-0", 0),
    ("+0", 0),
    ("5.0s", 5 * SECOND),
    ("5.6s", 5 * SECOND + 600 * MILLISECOND),
    ("5.s", 5 * SECOND),
    (".5s", 500 * MILLISECOND),
    ("1.0s", SECOND),
    ("1.00s", SECOND),
    ("1.004s", SECOND + 4 * MILLISECOND),
    ("1.0040s", SECOND + 4 * MILLISECOND),
    ("100.00100s", 100 * SECOND + MILLISECOND),
    ("10ns", 10 * NANOSECOND),
    ("11us", 11 * MICROSECOND),
    ("12\u00b5s", 12 * MICROSECOND),
    ("12\u03bcs", 12 * MICROSECOND),
    ("13ms", 13 * MILLISECOND),
    ("14s", 14 * SECOND),
    ("15m", 15 * MINUTE),
    ("16h", 16 * HOUR),
    ("3h30m", 3 * HOUR + 30 * MINUTE),
    ("10.5s4m", 4 * MINUTE + 10 * SECOND + 500 * MILLISECOND),
    ("-2m3.4s", -(2 * MINUTE + 3 * SECOND + 400 * MILLISECOND)),
    ("1h2m3s4ms5us6ns", HOUR + 2 * MINUTE + 3 * SECOND + 4 * MILLISECOND + 5 * MICROSECOND + 6),
    ("39h9m14.425s", 39 * HOUR + 9 * MINUTE + 14 * SECOND + 425 * MILLISECOND),
    ("52763797000ns", 52763797000),
    ("0.3333333333333333333h", 20 * MINUTE),
    ("9007199254740993ns", (1 << 53) + 1),
    ("9223372036854775807ns", (1 << 63) - 1),
    ("9223372036854775.807us", (1 << 63) - 1),
    ("9223372036s854ms775us807ns", (1 << 63) - 1),
    ("-9223372036854775808ns", -(1 << 63)),
    ("-9223372036854775.808us", -(1 << 63)),
    ("-9223372036s854ms775us808ns", -(1 << 63)),
    ("-2562047h47m16.854775808s", -(1 << 63)),
    ("0.100000000000000000000h", 6 * MINUTE),
    ("0.830103483285477580700h", 49 * MINUTE + 48 * SECOND + 372539827),
    ("720h", 720 * HOUR),
    ("1.5h", 90 * MINUTE),
    ("500ms", 500 * MILLISECOND),
]

INVALID = [
    "",
    "3",
    "-",
    "s",
    ".",
    "-.",
    ".s",
    "+.s",
    "1d",
    "1w",
    "1 h",
    "h1",
    "1hh",
    "9223372036854775808ns",
    "9223372036854775.808us",
    "-9223372036854775809ns",
    "1e3s",
    "0x10s",
    "1,5h",
    "\u0661s",
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[t for t, _ in VALID])
def test_parse_matches_go(text: str, expected: int) -> None:
    assert duration.parse(text) == expected


@pytest.mark.parametrize("text", INVALID, ids=repr)
def test_parse_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(duration.DurationError, match="not a valid duration"):
        duration.parse(text)


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (1100, "1.1\u00b5s"),
        (2200 * MICROSECOND, "2.2ms"),
        (3300 * MILLISECOND, "3.3s"),
        (4 * MINUTE + 5 * SECOND, "4m5s"),
        (4 * MINUTE + 5001 * MILLISECOND, "4m5.001s"),
        (5 * HOUR + 6 * MINUTE + 7001 * MILLISECOND, "5h6m7.001s"),
        (8 * MINUTE + 1, "8m0.000000001s"),
        ((1 << 63) - 1, "2562047h47m16.854775807s"),
        (-(1 << 63), "-2562047h47m16.854775808s"),
        (720 * HOUR, "720h0m0s"),
    ],
)
def test_format_matches_go_duration_string(nanoseconds: int, text: str) -> None:
    assert duration.format(nanoseconds) == text
    assert duration.parse(text) == nanoseconds


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (dt.timedelta(seconds=-2), "<invalid>"),
        (dt.timedelta(seconds=-1), "0s"),  # a second of clock skew is "now"
        (dt.timedelta(seconds=59), "59s"),
        (dt.timedelta(minutes=5, seconds=3), "5m"),
        (dt.timedelta(minutes=59, seconds=59), "59m"),
        (dt.timedelta(hours=2), "2h"),
        (dt.timedelta(hours=23, minutes=59), "23h"),
        (dt.timedelta(hours=30), "1d"),
        (dt.timedelta(days=364, hours=23), "364d"),
        (dt.timedelta(days=365), "1y"),
        (dt.timedelta(days=729), "1y"),
        (dt.timedelta(days=3650), "10y"),
    ],
)
def test_human_residual_time_reads_like_kubeadm(delta: dt.timedelta, text: str) -> None:
    assert duration.human(delta) == text
