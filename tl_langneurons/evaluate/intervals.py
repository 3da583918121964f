"""Interval estimates of rates."""

import math

from .. import _checks
from ..errors import LangNeuronsError

_Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson(k, n, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (default 95%); ``(nan, nan)`` if n = 0."""
    if not (_checks.is_int(k) and _checks.is_int(n)) or n < 0 or not 0 <= k <= n:
        raise LangNeuronsError(f"wilson needs integers 0 ≤ k ≤ n, got k={k!r}, n={n!r}")
    if n == 0:
        return math.nan, math.nan
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # the interval always holds p (its bound is exactly 0 at k = 0 and 1 at k = n); clamping to p
    # removes the rounding that would leave it a hair outside (e.g. a lower bound of 3e-17 at k = 0)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))
