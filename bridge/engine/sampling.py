"""Thin a series of (x, y) points for a plot: verify keeps a sample of both sides of a
mismatched stream, and the HTML reports draw samples. One rule for both."""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Points kept per side of a plotted stream, unless asked otherwise.
PLOT_POINTS = 500


def downsample(
    points: Sequence[Sequence[float]], limit: int = PLOT_POINTS
) -> list[tuple[float, float]]:
    """At most ``limit`` finite points, evenly spaced (first and last kept)."""
    finite = [
        (float(p[0]), float(p[1]))
        for p in points
        if math.isfinite(float(p[0])) and math.isfinite(float(p[1]))
    ]
    n = len(finite)
    if n <= limit:
        return finite
    idx = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [finite[i] for i in idx]
