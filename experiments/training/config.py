"""Experiment configuration: one YAML file per experiment, read once, parsed by jsonargparse.

One parser (`experiment_parser`, the one LightningCLI builds in subclass mode) checks every
value against the constructors' typed signatures, links what the data decides into the
model, and instantiates; the result, a jsonargparse `Namespace`, is kept in
`ResolvedConfig`. The file format, the dotted overrides and why not `LightningCLI`:
docs/configuration.md. The Trainer is built by `experiments.training.runner`.
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
from typing import Any, Literal, Optional, Union

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
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}); allowed: a YAML file in UTF-8"
        ) from exc
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
    if Path(name).suffix in (".yaml", ".yml") or "/" in name or Path(name).exists():
        what = "not a file" if Path(name).exists() else "no such file"
        raise ConfigError(
            f"config file {name}: {what}; allowed: a YAML config file (as logged with every "
            "run) or a catalog name (`python -m experiments list`)"
        )
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
        type=Optional[Union[PositiveInt, Literal["adaptive"]]],  # noqa: UP007, UP045 (runtime type)
        default=None,
        help="torch CPU threads; default: measured at the start of the run, then fixed and "
        "recorded here; adaptive: measured again at every epoch (training/threads.py)",
    )
    parser.add_subclass_arguments(L.LightningModule, "model", required=True)
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
    parser.add_class_arguments(L.Trainer, "trainer", skip=TRAINER_SKIP, instantiate=False)
    parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})
    for section in LINKED_SECTIONS:
        for name, compute in DATA_LINKS.items():
            parser.link_arguments("data", f"{section}.{name}", compute, apply_on="instantiate")
    return parser


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
        if not section or name == "class_path":
            return MISSING
        path = "lightning.Trainer" if section == "trainer" else self.get(f"{section}.class_path")
        parameter = inspect.signature(import_class(path, key)).parameters.get(name)
        if parameter is None or parameter.default is inspect.Parameter.empty:
            return MISSING
        return parameter.default

    def config_keys(self) -> list[str]:
        """Every settable key, in the public spelling, link targets left out."""
        return [
            k.replace(".init_args", "")  # `model.init_args.net.init_args.X` -> `model.net.X`
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
    def threads(self) -> int | str | None:
        """torch intra-op threads: a count, "adaptive" or None (measured at the run's start;
        experiments.training.threads)."""
        value = self.namespace.threads
        return value if value is None or value == "adaptive" else int(value)

    @property
    def trainer(self) -> dict[str, Any]:
        """The Trainer's keyword arguments (the runner adds logger, callbacks and plugins)."""
        return self.namespace.trainer.as_dict()

    @property
    def model_class_path(self) -> str:
        return str(self.namespace.model.class_path)

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
            raise ConfigError(f"{self.name}: {_in_words(str(exc))}") from exc
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
            raise ConfigError(f"{self.name}: {_in_words(str(exc))}") from exc
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
    # Short flags (`--epochs`) are matched like the long keys (`--epoch` -> `--epochs`).
    names = [*keys, *(k for k in SHORTCUTS if k not in keys)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.8) or difflib.get_close_matches(
        key.lower().replace("-", "_"), names, n=1, cutoff=0.75
    )
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


#: Top-level keys the parser declares itself (the classes' keys come from their signatures).
#: The seed is what numpy, torch and Python's random accept: 0 .. 2**32 - 1.
TOP_LEVEL_SPECS: dict[str, dict[str, Any]] = {
    "task": {"t": "str"},
    "description": {"t": "str"},
    "seed": {"t": "int", "ge": 0, "le": 2**32 - 1},
    "threads": {
        "t": "union",
        "of": [{"t": "int", "gt": 0}, {"t": "choice", "of": ["adaptive"]}, {"t": "null"}],
    },
}
#: The base class a section's class_path must name, and an example of one.
SECTION_BASES = {
    "model": ("lightning.LightningModule", "models.ImageClassifier"),
    "data": ("lightning.LightningDataModule", "datamodules.FashionMNISTDataModule"),
    "model.net": ("torch.nn.Module", "models.components.MLP"),
}


@functools.cache
def _hints(class_path: str) -> dict[str, Any]:
    import typing

    cls = import_class(class_path, "class_path")
    try:
        return typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):  # an annotation that does not resolve: no spec
        return {}


