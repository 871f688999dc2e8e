"""Train, validate and test one experiment as one MLflow run.

    python -m experiments run s1-mlp                       # S1.2 on Fashion-MNIST
    python -m experiments run s4-mlp --model.activation swish --seed 1
    python -m experiments run --config best_trial.yaml     # a resolved config file

Order matters here: the config is validated, the data found and checked, and the model
built BEFORE the MLflow run is opened, so a typo or missing data never leaves an empty run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from experiments import tracking
from experiments.config import ConfigError, ResolvedConfig, parse

HEADLINE_METRICS = ("test/acc", "test/precision", "test/recall", "test/f1", "test/loss")


@dataclass
class RunResult:
    run_id: str
    experiment_name: str
    tracking_uri: str
    status: str
    test_metrics: dict[str, float] = field(default_factory=dict)
    best_checkpoint: str | None = None


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
) -> RunResult:
    """Run `cfg` end to end; the MLflow run ends FINISHED, FAILED or KILLED, never RUNNING."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, data = cfg.instantiate()
    # Finding and checking the data is part of validation: it happens before a run exists.
    try:
        data.prepare_data()
        data.setup("fit")
    except (FileNotFoundError, ValueError) as exc:  # DataNotFoundError, DataFormatError
        raise ConfigError(f"data: {exc}") from exc

    uri = tracking.resolve_tracking_uri(tracking_uri)
    client = tracking.client(uri)
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
        **(tags or {}),
    }
    run = client.create_run(
        experiment_id, run_name=run_name or f"{cfg.name}-seed{cfg.seed}", tags=run_tags
    )
    run_id = run.info.run_id
    result = RunResult(run_id, data.dataset_name, uri, "RUNNING")
    try:
        tracking.log_params(client, run_id, tracking.flatten(_params(cfg)))
        client.log_text(run_id, cfg.as_yaml(), "config.yaml")

        has_val = data.lineage.get("val_size", 1) not in (0, "0")
        checkpoint = ModelCheckpoint(
            dirpath=tracking.checkpoint_dir(uri, run_id),
            filename="best",
            monitor="val/acc" if has_val else None,
            mode="max",
            save_last=True,
        )
        trainer = L.Trainer(
            **cfg.values["trainer"],
            logger=_make_logger(uri, run_id, data.dataset_name),
            callbacks=[checkpoint, *callbacks],
            default_root_dir=str(tracking.checkpoint_dir(uri, run_id)),
        )
        trainer.fit(model, datamodule=data)
        best = checkpoint.best_model_path or None
        results = trainer.test(model, datamodule=data, ckpt_path=best, verbose=False)
        result.test_metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
        if best:
            client.log_artifact(run_id, best, "checkpoints")
            result.best_checkpoint = best
        client.set_terminated(run_id, "FINISHED")
        result.status = "FINISHED"
    except (KeyboardInterrupt, SystemExit) as exc:
        client.set_tag(run_id, "end_reason", f"interrupted ({type(exc).__name__})")
        client.set_terminated(run_id, "KILLED")
        result.status = "KILLED"
        raise
    except BaseException as exc:
        client.set_tag(run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(run_id, "FAILED")
        result.status = "FAILED"
        raise
    return result


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
    parser.add_argument("-h", "--help", action="store_true")
    args, overrides = parser.parse_known_args(argv)
    name = args.config or args.name
    if name is None:
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
        cfg = parse(name, list(overrides))
        result = run_experiment(cfg, args.tracking_uri)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(result)
    return 0
