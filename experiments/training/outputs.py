"""What a run records besides its params and metrics: output callbacks chosen by its purpose
(experiments/training/output_callbacks.py; their names and tags: docs/tracking.md).

A plain run has them all (`RUN`); a study trial its warnings and checkpoint (`TRIAL`), its
study logs the best trial's others once it ends; `search --trial-figures` gives trials all
but the model:

    python -m experiments run s1-mlp --register fashion-mlp        # a registry version
    python -m experiments search lr --trial-figures                # every trial's figures
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from experiments.errors import ConfigError

OUTPUTS = ("warnings_log", "checkpoint", "judgement", "figures", "model_summary", "model")


@dataclass(frozen=True)
class RunOutputs:
    """`names`: the outputs of the module's table the run writes, in that order.
    `log_model=False` leaves the model out of them. `register`: a registered model name the
    model becomes a new version of. `system_metrics_s`: sampling interval of MLflow's system
    metrics monitor (CPU, memory, disk, network, GPU where present: `system/*`), None: off.
    """

    names: tuple[str, ...] = OUTPUTS
    log_model: bool = True
    register: str | None = None
    system_metrics_s: float | None = 10.0

    def __post_init__(self) -> None:
        for name in self.names:
            if name not in OUTPUTS:
                from experiments.training.config import did_you_mean

                raise ConfigError(
                    f"unknown run output {name!r}; allowed: {', '.join(OUTPUTS)}"
                    + did_you_mean(name, list(OUTPUTS))
                )

    def callbacks(self, run: tuple[str, str] | None = None) -> list[Any]:
        """A fresh callback per output, into the Trainer's run (or `run`: URI, run id)."""
        from experiments.training.output_callbacks import OUTPUTS as CALLBACKS

        chosen = [n for n in OUTPUTS if n in self.names and (self.log_model or n != "model")]
        return [CALLBACKS[name](run, **self._init_args(name)) for name in chosen]

    def _init_args(self, name: str) -> dict[str, Any]:
        return {"register": self.register} if name == "model" else {}


def add_flags(parser: argparse.ArgumentParser, metrics_s: float | None = 10.0) -> None:
    """--register, --no-system-metrics, --system-metrics-interval (`run`; `search`, whose
    trials record no system metrics unless asked: `metrics_s` None)."""
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
        default=metrics_s,
        metavar="SECONDS",
        help="seconds between system metrics samples "
        + (f"(default {metrics_s:g})" if metrics_s else "(default: none recorded)"),
    )


def from_args(args: argparse.Namespace, names: tuple[str, ...] = OUTPUTS) -> RunOutputs:
    return RunOutputs(
        names=names,
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


RUN = RunOutputs()
TRIAL_NAMES = ("warnings_log", "checkpoint")  # a study trial's; no system metrics either
TRIAL = RunOutputs(names=TRIAL_NAMES, system_metrics_s=None)
TRIAL_FIGURES = OUTPUTS[:-1]  # search --trial-figures: all but the model
EVALUATION = RunOutputs(names=("warnings_log", "judgement", "figures", "model_summary"))
BEST_TRIAL = OUTPUTS[2:]  # the best trial's, once its study ends
