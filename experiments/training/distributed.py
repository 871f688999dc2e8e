"""Which process of a multi-process (DDP) run this is, known before the Trainer exists.

Only global rank 0 creates the MLflow run, logs to it and sets its final status
(docs/scaling-out.md); it exports the run id in RUN_ID_ENV before `fit`, so the processes
Lightning starts at `fit` (by running the same command again) know it.
"""

from __future__ import annotations

import os

#: the MLflow run id of a DDP run, exported by rank 0 for the processes it launches.
RUN_ID_ENV = "EXPERIMENTS_DDP_RUN_ID"

# Every variable a launcher uses to number processes (Lightning's subprocess launcher,
# torchrun, SLURM, LSF). Global rank 0 has each of those that are set equal to 0.
RANK_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "SLURM_PROCID",
    "JSM_NAMESPACE_RANK",
)


def is_global_zero() -> bool:
    """False in any process a launcher numbered other than 0 (another device or node)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "0").strip() or "0"
        try:
            if int(value) != 0:
                return False
        except ValueError:
            continue  # not a number: not set by a launcher we know
    return True


def shared_run_id() -> str | None:
    """The run id rank 0 exported (None on other nodes, which need not know it)."""
    return os.environ.get(RUN_ID_ENV) or None
