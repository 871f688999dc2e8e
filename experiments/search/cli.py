"""`python -m experiments search`: an Optuna study tracked in MLflow (one parent run, one nested run per trial).

    python -m experiments search lr --trials 20
    python -m experiments search lr --trials 4 --trainer.max_epochs 2
    python -m experiments search regularization --base s1-mlp --workers 2
    python -m experiments search activation --trials 14 --pruner none
    python -m experiments search s3 --base s1-scratch --timeout 1800
    python -m experiments search lr --storage postgresql://user:pw@db/optuna   # many hosts
    python -m experiments search lr --sampler grid          # each of the space's values once
    python -m experiments search --grid model.lr=0.1,0.01 --grid model.net.activation=relu,selu
    python -m experiments search lr --enqueue lr=0.01 --enqueue lr=0.3    # these first
    python -m experiments search s3                          # one factor at a time (S3)

Built-in studies are the YAML files in experiments/configs/studies/ (lr, regularization,
activation, s3); other flags after the known ones override the base experiment, as with
`python -m experiments run`. Running the same command again resumes the study: finished
trials are kept, trials of killed workers are failed and run again, and the study stops
at exactly --trials COMPLETE+PRUNED trials, however many workers share it. A grid or
one-factor study runs each of its points once (--trials defaults to their number).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from experiments.errors import ConfigError
from experiments.search.launch import run_plan
from experiments.search.plan import make_plan


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    try:
        plan = make_plan(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_plan(plan, argv)
