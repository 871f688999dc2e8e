"""Experiment configuration: YAML files under experiments/ parsed against typed signatures.

Each `experiments/<name>.yaml` names a LightningModule and a LightningDataModule by
`class_path` and gives their `init_args`, plus `trainer` settings and a `seed`. The parser
is built from the constructor signatures of those two classes and of `lightning.Trainer`
(jsonargparse), so every override is type-checked and named by its dotted key:

    python -m experiments run s1-mlp --trainer.max_epochs 2 --model.lr 0.01 --seed 1
"""

from __future__ import annotations

import argparse
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from experiments.errors import ConfigError

#: The catalog: one YAML file per experiment (`seed_settings/` and `studies/` beside them).
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"

# Trainer arguments the runner owns: tracking, checkpoints and callbacks are wired by
# experiments.training.runner so every run is recorded the same way.
#: keys a config file may have at the top level
TOP_LEVEL_KEYS = ("task", "description", "seed", "threads", "model", "data", "trainer")
TRAINER_SKIP = {"logger", "callbacks", "enable_checkpointing", "default_root_dir", "plugins"}

# Defaults that differ from Lightning's: no sanity-check pass (validation runs after the
# first epoch anyway) and a CPU default, since that is what this project is measured on.
TRAINER_DEFAULTS = {"num_sanity_val_steps": 0, "accelerator": "cpu", "log_every_n_steps": 50}


@dataclass(frozen=True)
class ExperimentEntry:
    name: str
    path: Path
    task: str
    description: str


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} does not parse as YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def catalog() -> list[ExperimentEntry]:
    """Every experiment YAML beside this module, sorted by name."""
    entries = []
    for path in sorted(CONFIGS_DIR.glob("*.yaml")):
        data = load_yaml(path)
        entries.append(
            ExperimentEntry(path.stem, path, str(data.get("task", "")), data.get("description", ""))
        )
    return entries


def find_yaml(name: str, folder: Path) -> Path | None:
    """`name` as an existing YAML file path, else `folder/<name>.yaml` if it exists."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    path = folder / f"{name}.yaml"
    return path if path.exists() else None


def resolve_experiment(name: str) -> Path:
    """A catalog name (`s1-mlp`) or a path to a YAML file -> the file."""
    path = find_yaml(name, CONFIGS_DIR)
    if path is not None:
        return path
    names = ", ".join(entry.name for entry in catalog())
    raise ConfigError(
        f"experiment {name!r} is not in the catalog and is not a YAML file; available: {names}"
    )


def import_class(dotted: str, key: str) -> type:
    module_name, _, class_name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{key}={dotted!r} cannot be imported: {exc}") from exc


@dataclass
class ResolvedConfig:
    """A parsed experiment: its classes and the complete, validated configuration."""

    name: str
    source: Path
    model_class: type
    data_class: type
    model_class_path: str
    data_class_path: str
    values: dict[str, Any]  # task, description, seed, model, data, trainer (all keys)

    @property
    def task(self) -> str:
        return str(self.values.get("task", ""))

    @property
    def seed(self) -> int:
        return int(self.values["seed"])

    @property
    def threads(self) -> int | None:
        """torch intra-op threads; None = chosen by experiments.training.threads from the work per batch."""
        value = self.values.get("threads")
        return None if value is None else int(value)

    def as_yaml(self) -> str:
        """The resolved config in the experiment-file format (`run --config FILE` reads it)."""
        doc = {
            "task": self.values["task"],
            "description": self.values["description"],
            "seed": self.values["seed"],
            "threads": self.values.get("threads"),
            "model": {"class_path": self.model_class_path, "init_args": self.values["model"]},
            "data": {"class_path": self.data_class_path, "init_args": self.values["data"]},
            "trainer": self.values["trainer"],
        }
        return yaml.safe_dump(doc, sort_keys=False)

    def instantiate(self):
        """Build the datamodule, then the model sized by the data (input shape, classes)."""
        try:
            data = self.data_class(**self.values["data"])
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"data: {exc}") from exc
        try:
            model = self.model_class(
                **self.values["model"],
                input_shape=tuple(data.input_shape),
                num_classes=data.num_classes,
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"model: {exc}") from exc
        return model, data


def _split_class(section: Any, key: str, source: Path) -> tuple[str, dict[str, Any]]:
    if not isinstance(section, dict) or "class_path" not in section:
        raise ConfigError(f"{source}: '{key}' must be a mapping with 'class_path' and 'init_args'")
    init_args = section.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise ConfigError(f"{source}: '{key}.init_args' must be a mapping")
    return str(section["class_path"]), init_args


def build_parser(model_class: type, data_class: type):
    from typing import Optional

    from jsonargparse import ActionConfigFile, ArgumentParser
    from jsonargparse.typing import PositiveInt
    from lightning import Trainer

    parser = ArgumentParser(
        prog="python -m experiments run NAME",
        exit_on_error=False,
        description="Train, validate and test one experiment, tracked in MLflow.",
    )
    parser.add_argument("--experiment_file", action=ActionConfigFile, help=argparse.SUPPRESS)
    parser.add_argument("--task", type=str, default="", help="seed task id (S0.2, S1.3, ...)")
    parser.add_argument("--description", type=str, default="", help="one-line description")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, order, dropout")
    parser.add_argument(
        "--threads",
        type=Optional[PositiveInt],  # noqa: UP045 (jsonargparse reads the runtime type)
        default=None,
        help="torch CPU threads (default: chosen from the work per batch, see experiments/training/threads.py)",
    )
    parser.add_class_arguments(model_class, "model", skip={"input_shape", "num_classes"})
    parser.add_class_arguments(data_class, "data")
    parser.add_class_arguments(Trainer, "trainer", skip=TRAINER_SKIP)
    parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})
    return parser


def _explain(parser, message: str) -> str:
    """Add the valid keys of a group to jsonargparse's 'unrecognized arguments' error."""
    match = re.search(r"unrecognized arguments: --([\w]+)\.?", message)
    if not match:
        return message
    group = match.group(1)
    keys = sorted(
        action.dest[len(group) + 1 :]
        for action in parser._actions
        if action.dest.startswith(f"{group}.") and action.dest.count(".") == 1
    )
    if not keys:
        top = sorted({a.dest.split(".")[0] for a in parser._actions if a.dest != "help"})
        return f"{message}\n  valid top-level keys: {', '.join(t for t in top if t != 'experiment_file')}"
    return f"{message}\n  valid keys under '{group}': {', '.join(keys)}"


