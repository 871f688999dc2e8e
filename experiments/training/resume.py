"""Continue an interrupted run from its last checkpoint, into the same MLflow run.

    python -m experiments run --resume RUN_ID
    python -m experiments run --resume RUN_ID --tracking-uri sqlite:///elsewhere/mlflow.db

The run's own logged `config.yaml` rebuilds the model and data; training restarts from
`<store>/checkpoints/RUN_ID/last.ckpt` (weights, optimizer state, epoch and step counters),
so metrics continue on the same step axis. Everything is checked before the run is
reopened (what is refused: docs/faults-and-security.md).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.errors import CheckpointError, ConfigError
from experiments.tracking import health, store
from experiments.training import checkpoints, distributed
from experiments.training.config import ResolvedConfig, parse

#: Tags reset when a run is reopened (they described how it ended last time).
END_TAGS = ("failure_reason", "error", "end_reason")

#: Lineage keys that may differ between machines without the data being different.
LOCATION_KEYS = ("lineage.path", "lineage.source", "lineage.source_path")


@dataclass(frozen=True)
class ResumePoint:
    run_id: str
    checkpoint: Path
    epoch: int
    global_step: int


def load_run_config(client, run_id: str, overrides: Sequence[str] = ()) -> ResolvedConfig:
    """The resolved config a run logged as its `config.yaml` artifact (with `overrides`),
    named as the run's experiment (`s1-mlp`, its `experiment` tag), not as the file."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run_id, "config.yaml", folder)
        except Exception as exc:
            raise ConfigError(f"run {run_id} has no readable config.yaml artifact ({exc})") from exc
        cfg = parse(path, list(overrides))
    cfg.name = client.get_run(run_id).data.tags.get("experiment", cfg.name)
    return cfg


def prepare(run_id: str, uri: str) -> tuple[ResolvedConfig, ResumePoint]:
    """Check that run `run_id` can be resumed; its config and checkpoint. Changes nothing."""
    from mlflow.exceptions import MlflowException

    db = store.sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ConfigError(f"--resume {run_id}: there is no store at {uri} (no file {db})")
    health.check_tracking_server(uri)
    client = store.client(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(f"--resume {run_id}: no such run in {uri}") from exc
    status = run.info.status
    if not distributed.is_global_zero():
        status = "DDP"  # rank 0 checked and reopened the run; the other ranks just follow
    if status == "FINISHED":
        raise ConfigError(f"--resume {run_id}: the run is FINISHED; there is nothing to resume")
    if status == "RUNNING":
        state = health.process_state(run.data.tags)
        if state != "dead":
            owner = (
                f"process {run.data.tags.get(health.PID_TAG)} on "
                f"{run.data.tags.get(health.HOST_TAG)}"
            )
            raise ConfigError(
                f"--resume {run_id}: the run is RUNNING and its {owner} is "
                f"{'still alive' if state == 'alive' else 'not checkable from here'}; stop it "
                "first (resuming would write into the same run twice)"
            )
    checkpoint_path = store.checkpoint_dir(uri, run_id) / "last.ckpt"
    if not checkpoint_path.is_file():
        raise ConfigError(
            f"--resume {run_id}: no checkpoint at {checkpoint_path} (the run stopped before its "
            "first checkpoint); run the experiment again instead"
        )
    try:
        checkpoint = checkpoints.read_checkpoint(checkpoint_path, for_training=True)
    except CheckpointError as exc:  # refused before the run is reopened: nothing changed
        raise ConfigError(str(exc)) from exc
    cfg = load_run_config(client, run_id)
    return cfg, ResumePoint(
        run_id, checkpoint_path, int(checkpoint["epoch"]), int(checkpoint["global_step"])
    )


def check_same_data(run_tags: dict[str, str], lineage: dict) -> None:
    """Refuse to resume on data other than the run started with (checksums, split)."""
    changed = [
        f"{key}: was {run_tags[key]!r}, now {str(value)!r}"
        for key, value in ((f"lineage.{k}", v) for k, v in lineage.items())
        if key in run_tags and key not in LOCATION_KEYS and run_tags[key] != str(value)
    ]
    if changed:
        raise ConfigError(
            "the data differs from what the run started with, so it cannot be resumed: "
            + "; ".join(changed)
        )


def reopen(client, point: ResumePoint, previous_tags: dict[str, str], previous_status: str):
    """Mark the run RUNNING again, owned by this process, noting how it ended before."""
    count = int(previous_tags.get("resume_count", "0")) + 1
    reason = previous_tags.get("failure_reason") or previous_tags.get("end_reason") or ""
    for key in END_TAGS:
        if key in previous_tags:
            client.delete_tag(point.run_id, key)
    for key, value in {
        **health.process_tags(),
        "resume_count": str(count),
        f"resume.{count}": (
            f"from {previous_status}{f' ({reason})' if reason else ''} at epoch {point.epoch}, "
            f"step {point.global_step}"
        )[:5000],
    }.items():
        client.set_tag(point.run_id, key, value)
    client.update_run(point.run_id, status="RUNNING")
