"""What MODEL names, resolved: a run id, `runs:/RUN_ID[/model]`, `models:/NAME/VERSION`,
`models:/m-...`, or a local checkpoint with its run's `config.yaml` beside it.

Whatever the form, the network is rebuilt from the run's logged `config.yaml` and its best
checkpoint (weights only), so `evaluate` scores it with the very code `run` tested it with; a
models:/ reference then gets that model's own weights (or is refused), never the run's
instead. A logged model is checked before anything of it is loaded
(`tracking.model_checks`: pt2 only, nothing that would unpickle). Every failure is a
ConfigError in words, raised before anything is created.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError
from experiments.tracking import model_checks, store
from experiments.training import trained
from experiments.training.config import ResolvedConfig, did_you_mean, parse

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def model_parser(
    command: str, description: str | None, *, checkpoints: bool = True
) -> argparse.ArgumentParser:
    """The parser of `python -m experiments COMMAND` with every inference command's arguments:
    MODEL, --config (for a local checkpoint) and --tracking-uri."""
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments {command}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = "run id, runs:/..., models:/..." + (", or a .ckpt file" if checkpoints else "")
    parser.add_argument("model", metavar="MODEL", help=kinds)
    if checkpoints:
        parser.add_argument("--config", help="the config.yaml of a local checkpoint")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store)")
    return parser


@dataclass
class TrainedModel:
    """A trained model ready to use: its config, the LightningModule with its weights (eval
    mode), the set-up datamodule, and where it came from."""

    reference: str  # what the user wrote
    cfg: ResolvedConfig
    model: Any
    data: Any
    run_id: str | None = None  # the training run, when the model came from a store
    model_id: str | None = None  # its LoggedModel, when it has one
    model_uri: str | None = None  # models:/... (what `serve` and MLflow load)
    uri: str | None = None  # the store it came from


def resolve(
    reference: str,
    uri: str,
    *,
    data_overrides: Sequence[str] = (),
    config: str | None = None,
) -> TrainedModel:
    """The model `reference` names, with its data (`data_overrides`: `--data.KEY VALUE`)."""
    bad = [
        flag for flag in data_overrides if flag.startswith("--") and not flag.startswith("--data.")
    ]
    if bad:
        raise ConfigError(
            f"only --data.KEY VALUE overrides are allowed here (got {' '.join(bad)}): the model "
            "is the trained one"
        )
    path = Path(reference)
    if reference.endswith(".ckpt") or path.is_file():
        return _from_checkpoint(reference, path, config, data_overrides)
    if config is not None:
        raise ConfigError("--config FILE goes with a local checkpoint, not with a run or model")
    run_id, model_id = _run_of(reference, uri)
    client = store.client(uri)
    named = model_id is not None  # models:/...: that model's own weights, or a refusal
    model_id = model_id or _logged_model_of(client, run_id)
    if model_id:  # read before anything of it is loaded
        model_checks.check_loadable(uri, model_id, reference)
    cfg, model, data = trained.load_run_model(client, run_id, data_overrides)
    if named:
        _use_logged_weights(model, uri, model_id, reference)
    model_uri = f"models:/{model_id}" if model_id else None
    return TrainedModel(reference, cfg, model, data, run_id, model_id, model_uri, uri)


def _use_logged_weights(model, uri: str, model_id: str, reference: str) -> None:
    """Put LoggedModel `model_id`'s own weights into `model` (rebuilt from its run's config),
    so a models:/ reference is scored with that model's weights and never the run's
    checkpoint's instead; refused when they do not fit. The model was checked to be pt2."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    logged = mlflow.pytorch.load_model(f"models:/{model_id}")  # ClassProbabilities(network)
    prefix = "network."
    state = {
        key.removeprefix(prefix): value
        for key, value in logged.state_dict().items()
        if key.startswith(prefix)
    }
    try:
        model.network.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ConfigError(
            f"{reference}: its weights do not fit the network of its training run's config "
            f"({detail}); it is not scored with any other weights"
        ) from exc
    model.eval()


