"""Experiment configuration: one YAML file per experiment, read once, parsed by jsonargparse.

Each `experiments/configs/<name>.yaml` names a LightningModule and a LightningDataModule by
`class_path` with their `init_args` (the network by its own `class_path` inside the model),
plus `trainer` settings and a `seed`. One parser (`experiment_parser`) checks every value
against the constructors' typed signatures, links what the data decides (classes, input
shape) into the model, and instantiates; the result is one config object, a jsonargparse
`Namespace`, kept in `ResolvedConfig`. Every override is named by its dotted key:

    python -m experiments run s1-mlp --trainer.max_epochs 2 --model.lr 0.01 --seed 1
    python -m experiments run s1-mlp --model.net.hidden_sizes '[256]'

Why jsonargparse's own parser and not `LightningCLI(run=False)`: LightningCLI builds the
Trainer while it parses, and our Trainer's MLFlowLogger takes the id of an MLflow run that
must not exist until the config, the data and the store have been checked (a typo never
leaves an empty run). The parser is the one LightningCLI builds in subclass mode, with the
same `link_arguments`; the Trainer is built by `experiments.training.runner`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from experiments.errors import ConfigError

#: The catalog: one YAML file per experiment (`seed_settings/` and `studies/` beside them).
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"

# Trainer arguments the runner owns: tracking, checkpoints and callbacks are wired by
# experiments.training.runner so every run is recorded the same way.
TRAINER_SKIP = {"logger", "callbacks", "enable_checkpointing", "default_root_dir", "plugins"}

# Defaults that differ from Lightning's: no sanity-check pass (validation runs after the
# first epoch anyway), a CPU default, since that is what this project is measured on, and
# no automatic hparams logging: the runner logs the whole resolved config through the
# logger, which Lightning's copy of the modules' arguments would repeat under bare names.
TRAINER_DEFAULTS = {
    "enable_model_summary": False,  # `python -m experiments model-summary NAME` prints it
    "num_sanity_val_steps": 0,
    "accelerator": "cpu",
    "log_every_n_steps": 50,
    "enable_autolog_hparams": False,
}


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


def catalog(folder: Path = CONFIGS_DIR) -> list[ExperimentEntry]:
    """Every experiment YAML of the catalog (or of another `folder`), sorted by name."""
    entries = []
    for path in sorted(folder.glob("*.yaml")):
        data = load_yaml(path)
        entries.append(
            ExperimentEntry(path.stem, path, str(data.get("task", "")), data.get("description", ""))
        )
    return entries


def find_yaml(name: str, folder: Path) -> Path | None:
    """`name` as an existing YAML file path, else `folder/<name>.yaml` if it exists; the
    name is matched in any case, with `-`, `_`, space or no separator (`S1_MLP` and
    `s1mlp` find `s1-mlp.yaml`)."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    squashed = re.sub(r"[-_ ]", "", name.lower())
    for path in sorted(folder.glob("*.yaml")):
        if path.stem == name or re.sub(r"[-_ ]", "", path.stem) == squashed:
            return path
    return None


def did_you_mean(name: str, names: list[str]) -> str:
    """ "; did you mean X?" for the closest of `names`, or nothing."""
    close = difflib.get_close_matches(re.sub(r"[-_ ]+", "-", name.lower()), names, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def resolve_experiment(name: str) -> Path:
    """A catalog name (`s1-mlp`) or a path to a YAML file -> the file."""
    path = find_yaml(name, CONFIGS_DIR)
    if path is not None:
        return path
    names = [entry.name for entry in catalog()]
    raise ConfigError(
        f"experiment {name!r} is not in the catalog and is not a YAML file"
        f"{did_you_mean(name, names)}\n  available: {', '.join(names)}"
    )


def import_class(dotted: str, key: str) -> type:
    module_name, _, class_name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{key}={dotted!r} cannot be imported: {exc}") from exc


#: What the data decides about the model, linked from the datamodule into every place the
#: model or its network takes it (a link to an argument a class does not have is skipped).
DATA_LINKS: dict[str, Callable[[Any], Any]] = {
    "num_classes": lambda data: data.num_classes,
    "input_shape": lambda data: tuple(data.input_shape),  # (channels, height, width)
    "in_features": lambda data: math.prod(data.input_shape),  # MLP: flattened image
    "in_channels": lambda data: data.input_shape[0],  # CNNs
    "input_size": lambda data: data.input_shape[1],  # CNNs: square images
}
LINKED_SECTIONS = ("model.init_args", "model.init_args.net.init_args")


@functools.cache
def experiment_parser():
    """The one parser of every experiment: model, data and Trainer arguments, data links."""
    import lightning as L
    from jsonargparse import ArgumentParser
    from jsonargparse.typing import PositiveInt

    parser = ArgumentParser(
        prog="python -m experiments run NAME",
        exit_on_error=False,
        description="Train, validate and test one experiment, tracked in MLflow.",
    )
    parser.add_argument("--task", type=str, default="", help="seed task id (S0.2, S1.3, ...)")
    parser.add_argument("--description", type=str, default="", help="one-line description")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, order, dropout")
    parser.add_argument(
        "--threads",
        type=Optional[PositiveInt],  # noqa: UP045 (jsonargparse reads the runtime type)
        default=None,
        help="torch CPU threads (default: chosen from the work per batch, see training/threads.py)",
    )
    parser.add_subclass_arguments(L.LightningModule, "model", required=True)
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
    parser.add_class_arguments(L.Trainer, "trainer", skip=TRAINER_SKIP, instantiate=False)
    parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})
    for section in LINKED_SECTIONS:
        for name, compute in DATA_LINKS.items():
            parser.link_arguments("data", f"{section}.{name}", compute, apply_on="instantiate")
    return parser


