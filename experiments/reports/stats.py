"""Mean and sample standard deviation over runs or seeds, shared by the report commands."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, sample std with n - 1) of `values`.

    A single value has no sample spread: its std is None, not 0 (displays show "-", no
    band, a zero-height error bar). No values at all: (nan, None).
    """
    if not values:
        return math.nan, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, statistics.stdev(values)