def _from_checkpoint(reference: str, path: Path, config: str | None, overrides) -> TrainedModel:
    if not path.is_file():
        raise ConfigError(f"{reference}: no such checkpoint file")
    config_path = Path(config) if config else path.parent / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(
            f"{reference}: no config.yaml beside the checkpoint ({config_path}); pass the run's "
            "config with --config FILE (every run logs it as its config.yaml artifact)"
        )
    cfg, model, data = trained.rebuild(
        lambda flags: parse(str(config_path), list(flags)), path, overrides
    )
    return TrainedModel(reference, cfg, model, data)


def _run_of(reference: str, uri: str) -> tuple[str, str | None]:
    """(training run id, LoggedModel id or None) of a run id, runs:/ or models:/ reference."""
    from mlflow.exceptions import MlflowException

    from experiments.tracking import health

    store.check_kind(uri)
    db = store.sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ConfigError(f"{reference}: there is no store at {uri} (no file {db})")
    health.check_tracking_server(uri)
    client = store.client(uri)
    if reference.startswith("models:/"):
        return _registered(client, reference, uri)
    run_id = reference.removeprefix("runs:/").split("/")[0]
    if not RUN_ID.match(run_id):
        raise ConfigError(
            f"{reference!r} is not a model reference: give a run id (32 hex digits), "
            "runs:/RUN_ID, models:/NAME/VERSION, models:/m-ID, or a .ckpt file"
        )
    try:
        client.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(f"{reference}: no run {run_id} in {uri}") from exc
    return run_id, None


def _registered(client, reference: str, uri: str) -> tuple[str, str | None]:
    from mlflow.exceptions import MlflowException

    rest = reference.removeprefix("models:/")
    if rest.startswith("m-") and "/" not in rest:
        try:
            logged = client.get_logged_model(rest)
        except MlflowException as exc:
            raise ConfigError(f"{reference}: no logged model {rest} in {uri}") from exc
        return logged.source_run_id, logged.model_id
    name, _, version = rest.partition("/")
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        raise ConfigError(f"{reference}: {exc.message}") from exc
    if not versions:
        known = sorted(m.name for m in client.search_registered_models())
        hint = did_you_mean(name, known)
        listed = f" (registered: {', '.join(known)})" if known else " (none is registered)"
        raise ConfigError(f"{reference}: no registered model {name!r}{hint}{listed}")
    chosen = next((v for v in versions if str(v.version) == version), None)
    if chosen is None:
        numbers = ", ".join(sorted((str(v.version) for v in versions), key=int))
        raise ConfigError(
            f"{reference}: model {name!r} has no version {version or '(none given)'}; "
            f"its versions are {numbers} (write models:/{name}/VERSION)"
        )
    if not chosen.run_id:
        raise ConfigError(f"{reference}: the version names no training run, so no config")
    if not chosen.source.startswith("models:/"):
        raise ConfigError(
            f"{reference}: the version's source is {chosen.source}, not a logged model "
            "(models:/m-...); the project scores a version's own weights only from the pt2 "
            "model it logged"
        )
    return chosen.run_id, chosen.source.removeprefix("models:/")


def _logged_model_of(client, run_id: str) -> str | None:
    """The LoggedModel the run logged last, if any."""
    outputs = client.get_run(run_id).outputs
    models = outputs.model_outputs if outputs else []
    return max(models, key=lambda m: m.step).model_id if models else None


def model_uri_of(reference: str, uri: str) -> str:
    """The `models:/...` URI MLflow serves for `reference` (checked to exist in the store)."""
    run_id, model_id = _run_of(reference, uri)  # a models:/ name and version exist
    if model_id is None:
        model_id = _logged_model_of(store.client(uri), run_id)
    if model_id is None:
        raise ConfigError(
            f"{reference}: run {run_id} logged no MLflow model (a study trial logs none; its "
            "study logs the best trial's)"
        )
    model_checks.check_loadable(uri, model_id, reference)  # before the server loads it
    return reference if reference.startswith("models:/") else f"models:/{model_id}"
