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

Built-in studies, overrides of the base experiment, and how running the same command
again resumes the study (exactly --trials COMPLETE+PRUNED trials, however many workers):
docs/search.md.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from experiments.errors import Refused
from experiments.search.launch import run_plan
from experiments.search.plan import Plan, make_plan
from experiments.search.study import quiet_libraries
from experiments.tracking import store
from experiments.training import preflight


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    try:
        plan = make_plan(argv)
        if plan.check:
            return check(plan)
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_plan(plan, argv)


def check(plan: Plan) -> int:
    """`search --check`: the plan (space, base config, names) and every check of a run
    (experiments/training/preflight.py); no study, run, journal or folder is created."""
    quiet_libraries()
    found = preflight.check_run(plan.base_config, plan.tracking_uri, plan.outputs.register)
    print(
        f"ok: study {plan.study_name} ({plan.space.description}) on {plan.base}: space, base "
        f"config, Trainer, data, store and names checked; storage {store.redact(plan.storage_url)}"
    )
    for line in found:
        print(f"  {line}")
    print("nothing was created (--check)")
    return 0