def public_key(key: str) -> str:
    """`model.init_args.net.init_args.dropout` -> `model.net.dropout`: the spelling users type."""
    return key.replace(".init_args", "")


def _is_link_target(key: str) -> bool:
    section, _, name = key.rpartition(".")
    return section in LINKED_SECTIONS and name in DATA_LINKS


#: "No default": a required argument, a class path, a top-level key.
MISSING = object()


@dataclass
class ResolvedConfig:
    """A parsed experiment: the one config object (`namespace`) every part of a run reads."""

    name: str
    source: Path
    namespace: Any  # jsonargparse.Namespace: model/data by class_path + init_args, trainer

    def get(self, key: str) -> Any:
        """The value of a public dotted key (`model.lr`, `model.net.hidden_sizes`)."""
        return self.namespace.get(namespace_key(self.namespace, key))

    def class_default(self, key: str) -> Any:
        """The default of `key` in its class's signature (`MISSING` where there is none)."""
        section, _, name = key.rpartition(".")
        if section == "trainer" and name in TRAINER_DEFAULTS:
            return TRAINER_DEFAULTS[name]
        if section == "trainer":
            path = "lightning.Trainer"
        elif section and name != "class_path":
            path = self.get(f"{section}.class_path")
        else:
            return MISSING
        parameter = inspect.signature(import_class(path, key)).parameters.get(name)
        if parameter is None or parameter.default is inspect.Parameter.empty:
            return MISSING
        return parameter.default

    def config_keys(self) -> list[str]:
        """Every settable key, in the public spelling, link targets left out."""
        return [
            public_key(k)
            for k in self.namespace.keys()  # noqa: SIM118 (dotted keys of nested levels)
            if not _is_link_target(k) and not k.endswith(".init_args")
        ]

    @property
    def task(self) -> str:
        return str(self.namespace.task or "")

    @property
    def description(self) -> str:
        return str(self.namespace.description or "")

    @property
    def seed(self) -> int:
        return int(self.namespace.seed)

    @property
    def threads(self) -> int | None:
        """torch intra-op threads; None = chosen by experiments.training.threads from the work per batch."""
        value = self.namespace.threads
        return None if value is None else int(value)

    @property
    def trainer(self) -> dict[str, Any]:
        """The Trainer's keyword arguments (the runner adds logger, callbacks and plugins)."""
        return self.namespace.trainer.as_dict()

    @property
    def model_class_path(self) -> str:
        return str(self.namespace.model.class_path)

    @property
    def data_class_path(self) -> str:
        return str(self.namespace.data.class_path)

    @property
    def net_class_path(self) -> str | None:
        net = self.namespace.get("model.init_args.net")
        return None if net is None else str(net.class_path)

    def classes(self) -> list[type]:
        """The network's classes then the model's, most specific first (study targets)."""
        paths = [p for p in (self.net_class_path, self.model_class_path) if p]
        return [k for path in paths for k in import_class(path, "class_path").__mro__]

    def with_values(self, values: dict[str, Any]) -> ResolvedConfig:
        """A copy with public keys set to new values, checked by the parser (a study trial)."""
        from jsonargparse import ArgumentError

        namespace, keys = self.namespace.clone(), self.config_keys()
        for key, value in values.items():
            public = canonical_key(keys, key)
            if public not in keys:
                raise ConfigError(f"{self.name}: {_unknown_key(keys, key)}")
            namespace[namespace_key(namespace, public)] = canonical_value(public, value)
        try:
            experiment_parser().validate(namespace)
        except (ArgumentError, TypeError, ValueError) as exc:
            raise ConfigError(f"{self.name}: {plain_error(str(exc))}") from exc
        return ResolvedConfig(self.name, self.source, namespace)

    def params(self) -> dict[str, Any]:
        """The config by public key (`model.lr`), as MLflow params: no link targets, no
        description (it is the run's note), no Trainer keys left at None (noise in the UI)."""
        values = {key: self.get(key) for key in self.config_keys() if key != "description"}
        return {k: v for k, v in values.items() if v is not None or not k.startswith("trainer.")}

    def as_yaml(self) -> str:
        """The resolved config as an experiment file (`run --config FILE` reads it)."""
        return experiment_parser().dump(self.namespace, skip_none=False, skip_validation=True)

    def instantiate(self):
        """Build the datamodule, then the model sized by it (`DATA_LINKS`); (model, data)."""
        try:
            built = experiment_parser().instantiate(self.namespace)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{self.name}: {exc}") from exc
        # jsonargparse hands restricted types to the constructors, and the modules' hparams
        # go into every checkpoint, which a weights-only load reads back: keep them plain.
        for part in (built.model, built.data):
            for key, value in part.hparams.items():
                part.hparams[key] = _plain(value)
        return built.model, built.data


