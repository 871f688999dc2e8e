"""Benchmarks: commands that print measured figures and ratios side by side in one run.

python -m experiments bench accuracy [--quick]   # seed configs at full length, real data
python -m experiments bench speed [--quick] [--json]
python -m experiments bench search [--quick]     # Optuna workers and pruning
python -m experiments bench kernels [--busy]     # threads per model size; torch.compile
python -m experiments bench threads [--quick] [--json]   # the thread choice against fixed counts
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

BENCHMARKS = ("accuracy", "speed", "search", "kernels", "threads")


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(
            f"error: unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    return importlib.import_module(f"experiments.bench.{name}").main(rest)