def key_specs(cfg: ResolvedConfig) -> dict[str, dict[str, Any]]:
    """{public key: spec} of every settable key of `cfg`, from the live signatures."""
    from experiments.training import keyspec

    specs: dict[str, dict[str, Any]] = {}
    for key in cfg.config_keys():
        section, _, name = key.rpartition(".")
        if not section:
            spec = TOP_LEVEL_SPECS.get(name, {"t": "any"})
        elif name == "class_path":
            base = SECTION_BASES.get(section, ("class",))[0].rpartition(".")[2]
            spec = {"t": "any", "what": f"a {base} subclass, such as {cfg.get(key)}"}
        else:
            path = "lightning.Trainer" if section == "trainer" else cfg.get(f"{section}.class_path")
            hints = _hints(path)
            spec = keyspec.spec_of(hints[name]) if name in hints else {"t": "any"}
        if name == "activation" and spec["t"] == "choice":
            from models.activations import SYNONYMS

            spec["aliases"] = sorted(SYNONYMS)
        specs[key] = spec
    return specs


def _overrides(tokens: list[str]) -> list[tuple[str, str | None]]:
    """`--KEY VALUE` / `--KEY=VALUE` tokens -> (KEY, VALUE) pairs; VALUE None when missing.
    A value may start with `-` (`--model.lr -1`): only `--` starts the next key."""
    pairs: list[tuple[str, str | None]] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--") or token == "--":
            raise ConfigError(
                f"unexpected argument {token!r}: overrides look like --KEY VALUE "
                "(e.g. --model.lr 0.01)"
            )
        key, eq, value = token[2:].partition("=")
        if eq:
            pairs.append((key, value))
        elif index + 1 < len(tokens) and not tokens[index + 1].startswith("--"):
            index += 1
            pairs.append((key, tokens[index]))
        else:
            pairs.append((key, None))
        index += 1
    return pairs


def check_overrides(
    specs: dict[str, dict[str, Any]], overrides: list[str]
) -> list[tuple[str, str]]:
    """Overrides in the public spelling, each key known and each value allowed by its spec;
    ConfigError (`--KEY VALUE: what is wrong; what is allowed`) otherwise. Old spellings are
    rewritten to the public key, names to the registry's. Keys below a class_path that the
    overrides change are left to the parser (the new class decides them)."""
    from experiments.training import keyspec

    keys = list(specs)
    out: list[tuple[str, str]] = []
    changed: list[str] = []
    for typed, value in _overrides(list(overrides)):
        key = canonical_key(keys, typed)
        under_new_class = any(key.startswith(c[: -len("class_path")]) for c in changed)
        if key not in keys and not under_new_class:
            raise ConfigError(_unknown_key(keys, typed))
        if value is None:
            allowed = keyspec.describe(specs[key]) if key in specs else "a value"
            raise ConfigError(f"--{typed}: no value given; allowed: {allowed}")
        if key.endswith("class_path"):
            changed.append(key)
        elif not under_new_class:
            problem = keyspec.refusal(key, value, specs[key])
            if problem:
                raise ConfigError(problem)
        out.append((key, canonical_value(key, value)))
    return out


def fast_check(name: str, overrides: list[str]) -> None:
    """Refuse a mistyped key or value of a catalog experiment before torch, Lightning and
    MLflow are imported (the specs of configs/keys.json); a file outside the catalog, or
    no generated specs, are left to the full parse, which makes the same checks."""
    from experiments.training import keyspec

    source = resolve_experiment(name)
    specs = keyspec.catalog_specs().get(source.stem)
    if specs is not None and source.parent == CONFIGS_DIR:
        check_overrides(specs, overrides)


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
    if key in TOP_LEVEL_SPECS and given:  # our own keys: their spec says it in words
        from experiments.training import keyspec

        refused = keyspec.refusal(key, value, TOP_LEVEL_SPECS[key])
        if refused:
            return refused
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


@functools.lru_cache(maxsize=32)
def _parsed_file(path: str, mtime_ns: int, size: int):
    """A config file parsed and checked, once per process and version of the file."""
    from jsonargparse import ArgumentError

    source = Path(path)
    raw = load_yaml(source)  # the one read of the file: our own message if it is not YAML
    raw = _from_former_models(raw)
    try:
        return experiment_parser().parse_object(raw)
    except ArgumentError as exc:
        raise ConfigError(f"{source.name}: {_in_words(str(exc))}") from exc