def _plain(value: Any) -> Any:
    """A restricted type's value (jsonargparse's PositiveFloat, ...) as the plain float, int."""
    plain = next((t for t in (bool, int, float, str) if isinstance(value, t)), None)
    return plain(value) if plain is not None and type(value) is not plain else value


def _plain_values(namespace) -> None:
    """Plain values in the config: it is dumped, flattened and compared as plain YAML."""
    for key in namespace.keys():  # noqa: SIM118 (dotted keys of nested levels)
        namespace[key] = _plain(namespace[key])


def namespace_key(namespace, key: str) -> str:
    """A public key -> its key in the namespace (`init_args` after every class_path node)."""
    from jsonargparse import Namespace

    out: list[str] = []
    for part in key.split("."):
        node = namespace.get(".".join(out)) if out else namespace
        if isinstance(node, Namespace) and "class_path" in node and part != "class_path":
            out.append("init_args")
        out.append(part)
    return ".".join(out)


#: Short flags for the keys people change most, and what they stand for.
SHORTCUTS = {
    "epochs": "trainer.max_epochs",
    "max_epochs": "trainer.max_epochs",
    "lr": "model.lr",
    "batch_size": "data.batch_size",
    "seed": "seed",
}


def canonical_key(keys: list[str], key: str) -> str:
    """The one spelling of `key`, which is also the name it is logged under.

    Keys are matched without regard to case or `-` for `_` (`--model.weight-decay`);
    `SHORTCUTS` expand (`--epochs`); and, the one alias rule, `model.X`, where X is an
    argument of the model's network and not of the model, is `model.net.X` (the flags
    of the former LightningModule subclasses that re-declared their network's arguments).
    """
    if key in keys:
        return key
    key = SHORTCUTS.get(key.lower().replace("-", "_"), key.lower().replace("-", "_"))
    if key not in keys and key.startswith("model.") and f"model.net.{key[6:]}" in keys:
        return f"model.net.{key[6:]}"
    return key


def _unknown_key(keys: list[str], key: str) -> str:
    group = key.rpartition(".")[0]
    siblings = sorted(
        {k[len(group) + 1 :].split(".")[0] for k in keys if k.startswith(f"{group}.")}
    )
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.8)
    hint = f"; did you mean --{close[0]}?" if close else ""
    where = f"valid keys under '{group}'" if group and siblings else "valid top-level keys"
    listed = siblings if group and siblings else sorted({k.split(".")[0] for k in keys})
    return f"unknown key --{key}{hint}\n  {where}: {', '.join(listed)}"


def canonical_value(key: str, value: Any) -> Any:
    """Names as people type them -> the registry's (`--model.net.activation SELU` -> selu)."""
    if key.rpartition(".")[2] == "activation" and isinstance(value, str):
        from models.activations import canonical_activation

        return canonical_activation(value)
    return value


def _canonical_overrides(keys: list[str], overrides: list[str]) -> list[str]:
    """Old spellings rewritten to the public key, names to the registry's; an unknown key
    refused with its neighbours and a did-you-mean."""
    out, changed, pending = [], [], None
    for token in overrides:
        if token.startswith("--"):
            key, eq, value = token[2:].partition("=")
            new = canonical_key(keys, key)
            under_new_class = any(new.startswith(c[: -len("class_path")]) for c in changed)
            if new not in keys and not under_new_class:
                raise ConfigError(_unknown_key(keys, key))
            if new.endswith("class_path"):
                changed.append(new)
            token = f"--{new}{eq}{canonical_value(new, value) if eq else ''}"
            pending = None if eq else new
        elif pending is not None:
            token, pending = canonical_value(pending, token), None
        out.append(token)
    return out