def parse(name: str, overrides: list[str]) -> ResolvedConfig:
    """Resolve experiment `name` (catalog name or YAML path) with dotted CLI overrides."""
    source = resolve_experiment(name)
    raw = load_yaml(source)
    unknown = set(raw) - set(TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level keys {sorted(unknown)}; "
            f"allowed: {', '.join(TOP_LEVEL_KEYS)}"
        )
    model_path, model_args = _split_class(raw.get("model"), "model", source)
    data_path, data_args = _split_class(raw.get("data"), "data", source)
    model_class = import_class(model_path, "model.class_path")
    data_class = import_class(data_path, "data.class_path")
    parser = build_parser(model_class, data_class)
    flat = {
        "task": raw.get("task", ""),
        "description": raw.get("description", ""),
        "seed": raw.get("seed", 0),
        "threads": raw.get("threads"),
        "model": model_args,
        "data": data_args,
        "trainer": raw.get("trainer") or {},
    }
    from jsonargparse import ArgumentError

    try:
        namespace = parser.parse_args(["--experiment_file", yaml.safe_dump(flat), *overrides])
    except ArgumentError as exc:
        raise ConfigError(_explain(parser, str(exc))) from exc
    namespace.pop("experiment_file", None)
    # Round-trip through jsonargparse's dump: restricted types (PositiveFloat, ...) become
    # plain YAML values, so the config can be logged, flattened and written back as a file.
    values = yaml.safe_load(parser.dump(namespace, skip_none=False, skip_validation=True))
    return ResolvedConfig(
        name=source.stem,
        source=source,
        model_class=model_class,
        data_class=data_class,
        model_class_path=model_path,
        data_class_path=data_path,
        values=values,
    )


def prepare_data(data) -> None:
    """Find and check a datamodule's data: part of validation, before any run or study exists."""
    try:
        data.prepare_data()
        data.setup("fit")
    except (FileNotFoundError, ValueError) as exc:  # DataNotFoundError, DataFormatError
        raise ConfigError(f"data: {exc}") from exc
