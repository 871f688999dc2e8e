"""A run's trained network: logged as its MLflow model, registered, or rebuilt from the run.

`log_model` is what a run's `model` output does once tested (training/outputs.py);
`log_outputs_of_run` is how a study logs its best trial's figures and model once it ends
(`python -m experiments search lr --trials 8 --register fashion-mlp`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from experiments.errors import CheckpointError, ConfigError
from experiments.tracking import logged_model, store
from experiments.training import checkpoints
from experiments.training.config import ResolvedConfig, prepare_data


def log_model(network, data, uri: str, run_id: str, register: str | None) -> tuple[str, str | None]:
    """Log the tested `network` as run `run_id`'s LoggedModel (with its test metrics) and,
    with `register`, add it as a new version of that registered model; (model id, "NAME/N")."""
    client = store.client(uri)
    history = client.get_metric_history(run_id, "test/acc")
    tags = client.get_run(run_id).data.tags
    task = tags.get("task", "")
    info = logged_model.log_trained_model(
        uri,
        run_id,
        network,
        data,
        task=task,
        # Lightning logs the test metrics at the run's last step: the model's step
        test_step=history[-1].step if history else 0,
        tags={"experiment": tags.get("experiment", ""), "task": task},
    )
    registered = register_model(uri, register, info.model_id, run_id) if register else None
    return info.model_id, registered


def register_model(uri: str, name: str, model_id: str, run_id: str) -> str:
    """A new version of registered model `name` for LoggedModel `model_id` of run `run_id`,
    tagged with the run's task, experiment, dataset and test accuracy; "NAME/VERSION"."""
    client = store.client(uri)
    run = client.get_run(run_id)
    tags = {key: run.data.tags.get(key, "") for key in ("task", "experiment", "dataset")}
    tags["test_acc"] = f"{run.data.metrics.get('test/acc', float('nan')):.4f}"
    version = logged_model.register(uri, name, model_id, tags)
    return f"{version.name}/{version.version}"


def load_run_model(
    client, run_id: str, data_overrides: Sequence[str] = ()
) -> tuple[ResolvedConfig, Any, Any]:
    """(config, model with the run's best weights, set-up datamodule) of a finished run.

    Reads the run's `config.yaml` and the checkpoint among its `checkpoints/` artifacts
    (weights only: no pickled code runs); ConfigError names what is missing. With
    `data_overrides` (`--data.KEY VALUE` flags) the datamodule is another one, e.g. another
    copy of the data or another superclass, for a model of the same input and classes.
    """
    from experiments.training.resume import load_run_config

    names = [
        a.path for a in client.list_artifacts(run_id, "checkpoints") if a.path.endswith(".ckpt")
    ]
    if not names:
        raise ConfigError(f"run {run_id} has no checkpoint among its artifacts (checkpoints/)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(client.download_artifacts(run_id, sorted(names)[0], folder))
        return rebuild(
            lambda overrides: load_run_config(client, run_id, overrides), path, data_overrides
        )


def rebuild(
    load_config: Callable[[Sequence[str]], ResolvedConfig],
    checkpoint: Path,
    data_overrides: Sequence[str] = (),
) -> tuple[ResolvedConfig, Any, Any]:
    """(config, model with the checkpoint's weights, set-up datamodule): the model from the
    config as trained (`load_config(())`), the data from it with `data_overrides`, which
    must keep the trained input shape and classes."""
    cfg = load_config(())
    model, data = load_checkpoint_model(cfg, checkpoint)
    if data_overrides:
        cfg = load_config(data_overrides)
        data = same_task_data(cfg, data)
    prepare_data(data)
    data.setup("test")
    return cfg, model, data


def load_checkpoint_model(cfg: ResolvedConfig, checkpoint: Path) -> tuple[Any, Any]:
    """The config's model with the checkpoint's weights (in eval mode), and its datamodule."""
    model, data = cfg.instantiate()
    try:
        state = checkpoints.read_checkpoint(checkpoint)["state_dict"]
    except CheckpointError as exc:  # refused, as bad input is: nothing was created
        raise ConfigError(str(exc)) from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # the weights are another network's
        detail = " ".join(str(exc).split())[:300]
        raise ConfigError(
            f"checkpoint {checkpoint} does not fit the config's model ({detail})"
        ) from exc
    return model.eval(), data


def same_task_data(cfg: ResolvedConfig, trained_on) -> Any:
    """The datamodule of `cfg`, refused unless its input shape and classes are the ones the
    model was trained on (`trained_on`: the run's own datamodule)."""
    data = cfg.instantiate()[1]
    before = (tuple(trained_on.input_shape), trained_on.num_classes)
    after = (tuple(data.input_shape), data.num_classes)
    if after != before:
        raise ConfigError(
            f"the data overrides give {data.num_classes} classes of input "
            f"{'x'.join(map(str, data.input_shape))}; the model was trained on "
            f"{trained_on.num_classes} classes of input {'x'.join(map(str, trained_on.input_shape))}"
        )
    return data


def log_outputs_of_run(uri: str, run_id: str, outputs) -> dict[str, Any]:
    """The `outputs` (a RunOutputs) of a finished run, written by testing its logged config
    and best checkpoint again with their callbacks; nothing else is logged to the run (the
    test metrics are the ones it has). What the outputs found (judgement, model id)."""
    import warnings

    import lightning as L

    from experiments.training.interrupts import InterruptHandler

    cfg, model, data = load_run_model(store.client(uri), run_id)
    callbacks = outputs.callbacks(run=(uri, run_id))
    # The run's own test kept its warnings; this one's are the same again.
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = L.Trainer(
            accelerator=cfg.trainer.get("accelerator") or "auto",
            devices=1,
            logger=False,
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=folder,
        )
        # Ctrl-C stops it as it stops a run (a SIGTERM at a batch boundary), not through
        # Lightning's own KeyboardInterrupt path, which exits with code 1.
        interrupts = InterruptHandler().install()
        try:
            trainer.test(model, datamodule=data, verbose=False)
        finally:
            interrupts.restore()
    return {k: v for c in callbacks for k, v in c.found.items()}