_RESTRICTIONS = {">": "above", ">=": "at least", "<": "below", "<=": "at most"}
_TYPE_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "str": "text",
    "Sequence": "a list such as [64, 32]",
}


def plain_error(message: str) -> str:
    """jsonargparse's nested report of a bad value -> `--KEY VALUE: what is allowed`."""
    keys = list(re.finditer(r'^( *)Parser key "([^"]+)":', message, re.M))
    if not keys:
        return message
    key = ".".join(m.group(2) for m in keys)
    # What the innermost key allows: the lines indented below its own "Parser key" line
    # (the outer levels add "or None" alternatives of the model and data sections).
    depth = len(keys[-1].group(1))
    inner = "\n".join(
        line
        for line in message[keys[-1].end() :].splitlines()
        if len(line) - len(line.lstrip()) > depth
    )
    given = re.search(r"val='(.*)'\)|(?:Given|Got) value: (.*)", message)
    value = next((g for g in given.groups() if g is not None), "?").strip() if given else "?"
    literal = re.search(r"Expected a typing\.Literal\[(.*?)\]\. Got value: (.*)", inner)
    restricted = re.search(
        r"Not of type \w+: (?:(\S+) )?does not conform to restriction v([<>]=?)(\S+)", inner
    )
    types = [t.rpartition(".")[2] for t in re.findall(r"Expected a <class '([\w.]+)'>", inner)]
    if literal:
        choices = [c.strip().strip("'") for c in literal.group(1).split(",")]
        close = difflib.get_close_matches(literal.group(2).strip(), choices, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"--{key} {literal.group(2).strip()}: not one of {', '.join(choices)}{hint}"
    if restricted:
        shown, op, bound = restricted.groups()
        null = " (or null)" if "NoneType" in types else ""
        return f"--{key} {shown or value}: must be {_RESTRICTIONS[op]} {bound}{null}"
    if types:
        allowed = [_TYPE_WORDS.get(t, t) for t in types if t != "NoneType"]
        allowed += ["null"] if "NoneType" in types else []
        return f"--{key} {value}: expected {' or '.join(allowed)}"
    return message


#: The LightningModules that re-declared their network's arguments, before `ImageClassifier`
#: took the network as `net`: a config.yaml logged by such a run still parses (and resumes).
FORMER_MODELS = {
    "models.MLPClassifier": "models.components.MLP",
    "models.FourBlockCNNClassifier": "models.components.FourBlockCNN",
    "models.LeNetClassifier": "models.components.LeNet",
    "models.ConvNetClassifier": "models.components.ConvNet",
}


def _from_former_models(raw: dict[str, Any]) -> dict[str, Any]:
    """`model: {class_path: models.MLPClassifier, init_args: {hidden_sizes, lr, ...}}` ->
    `ImageClassifier` with `net: {class_path: models.components.MLP, init_args: {hidden_sizes}}`."""
    model = raw.get("model")
    if not isinstance(model, dict):
        return raw
    path = str(model.get("class_path", "")).replace("models.classifier.", "models.")
    if path not in FORMER_MODELS:
        return raw
    args = dict(model.get("init_args") or {})
    own = inspect.signature(import_class("models.ImageClassifier", "model.class_path")).parameters
    net_args = {k: args.pop(k) for k in list(args) if k not in own}
    net = {"class_path": FORMER_MODELS[path], "init_args": net_args}
    return {
        **raw,
        "model": {"class_path": "models.ImageClassifier", "init_args": {**args, "net": net}},
    }


def parse(name: str, overrides: list[str]) -> ResolvedConfig:
    """Resolve experiment `name` (catalog name or YAML path) with dotted CLI overrides."""
    from jsonargparse import ArgumentError

    source = resolve_experiment(name)
    raw = load_yaml(source)  # the one read of the file: our own message if it is not YAML
    raw = _from_former_models(raw)
    parser = experiment_parser()
    try:
        namespace = parser.parse_object(raw)
        keys = ResolvedConfig(source.stem, source, namespace).config_keys()
        namespace = parser.parse_args(_canonical_overrides(keys, overrides), namespace=namespace)
    except ArgumentError as exc:
        raise ConfigError(f"{source.name}: {plain_error(str(exc))}") from exc
    _plain_values(namespace)
    return ResolvedConfig(name=source.stem, source=source, namespace=namespace)


def prepare_data(data) -> None:
    """Find and check a datamodule's data: part of validation, before any run or study exists."""
    try:
        data.prepare_data()
        data.setup("fit")
    except (FileNotFoundError, ValueError) as exc:  # DataNotFoundError, DataFormatError
        raise ConfigError(f"data: {exc}") from exc
