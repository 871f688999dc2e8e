"""`python -m experiments model-summary NAME`: an experiment's layer table, without training.

    python -m experiments model-summary s1-cnn
    python -m experiments model-summary s2-cnn --model.net.kernel_size 3 --model.net.padding 1

The same table every run logs as `model_summary.txt` (experiments/tracking/model_summary.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from experiments.errors import ConfigError
from experiments.tracking.model_summary import format_shape, format_summary, summarize
from experiments.training.config import parse


def main(argv: Sequence[str]) -> int:
    """Print the summary of a catalog experiment's network (overrides as for `run`)."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m experiments model-summary NAME [--model.KEY VALUE ...]")
        return 0 if argv else 2
    try:
        model, data = parse(argv[0], list(argv[1:])).instantiate()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{type(model.network).__name__} on input {format_shape(tuple(data.input_shape))}")
    print(format_summary(summarize(model.network, data.input_shape)), end="")
    return 0
