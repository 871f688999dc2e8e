"""Train, validate and test one experiment as one MLflow run: `run_experiment(cfg)`.

Used by `python -m experiments run` (experiments/training/cli.py), the studies, the
activation comparison and the benchmarks. Order matters here: the config is validated,
the data found and checked, and the model built BEFORE the MLflow run is opened, so a
typo or missing data never leaves an empty run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments import errors
from experiments.tracking import datasets, health, outage, store
from experiments.training import distributed
from experiments.training.config import ResolvedConfig, prepare_data
from experiments.training.outputs import RUN, RunOutputs

if TYPE_CHECKING:
    from experiments.training.resume import ResumePoint


#: the test metrics a finished run (and an evaluation) prints, in this order
HEADLINE_METRICS = ("test/acc", "test/precision", "test/recall", "test/f1", "test/loss")


@dataclass
class RunResult:
    run_id: str
    experiment_name: str
    tracking_uri: str
    status: str
    test_metrics: dict[str, float] = field(default_factory=dict)
    best_checkpoint: str | None = None
    #: fit judgement "label (reason)" from the learning curves (experiments.tracking.judgement)
    judgement: str | None = None
    #: the LoggedModel of the tested network (`models:/<model_id>`), None if not logged
    model_id: str | None = None
    #: "NAME/VERSION" when the model was registered (`register=`)
    registered: str | None = None


def run_logger(uri: str, run_id: str, experiment_name: str):
    from lightning.pytorch.loggers import MLFlowLogger

    class RunLogger(MLFlowLogger):
        """Lightning's MLFlowLogger on the run the runner opened; the run's status is not its.

        Lightning calls `finalize("success")` when `fit` returns, before the test set is
        scored and the outputs (checkpoint, figures, model) are logged, and `finalize("failed")` for a
        Ctrl-C; either would close the run early or wrongly (tests/test_internals.py shows
        it). The runner ends the run FINISHED after the test, KILLED or FAILED otherwise.
        Everything else (params, metrics, the run id) is MLFlowLogger's own.
        """

        def finalize(self, status: str = "success") -> None:
            return None

    logger = RunLogger(
        experiment_name=experiment_name, tracking_uri=uri, run_id=run_id, save_dir=None
    )
    logger.uri = uri  # where the run's output callbacks write (training/outputs.py)
    return logger


def run_experiment(
    cfg: ResolvedConfig,
    tracking_uri: str | None = None,
    *,
    callbacks: Sequence[Any] = (),
    tags: dict[str, str] | None = None,
    run_name: str | None = None,
    verbose: bool = True,
    resume: ResumePoint | None = None,
    planned_stops: tuple[type[BaseException], ...] = (),
    outputs: RunOutputs = RUN,
) -> RunResult:
    """Run `cfg` end to end; the MLflow run ends FINISHED, FAILED or KILLED, never RUNNING.

    With `resume` (from `experiments.training.resume.prepare`), training continues from
    that checkpoint into the same MLflow run instead of creating a new one.
    `verbose`: say which data the run uses before it trains, and a line when it fails.
    `planned_stops`: exceptions that end the run KILLED as a planned early stop (tag
    `pruned_at_epoch`), not FAILED: a study passes Optuna's `TrialPruned`. They are raised on.
    `outputs`: what the run records besides its metrics, as callbacks (figures, model, ...),
    and the system metrics (`RunOutputs`, training/outputs.py).
    """
    import lightning as L
    import mlflow  # noqa: F401 (imported before its loggers are quieted: it sets them up)
    import torch

    from experiments.training import console, preflight, threads

    console.quiet_libraries(console.echo_warnings)
    uri = store.resolve_tracking_uri(tracking_uri)
    # The checks of `run --check`, all before the MLflow run exists (preflight.py).
    preflight.check_settings(cfg, uri, outputs.register)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, data = cfg.instantiate()
    preflight.check_data(data)
    prepare_data(data)
    if verbose and distributed.is_global_zero():
        print(data.data_summary, file=sys.stderr)  # which data the run uses
    # Threads: measured now (a short probe on copies) unless the config fixes them, then
    # recorded in the config (training/threads.py); a study worker has already lowered
    # torch's count to its share of the cores, which caps the choice.
    choice = threads.for_run(cfg, model, data, cap=torch.get_num_threads())
    cfg = threads.recorded(cfg, choice)
    callbacks = [*callbacks, *threads.callbacks(choice, data)]
    with threads.using(choice.threads):
        if not distributed.is_global_zero():
            # A DDP process launched by rank 0 (or on another node): it trains its shard and
            # joins every collective op; the run, its logging and its status are rank 0's.
            return _run_other_rank(
                cfg, model, data, uri, callbacks, resume.checkpoint if resume else None
            )
        run_tags = {**_run_tags(cfg, model, data, choice), **(tags or {})}
        client, run_id = _open_run(cfg, data, uri, run_tags, run_name, resume)
        return _run_tracked(
            cfg,
            model,
            data,
            client,
            uri,
            run_id,
            run_tags,
            callbacks,
            verbose,
            resume,
            planned_stops,
            outputs,
        )


def _run_tags(cfg: ResolvedConfig, model, data, choice) -> dict[str, str]:
    """What a run is (task, experiment, data lineage) and what produced it (code, host)."""
    return {
        "task": cfg.task,
        "experiment": cfg.name,
        "dataset": data.dataset_name,
        "model_family": model.family,
        "model_class": cfg.model_class_path,
        **({"net_class": cfg.net_class_path} if cfg.net_class_path else {}),
        "seed": str(cfg.seed),
        "mlflow.note.content": cfg.description,
        **{f"lineage.{k}": str(v) for k, v in data.lineage.items()},
        **store.environment_tags(),
        **health.process_tags(),
        "torch_threads": str(choice.threads),
        "torch_threads_reason": choice.reason,
    }


def _open_run(cfg, data, uri: str, run_tags, run_name, resume):
    """Check the store, then create the MLflow run (or reopen the one being resumed)."""
    from experiments.training import resume as resuming

    # Fail fast, before anything trains: an unreachable server, an unwritable store.
    health.check_tracking_server(uri)
    health.check_local_storage(uri)
    client = store.client(uri)
    health.mark_orphaned_runs(client, found_by=f"a run started in process {os.getpid()}")
    experiment_id = store.ensure_experiment(client, uri, data.dataset_name)
    if resume is None:
        run = client.create_run(
            experiment_id, run_name=run_name or f"{cfg.name}-seed{cfg.seed}", tags=run_tags
        )
        return client, run.info.run_id
    previous = client.get_run(resume.run_id)
    resuming.check_same_data(previous.data.tags, data.lineage)
    resuming.reopen(client, resume, previous.data.tags, previous.info.status)
    return client, resume.run_id


def _run_tracked(
    cfg,
    model,
    data,
    client,
    uri,
    run_id,
    run_tags,
    callbacks,
    verbose,
    resume,
    planned_stops,
    outputs: RunOutputs,
):
    """fit, test (the outputs are written by their callbacks, training/outputs.py) into run
    `run_id`; whatever happens, the run gets its final status."""
    from experiments.training.interrupts import InterruptHandler, interrupted_message, signal_name

    # DDP: the processes Lightning launches at `fit` inherit this and reuse the run.
    os.environ[distributed.RUN_ID_ENV] = run_id
    result = RunResult(run_id, data.dataset_name, uri, "RUNNING")
    # Ctrl-C / SIGTERM: stop at a batch boundary, save last.ckpt, end KILLED (interrupts.py).
    interrupts = InterruptHandler().install()
    monitor = trainer = None
    stack = contextlib.ExitStack()
    try:
        monitor = _system_metrics(uri, run_id, outputs.system_metrics_s, resumed=resume is not None)
        notice = stack.enter_context(outage.OutageNotice(uri))  # unreachable, then back
        written = outputs.callbacks()
        trainer, checkpoint = _make_trainer(cfg, data, uri, run_id, [*written, *callbacks], notice)
        if resume is None:  # a resumed run logged its params, config and datasets the first time
            trainer.logger.log_hyperparams(cfg.params())
            client.log_text(run_id, cfg.as_yaml(), "config.yaml")
            datasets.log_split_inputs(client, run_id, data)  # the UI's Dataset column
        ckpt_path = str(resume.checkpoint) if resume else None
        result.best_checkpoint, result.test_metrics = _fit_and_test(
            trainer, checkpoint, model, data, ckpt_path
        )
        for output in written:  # the judgement, the model id
            vars(result).update(output.found)
        if monitor is not None:  # its last sample before the run ends
            monitor.finish()
            monitor = None
        client.set_terminated(run_id, "FINISHED")
        result.status = "FINISHED"
    except (KeyboardInterrupt, SystemExit) as exc:
        by = f" by {signal_name(interrupts.signum)}" if interrupts.signum else ""
        _end(client, result, "KILLED", end_reason=f"interrupted{by} ({type(exc).__name__})")
        if run_tags.get("study_role") != "trial":  # a study retries its trials itself
            print(interrupted_message(run_id, uri), file=sys.stderr)
        raise
    except planned_stops as exc:
        # Optuna's pruning callback stopped `fit`: a planned early stop, not a failure.
        # The epoch is Lightning's 0-based index, as in the `epoch` metric and Optuna's step.
        epoch = str(trainer.current_epoch) if trainer is not None else "0"
        reason = str(exc) or "pruned by Optuna"
        _end(client, result, "KILLED", pruned_at_epoch=epoch, end_reason=reason)
        raise
    except BaseException as exc:
        if outage.is_outage(exc):  # the store is gone: telling it would wait another window
            monitor = None  # (its last flush too)
            raise _store_unreachable(uri, run_id, exc) from exc
        reason = errors.failure_reason(exc)
        _end(
            client,
            result,
            "FAILED",
            error=f"{type(exc).__name__}: {exc}"[:5000],
            failure_reason=reason,
        )
        if verbose:
            print(f"Run {run_id} marked FAILED ({reason})", file=sys.stderr)
        raise
    finally:
        if monitor is not None:
            monitor.finish()
        stack.close()
        interrupts.restore()
        os.environ.pop(distributed.RUN_ID_ENV, None)
    return result


def _store_unreachable(uri: str, run_id: str, exc: BaseException) -> errors.StoreUnreachable:
    from experiments.training.interrupts import resume_command

    last = store.checkpoint_dir(uri, run_id) / "last.ckpt"
    return errors.StoreUnreachable(
        outage.outage_message(uri, run_id, exc, last, resume_command(run_id, uri))
    )


def _system_metrics(uri: str, run_id: str, interval: float | None, *, resumed: bool):
    """MLflow's system metrics monitor on the run (`system/cpu_utilization_percentage`, ...),
    started, and run again after a store outage (tracking/system_metrics.py); None when off.
    A resumed run continues its steps (`resume_logging`)."""
    if interval is None:
        return None
    from experiments.tracking.system_metrics import KeptSystemMetrics

    monitor = KeptSystemMetrics(
        run_id, sampling_interval=interval, resume_logging=resumed, tracking_uri=uri
    )
    monitor.start()
    return monitor


def _fit_and_test(trainer, checkpoint, model, data, ckpt_path) -> tuple[str | None, dict]:
    """fit, then test the best checkpoint (the output callbacks write as the test ends);
    (the best checkpoint, the test metrics)."""
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    best = checkpoint.best_model_path or None
    tested = trainer.test(model, datamodule=data, ckpt_path=best, verbose=False, weights_only=True)
    return best, {k: float(v) for k, v in (tested[0] if tested else {}).items()}


def _end(client, result: RunResult, status: str, **tags: str) -> None:
    """Tag how the run ended and close it with `status` (KILLED or FAILED)."""
    for key, value in tags.items():
        client.set_tag(result.run_id, key, value)
    client.set_terminated(result.run_id, status)
    result.status = status


def _make_trainer(cfg: ResolvedConfig, data, uri: str, run_id: str | None, callbacks, notice=None):
    """The Trainer and its checkpoint callback; identical on every DDP rank (they must be)."""
    import lightning as L

    from experiments.training.callbacks import HookProfiler, ModelCheckpoint, RunGuard
    from experiments.training.checkpoints import AtomicCheckpointIO

    # Under DDP, ModelCheckpoint broadcasts rank 0's dirpath, so all ranks agree on it.
    folder = store.checkpoint_dir(uri, run_id or "unknown-run")
    has_val = data.lineage.get("val_size", 1) not in (0, "0")
    checkpoint = ModelCheckpoint(
        dirpath=folder,
        filename="best",
        monitor="val/acc" if has_val else None,
        mode="max",
        save_last=not has_val,
    )
    # last.ckpt at every epoch (what --resume continues from). Lightning's save_last only
    # writes it when best.ckpt improved, so a kill could cost every epoch since the best.
    latest = [ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False)]
    trainer = L.Trainer(
        # The cheap no-op profiler unless the config asks for one (callbacks.HookProfiler).
        **{**cfg.trainer, "profiler": cfg.trainer.get("profiler") or HookProfiler()},
        logger=run_logger(uri, run_id, data.dataset_name),
        # A non-finite loss stops training before a NaN checkpoint is written; a SIGTERM
        # saves last.ckpt; checkpoints are written atomically and loaded weights-only.
        callbacks=[
            checkpoint,
            *(latest if has_val else []),
            RunGuard(folder / "last.ckpt", notice),
            *callbacks,
            *_progress_bar(cfg),
        ],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(folder),
    )
    return trainer, checkpoint


def _run_other_rank(
    cfg: ResolvedConfig, model, data, uri: str, callbacks, ckpt_path=None
) -> RunResult:
    """fit and test as a DDP rank other than 0: no run is created, nothing is logged.

    Lightning's MLFlowLogger logs from rank 0 only; the test metrics are synced across
    ranks (torchmetrics on compute, `sync_dist` for losses), so they equal rank 0's.
    """
    from experiments.training import console

    run_id = distributed.shared_run_id()
    trainer, checkpoint = _make_trainer(cfg, data, uri, run_id, callbacks)
    # The warnings are rank 0's too, which logs them with the run: this rank's are dropped.
    with tempfile.TemporaryDirectory() as folder, console.warnings_to(Path(folder) / "w.log"):
        # The best checkpoint's path is the same on every rank (rank 0 wrote the file; the
        # ranks of one node share the folder, other nodes need it on a shared filesystem).
        best, metrics = _fit_and_test(trainer, checkpoint, model, data, ckpt_path)
    return RunResult(run_id or "", data.dataset_name, uri, "RUNNING", metrics, best)


def _progress_bar(cfg: ResolvedConfig) -> list[Any]:
    """Our throttled progress bar, unless the config turned the bar off."""
    if cfg.trainer.get("enable_progress_bar") is False:
        return []
    from experiments.training.progress import TrainingProgressBar

    return [TrainingProgressBar()]
