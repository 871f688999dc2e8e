"""Train, validate and test one experiment as one MLflow run.

    python -m experiments run s1-mlp                       # S1.2 on Fashion-MNIST
    python -m experiments run s4-mlp --model.activation swish --seed 1
    python -m experiments run --config best_trial.yaml     # a resolved config file

Order matters here: the config is validated, the data found and checked, and the model
built BEFORE the MLflow run is opened, so a typo or missing data never leaves an empty run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from experiments import distributed, tracking
from experiments.config import ConfigError, ResolvedConfig, parse

if TYPE_CHECKING:
    from experiments.resume import ResumePoint

HEADLINE_METRICS = ("test/acc", "test/precision", "test/recall", "test/f1", "test/loss")


@dataclass
class RunResult:
    run_id: str
    experiment_name: str
    tracking_uri: str
    status: str
    test_metrics: dict[str, float] = field(default_factory=dict)
    best_checkpoint: str | None = None
    #: fit judgement "label (reason)" from the learning curves (experiments.judgement)
    judgement: str | None = None


def _make_logger(uri: str, run_id: str, experiment_name: str):
    from lightning.pytorch.loggers import MLFlowLogger

    class RunLogger(MLFlowLogger):
        """MLFlowLogger that leaves the run's final status to the runner.

        Lightning's `finalize("failed")` on Ctrl-C would mark the run FAILED; the runner
        knows better (KILLED for an interrupt, FAILED for an error, FINISHED after test).
        """

        def finalize(self, status: str = "success") -> None:
            return None

        def log_hyperparams(self, params: Any) -> None:
            # The runner logs the resolved config itself as flat params; Lightning's own
            # copy of the model hparams would duplicate them under other names.
            return None

    return RunLogger(
        experiment_name=experiment_name, tracking_uri=uri, run_id=run_id, save_dir=None
    )


def run_experiment(
    cfg: ResolvedConfig,
    tracking_uri: str | None = None,
    *,
    callbacks: Sequence[Any] = (),
    tags: dict[str, str] | None = None,
    run_name: str | None = None,
    verbose: bool = True,
    resume: ResumePoint | None = None,
) -> RunResult:
    """Run `cfg` end to end; the MLflow run ends FINISHED, FAILED or KILLED, never RUNNING.

    With `resume` (from `experiments.resume.prepare`), training continues from that
    checkpoint into the same MLflow run instead of creating a new one.
    """
    import lightning as L
    import torch

    from experiments import threads

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, data = cfg.instantiate()
    # Finding and checking the data is part of validation: it happens before a run exists.
    try:
        data.prepare_data()
        data.setup("fit")
    except (FileNotFoundError, ValueError) as exc:  # DataNotFoundError, DataFormatError
        raise ConfigError(f"data: {exc}") from exc

    # Threads matched to the work per batch (see experiments/threads.py); a study worker has
    # already lowered torch's count to its share of the cores, which caps the choice.
    choice = threads.choose(
        cfg.threads, model.network, data.train_x[: data.batch_size], cap=torch.get_num_threads()
    )
    with threads.using(choice.threads):
        return _run_tracked(
            cfg, model, data, tracking_uri, choice, callbacks, tags, run_name, verbose, resume
        )


def _run_tracked(
    cfg: ResolvedConfig,
    model,
    data,
    tracking_uri: str | None,
    choice,
    callbacks: Sequence[Any],
    tags: dict[str, str] | None,
    run_name: str | None,
    verbose: bool,
    resume: ResumePoint | None,
) -> RunResult:
    from experiments import faults
    from experiments import resume as resuming

    uri = tracking.resolve_tracking_uri(tracking_uri)
    if not distributed.is_global_zero():
        # A DDP process launched by rank 0 (or on another node): it trains its shard and
        # joins every collective op; the run, its logging and its status are rank 0's.
        return _run_other_rank(
            cfg, model, data, uri, callbacks, resume.checkpoint if resume else None
        )
    # Fail fast, before anything trains: an unreachable server, an unwritable store.
    faults.check_tracking_server(uri)
    faults.check_local_storage(uri)
    client = tracking.client(uri)
    faults.mark_orphaned_runs(client, found_by=f"a run started in process {os.getpid()}")
    experiment_id = tracking.ensure_experiment(client, uri, data.dataset_name)
    run_tags = {
        "task": cfg.task,
        "experiment": cfg.name,
        "dataset": data.dataset_name,
        "model_family": model.family,
        "model_class": cfg.model_class_path,
        "seed": str(cfg.seed),
        "mlflow.note.content": cfg.values.get("description", ""),
        **{f"lineage.{k}": str(v) for k, v in data.lineage.items()},
        **tracking.environment_tags(),
        **faults.process_tags(),
        "torch_threads": str(choice.threads),
        "torch_threads_reason": choice.reason,
        **(tags or {}),
    }
    if resume is None:
        run = client.create_run(
            experiment_id, run_name=run_name or f"{cfg.name}-seed{cfg.seed}", tags=run_tags
        )
        run_id = run.info.run_id
    else:
        run_id = resume.run_id
        previous = client.get_run(run_id)
        resuming.check_same_data(previous.data.tags, data.lineage)
        resuming.reopen(client, resume, previous.data.tags, previous.info.status)
    # DDP: the processes Lightning launches at `fit` inherit this and reuse the run.
    os.environ[distributed.RUN_ID_ENV] = run_id
    result = RunResult(run_id, data.dataset_name, uri, "RUNNING")
    # Ctrl-C / SIGTERM: stop at a batch boundary, save last.ckpt, end KILLED (see faults).
    interrupts = faults.InterruptHandler().install()
    # MLFlowLogger calls mlflow.set_tracking_uri, which exports MLFLOW_TRACKING_URI; put it
    # back afterwards so one run does not change the default store of later commands.
    exported_uri = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        if resume is None:  # a resumed run logged its params and config the first time
            tracking.log_params(client, run_id, tracking.flatten(_params(cfg)))
            client.log_text(run_id, cfg.as_yaml(), "config.yaml")

        trainer, checkpoint = _make_trainer(cfg, data, uri, run_id, callbacks)
        trainer.fit(
            model,
            datamodule=data,
            ckpt_path=str(resume.checkpoint) if resume else None,
            weights_only=True,
        )
        best = checkpoint.best_model_path or None
        results = trainer.test(
            model, datamodule=data, ckpt_path=best, verbose=False, weights_only=True
        )
        result.test_metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
        if best:
            client.log_artifact(run_id, best, "checkpoints")
            result.best_checkpoint = best
        from experiments.run_artifacts import log_run_artifacts

        judgement = log_run_artifacts(client, run_id, model, data)
        result.judgement = None if judgement is None else str(judgement)
        client.set_terminated(run_id, "FINISHED")
        result.status = "FINISHED"
    except (KeyboardInterrupt, SystemExit) as exc:
        by = f" by {faults.signal_name(interrupts.signum)}" if interrupts.signum else ""
        client.set_tag(run_id, "end_reason", f"interrupted{by} ({type(exc).__name__})")
        client.set_terminated(run_id, "KILLED")
        result.status = "KILLED"
        if run_tags.get("study_role") != "trial":  # a study retries its trials itself
            print(faults.interrupted_message(run_id, uri), file=sys.stderr)
        raise
    except _trial_pruned() as exc:
        # Optuna's pruning callback stopped `fit`: a planned early stop, not a failure.
        # The epoch is Lightning's 0-based index, as in the `epoch` metric and Optuna's step.
        client.set_tag(run_id, "pruned_at_epoch", str(trainer.current_epoch))
        client.set_tag(run_id, "end_reason", str(exc) or "pruned by Optuna")
        client.set_terminated(run_id, "KILLED")
        result.status = "KILLED"
        raise
    except BaseException as exc:
        client.set_tag(run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_tag(run_id, "failure_reason", faults.failure_reason(exc))
        client.set_terminated(run_id, "FAILED")
        result.status = "FAILED"
        if verbose:
            print(f"Run {run_id} marked FAILED ({faults.failure_reason(exc)})", file=sys.stderr)
        raise
    finally:
        interrupts.restore()
        os.environ.pop(distributed.RUN_ID_ENV, None)
        if exported_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = exported_uri
    return result


def _make_trainer(cfg: ResolvedConfig, data, uri: str, run_id: str | None, callbacks):
    """The Trainer and its checkpoint callback; identical on every DDP rank (they must be)."""
    import lightning as L

    from experiments import faults

    # Under DDP, ModelCheckpoint broadcasts rank 0's dirpath, so all ranks agree on it.
    folder = tracking.checkpoint_dir(uri, run_id or "unknown-run")
    has_val = data.lineage.get("val_size", 1) not in (0, "0")
    checkpoint = faults.RunCheckpoint(
        dirpath=folder,
        filename="best",
        monitor="val/acc" if has_val else None,
        mode="max",
        save_last=not has_val,
    )
    # last.ckpt at every epoch (what --resume continues from). Lightning's save_last only
    # writes it when best.ckpt improved, so a kill could cost every epoch since the best.
    latest = [faults.RunCheckpoint(dirpath=folder, filename="last", enable_version_counter=False)]
    trainer = L.Trainer(
        **cfg.values["trainer"],
        logger=_make_logger(uri, run_id, data.dataset_name),
        # A non-finite loss stops training before a NaN checkpoint is written; a SIGTERM
        # saves last.ckpt; checkpoints are written atomically and loaded weights-only.
        callbacks=[
            checkpoint,
            *(latest if has_val else []),
            faults.RunGuard(folder / "last.ckpt"),
            *callbacks,
            *_progress_bar(cfg),
        ],
        plugins=[faults.AtomicCheckpointIO()],
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
    run_id = distributed.shared_run_id()
    trainer, checkpoint = _make_trainer(cfg, data, uri, run_id, callbacks)
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    # The best checkpoint's path is the same on every rank (rank 0 wrote the file; the
    # ranks of one node share the folder, other nodes need it on a shared filesystem).
    best = checkpoint.best_model_path or None
    results = trainer.test(model, datamodule=data, ckpt_path=best, verbose=False, weights_only=True)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    return RunResult(run_id or "", data.dataset_name, uri, "RUNNING", metrics, best)


class _NeverRaised(Exception):
    pass


def _trial_pruned() -> type[Exception]:
    """optuna.TrialPruned when Optuna is loaded (only a study raises it), without importing it."""
    optuna = sys.modules.get("optuna")
    return optuna.TrialPruned if optuna is not None else _NeverRaised


def _progress_bar(cfg: ResolvedConfig) -> list[Any]:
    """Our throttled progress bar, unless the config turned the bar off."""
    if cfg.values["trainer"].get("enable_progress_bar") is False:
        return []
    from experiments.progress import TrainingProgressBar

    return [TrainingProgressBar()]


def _params(cfg: ResolvedConfig) -> dict[str, Any]:
    """The resolved config as params, without Trainer keys left at None (noise in the UI)."""
    values = dict(cfg.values)
    values["trainer"] = {k: v for k, v in values["trainer"].items() if v is not None}
    values["model"] = {"class_path": cfg.model_class_path, **values["model"]}
    values["data"] = {"class_path": cfg.data_class_path, **values["data"]}
    values.pop("description", None)
    return values


def print_summary(result: RunResult) -> None:
    print()
    for key in HEADLINE_METRICS:
        if key in result.test_metrics:
            print(f"  {key:<16} {result.test_metrics[key]:.4f}")
    if result.judgement:
        print(f"  fit judgement    {result.judgement}")
    print(
        f"\nMLflow run {result.run_id} ({result.status}) in experiment "
        f"'{result.experiment_name}' at {result.tracking_uri}"
    )
    print(f"Open the UI: {tracking.ui_command(result.tracking_uri)}")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments run",
        description="Run one experiment from the catalog (see `python -m experiments list`).",
        epilog="Overrides are dotted flags, e.g. --trainer.max_epochs 2 --model.lr 0.01 "
        "--data.batch_size 32 --seed 1. `run NAME --help` lists every key of NAME.",
        add_help=False,
    )
    parser.add_argument("name", nargs="?", help="catalog name (s1-mlp) or a YAML file")
    parser.add_argument("--config", help="a resolved config YAML (as logged with every run)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store)")
    parser.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue an interrupted run from its last checkpoint, into the same MLflow run",
    )
    parser.add_argument("-h", "--help", action="store_true")
    args, overrides = parser.parse_known_args(argv)
    name = args.config or args.name
    if args.resume and (name or overrides):
        print(
            "error: --resume RUN_ID takes no experiment, --config or overrides: the run's "
            f"logged config.yaml is used (got {' '.join([*filter(None, [name]), *overrides])})",
            file=sys.stderr,
        )
        return 2
    if name is None and (args.help or not args.resume):
        parser.print_help()
        return 0 if args.help else 2
    if args.name and args.config:
        print("error: give either NAME or --config FILE, not both", file=sys.stderr)
        return 2
    try:
        if args.help:
            from experiments.config import build_parser, import_class, load_yaml, resolve_experiment

            raw = load_yaml(resolve_experiment(name))
            build_parser(
                import_class(raw["model"]["class_path"], "model.class_path"),
                import_class(raw["data"]["class_path"], "data.class_path"),
            ).print_help()
            return 0
        point = None
        if args.resume:
            from experiments import resume

            uri = tracking.resolve_tracking_uri(args.tracking_uri)
            cfg, point = resume.prepare(args.resume, uri)
        else:
            cfg = parse(name, list(overrides))
        result = run_experiment(cfg, args.tracking_uri, resume=point)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit):
        # The run is marked KILLED and the resume command printed; exit as a shell would
        # for the signal (130 for Ctrl-C, 143 for SIGTERM), never 0.
        faults = sys.modules.get("experiments.faults")
        signum = faults.last_signal() if faults is not None else None
        return 128 + int(signum or signal.SIGINT)
    except Exception as exc:
        # Diverged training or a checkpoint that could not be written: a clear message,
        # not a traceback (the run is already marked FAILED with a failure_reason tag).
        if getattr(exc, "reason", None) not in ("non_finite_loss", "checkpoint_write"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if distributed.is_global_zero():  # other DDP ranks would print the same summary again
        print_summary(result)
    return 0