def parse(name: str, overrides: list[str]) -> ResolvedConfig:
    """Resolve experiment `name` (catalog name or YAML path) with dotted CLI overrides."""
    from jsonargparse import ArgumentError

    source = resolve_experiment(name)
    stat = source.stat()
    parser = experiment_parser()
    namespace = _parsed_file(str(source), stat.st_mtime_ns, stat.st_size).clone()
    base = ResolvedConfig(source.stem, source, namespace)
    pairs = check_overrides(key_specs(base), list(overrides))
    for key, value in pairs:
        if key.endswith("class_path"):
            _check_class_path(key, value)
    try:
        namespace = parser.parse_args([f"--{k}={v}" for k, v in pairs], namespace=namespace)
    except ArgumentError as exc:
        raise ConfigError(_culprit(parser, base, pairs, exc)) from exc
    # Plain values in the config: it is dumped, flattened and compared as plain YAML.
    for key in namespace.keys():  # noqa: SIM118 (dotted keys of nested levels)
        namespace[key] = _plain(namespace[key])
    return ResolvedConfig(name=source.stem, source=source, namespace=namespace)


#: What a message must never show: the config library's and Python's internals.
INTERNALS = (
    "Traceback",
    "NestedArg",
    "Subtypes",
    "<class",
    "Namespace(",
    "PositiveInt",
    "PositiveFloat",
    "NonNegative",
    "typing.",
    "expected null",
)


def _in_words(message: str) -> str:
    """`plain_error`, or, where that still shows internals, the lines that do not."""
    message = plain_error(message)
    if not any(word in message for word in INTERNALS):
        return message
    noise = ("Parser key", "Errors:", "Given value", "- Expected", "Does not validate", "Problem")
    lines = [
        line.strip().removeprefix("- ")
        for line in message.splitlines()
        if line.strip()
        and not any(word in line for word in INTERNALS)
        and not line.strip().startswith(noise)
    ]
    return "; ".join(lines) or "not accepted by the config parser"


def _check_class_path(key: str, value: str) -> None:
    """A class_path override names an importable subclass of the section's base class."""
    section = key.rpartition(".")[0]
    if section not in SECTION_BASES:
        return
    base, example = SECTION_BASES[section]
    try:
        cls = import_class(str(value), key)
    except ConfigError:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, import_class(base, key))):
        shown = "a class that cannot be imported" if cls is None else "not a class"
        if isinstance(cls, type):
            shown = f"not a subclass of {base.rpartition('.')[2]}"
        raise ConfigError(
            f"--{key} {value}: {shown}; allowed: the dotted path of a "
            f"{base.rpartition('.')[2]} subclass, such as {example}"
        )


def _culprit(parser, base: ResolvedConfig, pairs: list[tuple[str, str]], exc) -> str:
    """The override the parser refused, in words: each is tried alone to find it."""
    from jsonargparse import ArgumentError

    from experiments.training import keyspec

    specs = key_specs(base)
    for key, value in pairs:
        try:
            parser.parse_args([f"--{key}={value}"], namespace=base.namespace.clone())
        except ArgumentError as one:
            said = _in_words(str(one))
            if said.startswith(f"--{key} "):
                return said
            allowed = keyspec.describe(specs[key]) if key in specs else "see `run NAME --help`"
            return f"--{key} {value}: {said}; allowed: {allowed}"
    return _in_words(str(exc))


def prepare_data(data) -> None:
    """Find and check a datamodule's data: part of validation, before any run or study exists."""
    try:
        data.prepare_data()
        data.setup("fit")
    except (FileNotFoundError, ValueError) as exc:  # DataNotFoundError, DataFormatError
        raise ConfigError(f"data: {exc}") from exc


def generated_key_specs() -> dict[str, dict[str, dict[str, Any]]]:
    """The specs of every catalog experiment, from the live signatures (configs/keys.json)."""
    return {entry.name: key_specs(parse(entry.name, [])) for entry in catalog()}


if __name__ == "__main__":  # python -m experiments.training.config: rewrite configs/keys.json
    from experiments.training import keyspec

    keyspec.KEYS_FILE.write_text(keyspec.dump(generated_key_specs()))
    print(f"wrote {keyspec.KEYS_FILE}")
