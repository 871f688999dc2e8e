"""`python -m experiments evaluate MODEL`: score a trained model on a test set, as an MLflow run.

    python -m experiments evaluate models:/fashion-mlp/1
    python -m experiments evaluate RUN_ID --data.data_dir /other/copy/of/fashion-mnist
    python -m experiments evaluate RUN_ID --data.superclass vehicles_1   # same classes count
    python -m experiments evaluate path/to/best.ckpt --config path/to/config.yaml
    python -m experiments evaluate RUN_ID --run-name recheck --tag owner=ana

The datamodule is rebuilt from the model's logged config (`--data.KEY VALUE` overrides
another copy of the data, another superclass, a subset); the test metrics, per-class
accuracy and confusion matrix come from the same LightningModule test step `run` uses, so on
the run's own test set `test/acc` is the run's. The evaluation is an MLflow run of its own
(tag `kind=evaluation`) in the dataset's experiment, linked to the model (a model input)
and to its training run (`evaluated_run_id`), with the same figures a run logs.
Exit codes: 0 done, 2 refused before anything was created, 1 failed after the run started.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence

from experiments import errors
from experiments.inference.reference import TrainedModel, model_parser, resolve
from experiments.tracking import datasets, health, labels, store
from experiments.training.runner import HEADLINE_METRICS


def build_parser() -> argparse.ArgumentParser:
    parser = model_parser("evaluate", __doc__)
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the model, its data and the store; create no evaluation run",
    )
    labels.add_label_flags(parser, "the evaluation run (default: evaluate-EXPERIMENT-DATASET)")
    return parser


def _open_evaluation_run(
    client, uri: str, trained: TrainedModel, run_name: str | None, user_tags: dict[str, str]
) -> str:
    """The evaluation run: tagged, its test split an input, the model an input."""
    from mlflow.entities import LoggedModelInput

    data = trained.data
    experiment_id = store.ensure_experiment(client, uri, data.dataset_name)
    tags = {
        "kind": "evaluation",
        "task": trained.cfg.task,
        "experiment": trained.cfg.name,
        "dataset": data.dataset_name,
        "evaluated_model": trained.reference,
        **({"evaluated_run_id": trained.run_id} if trained.run_id else {}),
        **({"evaluated_model_id": trained.model_id} if trained.model_id else {}),
        **{f"lineage.{k}": str(v) for k, v in data.lineage.items()},
        **store.environment_tags(),
        "mlflow.note.content": f"evaluation of {trained.reference} on {data.data_summary}",
        **user_tags,
    }
    if trained.run_id:
        source = client.get_run(trained.run_id).info.run_name
        tags["mlflow.note.content"] += f" (trained in run {source})"
    name = run_name or f"evaluate-{trained.cfg.name}-{data.dataset_name}"
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    datasets.log_split_inputs(client, run_id, data, splits=("test",))
    if trained.model_id:
        client.log_inputs(run_id, models=[LoggedModelInput(trained.model_id)])
    store.log_params(
        client, run_id, {k: v for k, v in trained.cfg.params().items() if k.startswith("data.")}
    )
    return run_id


def _test(trained: TrainedModel, uri: str, run_id: str, folder: str) -> list[dict]:
    """Lightning's test loop on one device, logging into the evaluation run."""
    import lightning as L

    from experiments.training.outputs import EVALUATION
    from experiments.training.runner import run_logger

    trainer = L.Trainer(
        callbacks=EVALUATION.callbacks(),
        accelerator=trained.cfg.trainer.get("accelerator") or "auto",
        devices=1,
        precision=trained.cfg.trainer.get("precision"),
        logger=run_logger(uri, run_id, trained.data.dataset_name),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_autolog_hparams=False,
        default_root_dir=folder,
    )
    return trainer.test(trained.model, datamodule=trained.data, verbose=False)


def evaluate(
    trained: TrainedModel,
    uri: str,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> tuple[str, dict[str, float]]:
    """Test `trained` on its datamodule's test split in a new evaluation run; (run id, metrics).
    The run gets a plain run's outputs but the checkpoint and the model (training/outputs.py)."""
    health.check_local_storage(uri)
    client = store.client(uri)
    run_id = _open_evaluation_run(client, uri, trained, run_name, tags or {})
    try:
        with tempfile.TemporaryDirectory() as folder:
            results = _test(trained, uri, run_id, folder)
        metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    except BaseException as exc:
        client.set_tag(run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id, metrics


def print_results(trained: TrainedModel, run_id: str, metrics: dict[str, float], uri: str) -> None:
    data = trained.data
    print(f"{trained.reference} on {data.dataset_name} test set ({len(data.test_x)} images)")
    for key in HEADLINE_METRICS:
        if key in metrics:
            print(f"  {key:<16} {metrics[key]:.4f}")
    print("  per class:")
    for name in data.class_names:
        value = metrics.get(f"test/class_acc/{name}")
        if value is not None:
            print(f"    {name:<28} {value:.4f}")
    print(f"\nMLflow evaluation run {run_id} (FINISHED) at {uri}")
    print(f"Open the UI: {store.ui_command(uri)}")


def main(argv: Sequence[str]) -> int:
    from experiments.training import console

    args, overrides = build_parser().parse_known_args(argv)
    uri = store.resolve_tracking_uri(args.tracking_uri)
    console.quiet_libraries(console.echo_warnings)
    try:
        run_name, tags = labels.check_run_name(args.run_name), labels.parse_tags(args.tag)
        trained = resolve(args.model, uri, data_overrides=overrides, config=args.config)
        if args.check:
            from experiments.training import preflight

            where = preflight.check_store(uri)
            print(f"ok: {args.model} on {trained.data.data_summary}; store {where}")
            print("nothing was created (--check)")
            return 0
        run_id, metrics = evaluate(trained, uri, run_name, tags)
    except errors.Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print_results(trained, run_id, metrics, uri)
    return 0
