"""Go-style durations (``720h``, ``1h30m``, ``1.5h``, ``90s``, ``500ms``).

The policy and the seed flags of the original kucero use Go's ``time.Duration`` syntax, so
operators can copy values between Kubernetes manifests and our policy. ``parse`` accepts
exactly what Go's ``time.ParseDuration`` accepts and returns integer nanoseconds (Go's own
unit, so ``1.5h`` and ``90m`` compare equal without float error); ``format`` is Go's
``Duration.String``.

Edge cases Go defines and we keep: ``"0"`` is the only unit-less value; ``".5h"`` and ``"5.h"``
are valid but ``".h"`` is not; a sign applies to the whole string; values beyond
``2**63 - 1`` nanoseconds overflow and are errors.
"""

from __future__ import annotations

import datetime as dt

NANOSECOND = 1
MICROSECOND = 1_000 * NANOSECOND
MILLISECOND = 1_000 * MICROSECOND
SECOND = 1_000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

# Go's time.Duration is an int64 of nanoseconds.
_MAX = (1 << 63) - 1

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # U+00B5 micro sign
    "\u03bcs": MICROSECOND,  # U+03BC Greek small letter mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}


class DurationError(ValueError):
    """The text is not a Go duration."""


def parse(text: str) -> int:
    """Parse a Go duration into nanoseconds, exactly like ``time.ParseDuration``."""
    if not isinstance(text, str):
        raise DurationError(f"{text!r} is not a valid duration")
    original = text
    negative = False
    if text[:1] in ("-", "+"):
        negative = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise DurationError(f"{original!r} is not a valid duration")
    total = 0
    while text:
        # The leading number: digits, optionally a dot and more digits.
        i = 0
        while i < len(text) and text[i].isascii() and text[i].isdigit():
            i += 1
        whole_digits = text[:i]
        frac_digits = ""
        if i < len(text) and text[i] == ".":
            j = i + 1
            while j < len(text) and text[j].isascii() and text[j].isdigit():
                j += 1
            frac_digits = text[i + 1 : j]
            i = j
        if not whole_digits and not frac_digits:
            raise DurationError(f"{original!r} is not a valid duration")
        text = text[i:]
        # The unit: everything up to the next digit or dot.
        k = 0
        while k < len(text) and text[k] != "." and not (text[k].isascii() and text[k].isdigit()):
            k += 1
        unit_name = text[:k]
        text = text[k:]
        if not unit_name:
            raise DurationError(f"{original!r} is not a valid duration: missing unit")
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise DurationError(f"{original!r} is not a valid duration: unknown unit {unit_name!r}")
        value = int(whole_digits or "0")
        if value > (1 << 63) // unit:
            raise DurationError(f"{original!r} is not a valid duration: overflow")
        value *= unit
        if frac_digits:
            value += _fraction(frac_digits, unit)
        total += value
        if total > _MAX + (1 if negative else 0):
            raise DurationError(f"{original!r} is not a valid duration: overflow")
    return -total if negative else total


def _fraction(digits: str, unit: int) -> int:
    """Go's fraction arithmetic: at most the digits that fit an int64, then one float64
    multiplication (so ``0.3333333333333333333h`` is exactly 20m, as in Go)."""
    mantissa, scale = 0, 1.0
    for c in digits:
        if mantissa > _MAX // 10:
            break  # Go ignores digits beyond int64 precision
        mantissa = mantissa * 10 + int(c)
        scale *= 10
    return int(float(mantissa) * (float(unit) / scale))


def format(nanoseconds: int) -> str:
    """Format nanoseconds like Go's ``Duration.String`` (``720h0m0s``, ``1.5s``, ``500ms``)."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    n = abs(nanoseconds)
    if n < SECOND:
        for unit, size in (("ms", MILLISECOND), ("\u00b5s", MICROSECOND), ("ns", NANOSECOND)):
            if n >= size:
                return sign + _decimal(n, size) + unit
    hours, rest = divmod(n, HOUR)
    minutes, rest = divmod(rest, MINUTE)
    seconds = _decimal(rest, SECOND) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    width = len(str(unit)) - 1
    return f"{whole}.{str(frac).rjust(width, '0').rstrip('0')}"


def to_timedelta(nanoseconds: int) -> dt.timedelta:
    return dt.timedelta(microseconds=nanoseconds // MICROSECOND)


def parse_timedelta(text: str) -> dt.timedelta:
    return to_timedelta(parse(text))


def human(delta: dt.timedelta) -> str:
    """A short residual time exactly like kubeadm's table (apimachinery's
    ``ShortHumanDuration``): ``59s``, ``45m``, ``23h``, ``364d``, ``1y``, ``<invalid>``."""
    seconds = int(delta.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    hours = seconds // 3600
    if hours < 24:
        return f"{hours}h"
    if hours < 24 * 365:
        return f"{hours // 24}d"
    return f"{hours // (24 * 365)}y"
