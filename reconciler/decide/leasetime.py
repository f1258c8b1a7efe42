"""When a Lease someone else holds may be taken: judged on time observed, never on what the
Lease says about itself.

A Lease carries its holder's ``renewTime`` and ``leaseDurationSeconds``, both written by
whoever can write the Lease: a wall clock that may be skewed, or a forgery (a ``renewTime`` in
the future, a duration of a year, a holder nobody knows). So, as client-go's leader election
does, a contender remembers when *it* first saw the Lease's current version (its
resourceVersion), on its own monotonic clock, and takes the Lease once that version has stood
unchanged for the holder's duration, **capped at the duration configured here**: a forged
Lease delays a take-over by one configured lease duration at most. A duration that is missing
or not a positive integer counts as the configured one (a correct holder never writes that).

Every contender of one Lease must therefore run with the same configured duration (they do:
one DaemonSet's flags). During a rolling update that lengthens it, an old contender judges a
new holder by the old, shorter duration: change it in two steps, or accept that window.

Pure: the caller measures ``unchanged_for`` and passes it in.
"""

from __future__ import annotations

import math


def duration(written: object, configured: float) -> float:
    """The lease duration to honour for a Lease whose ``leaseDurationSeconds`` is ``written``."""
    if isinstance(written, bool) or not isinstance(written, int) or written <= 0:
        return configured
    return min(float(written), configured)


def left(unchanged_for: float, written: object, configured: float) -> float:
    """Seconds until a held Lease that has stood unchanged for ``unchanged_for`` seconds may be
    taken; 0 or less: now. ``unchanged_for`` is NaN-safe (NaN counts as just seen)."""
    if math.isnan(unchanged_for):
        unchanged_for = 0.0
    return duration(written, configured) - unchanged_for
