"""What a run records besides its params, metrics and figures, and the flags that choose it.

python -m experiments run s1-mlp --register fashion-mlp        # a registry version
python -m experiments run s1-mlp --system-metrics-interval 2   # system/* every 2 s
python -m experiments search lr --register fashion-mlp         # the best trial's model
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class RunOutputs:
    """`log_model`: the tested network as the run's LoggedModel (study trials skip it; the
    study logs its best trial's at the end). `register`: a registered model name the model
    becomes a new version of. `system_metrics_s`: sampling interval of MLflow's system
    metrics monitor (CPU, memory, disk, network, GPU where present: `system/*`), None: off.
    """

    log_model: bool = True
    register: str | None = None
    system_metrics_s: float | None = 10.0


def add_flags(parser: argparse.ArgumentParser) -> None:
    """--register, --no-system-metrics, --system-metrics-interval (`run` and `search`)."""
    parser.add_argument(
        "--register",
        metavar="NAME",
        help="register the trained model as a new version of NAME in the model registry",
    )
    parser.add_argument(
        "--no-system-metrics",
        action="store_true",
        help="do not record CPU, memory and GPU use (the system/* metrics)",
    )
    parser.add_argument(
        "--system-metrics-interval",
        type=_positive_seconds,
        default=RunOutputs.system_metrics_s,
        metavar="SECONDS",
        help=f"seconds between system metrics samples (default {RunOutputs.system_metrics_s:g})",
    )


def from_args(args: argparse.Namespace, *, log_model: bool = True) -> RunOutputs:
    return RunOutputs(
        log_model=log_model,
        register=args.register,
        system_metrics_s=None if args.no_system_metrics else args.system_metrics_interval,
    )


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


#: a run's default outputs, and a study trial's: no model (the study logs its best's)
RUN = RunOutputs()
TRIAL = RunOutputs(log_model=False)
