"""Search spaces of the Optuna studies: `experiments/configs/studies/<name>.yaml`, validated.

    python -m experiments search lr            # uses experiments/configs/studies/lr.yaml
    python -m experiments search my_space.yaml # any file in the same format

A space file names what the study scores and which config keys it varies:

    description: one line
    objectives:                      # one entry: single-objective; more: multi-objective
      - {metric: val/acc, direction: maximize}
    params:
      lr:                            # the Optuna parameter name
        type: float                  # float | int | categorical
        low: 1.0e-4
        high: 1.0
        log: true                    # log-uniform (float/int; needs low > 0)
        target: model.lr             # the dotted config key the value overrides

`target` may also map class names to keys, for spaces that fit several bases
(`{ImageClassifier: model.weight_decay, ScratchClassifier: model.l2_lambda}`, or by
network: `{MLP: model.net.dropout, LeNet: null}`); the first class on the network's MRO,
then the model's, wins, and `null` leaves the parameter out for that base.
`choices: registry` takes the activation names from `models.activations.ACTIVATIONS`.
Whether a target key exists is checked by the experiment's config parser (it names the key).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.training.config import (
    CONFIGS_DIR,
    ConfigError,
    did_you_mean,
    find_yaml,
    load_yaml,
)

STUDIES_DIR = CONFIGS_DIR / "studies"
TYPES = ("float", "int", "categorical")
PARAM_KEYS = {"type", "low", "high", "log", "step", "choices", "target"}
OBJECTIVE_METRICS = ("val/acc", "val/f1", "val/precision", "val/recall", "val/loss")


@dataclass(frozen=True)
class Param:
    """One searched parameter, with its target already chosen for the base model."""

    name: str
    type: str
    target: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(
                self.name, self.low, self.high, log=self.log, step=self.step or 1
            )
        return trial.suggest_categorical(self.name, list(self.choices))

    def example(self) -> Any:
        """A value inside the range, used to check the target before any trial runs."""
        if self.type == "categorical":
            return self.choices[0]
        return self.low

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "target": self.target}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                out["step"] = self.step
        return out


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # maximize | minimize


@dataclass(frozen=True)
class SearchSpace:
    """A study's space resolved for one base model class."""

    name: str
    source: Path
    description: str
    objectives: tuple[Objective, ...]
    params: tuple[Param, ...]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def suggest(self, trial) -> dict[str, Any]:
        return {p.name: p.suggest(trial) for p in self.params}

    def config_values(self, values: dict[str, Any]) -> dict[str, Any]:
        """The config keys a trial sets ({"model.lr": 0.01}) from its parameter values."""
        return {p.target: values[p.name] for p in self.params}

    def example_values(self) -> dict[str, Any]:
        return self.config_values({p.name: p.example() for p in self.params})

    def as_dict(self) -> dict[str, Any]:
        """Canonical form, stored with the study so a resume can be checked against it."""
        return {
            "objectives": [{"metric": o.metric, "direction": o.direction} for o in self.objectives],
            "params": {p.name: p.as_dict() for p in self.params},
        }


def study_names() -> list[str]:
    return sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))


def resolve_study(name: str) -> Path:
    path = find_yaml(name, STUDIES_DIR)
    if path is not None:
        return path
    raise ConfigError(
        f"study {name!r} is not a built-in study nor a YAML file"
        f"{did_you_mean(name, study_names())}; built-in studies: {', '.join(study_names())}"
    )


def _number(value: Any, where: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be finite, got {value!r}")
    return value


def _names(classes: list[type]) -> str:
    """The project's own classes among `classes` (network, then model), for messages."""
    return ", ".join(k.__name__ for k in classes if k.__module__.startswith("models."))


def _pick_target(name: str, target: Any, classes: list[type], source: Path) -> str | None:
    if isinstance(target, str):
        return target
    if not isinstance(target, dict) or not target:
        raise ConfigError(
            f"{source}: param {name!r}: 'target' must be a dotted config key (model.lr) "
            f"or a mapping from model class name to key, got {target!r}"
        )
    for klass in classes:
        if klass.__name__ in target:
            chosen = target[klass.__name__]
            if chosen is not None and not isinstance(chosen, str):
                raise ConfigError(
                    f"{source}: param {name!r}: target for {klass.__name__} must be a "
                    f"dotted key or null, got {chosen!r}"
                )
            return chosen
    raise ConfigError(
        f"{source}: param {name!r} has no target for the base's classes ({_names(classes)}); "
        f"the space names targets for: {', '.join(sorted(target))}. "
        "Choose another --base or add the class to the space file."
    )


def _param(name: str, spec: Any, classes: list[type], source: Path) -> Param | None:
    where = f"{source}: param {name!r}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping, got {spec!r}")
    unknown = set(spec) - PARAM_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {sorted(unknown)}; allowed: {', '.join(sorted(PARAM_KEYS))}"
        )
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{where}: type {kind!r} is not one of {', '.join(TYPES)}")
    if "target" not in spec:
        raise ConfigError(f"{where}: 'target' (the dotted config key, e.g. model.lr) is missing")
    target = _pick_target(name, spec["target"], classes, source)
    if target is None:
        return None
    if kind == "categorical":
        choices = spec.get("choices")
        if choices == "registry":
            from models.activations import ACTIVATIONS

            choices = list(ACTIVATIONS)
        if not isinstance(choices, list) or not choices:
            raise ConfigError(
                f"{where}: categorical needs 'choices': a non-empty list or 'registry' "
                f"(the activation registry), got {choices!r}"
            )
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: choices {choices!r} repeat a value")
        return Param(name, kind, target, choices=tuple(choices))
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(f"{where}: {kind} needs '{key}'")
    low = _number(spec["low"], f"{where}: low")
    high = _number(spec["high"], f"{where}: high")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{where}: int range needs whole numbers, got low={low}, high={high}")
    if low >= high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log scale needs low > 0, got low={low}")
    step = spec.get("step")
    if step is not None:
        step = _number(step, f"{where}: step")
        if step <= 0:
            raise ConfigError(f"{where}: step must be positive, got {step}")
        if log:
            raise ConfigError(f"{where}: step and log cannot be combined (Optuna forbids it)")
    if kind == "int":
        low, high = int(low), int(high)
        step = int(step) if step is not None else None
    else:
        low, high = float(low), float(high)
    return Param(name, kind, target, low=low, high=high, log=log, step=step)


def _objectives(raw: Any, source: Path) -> tuple[Objective, ...]:
    if raw is None:
        return (Objective("val/acc", "maximize"),)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            f"{source}: 'objectives' must be a non-empty list of {{metric, direction}}"
        )
    out = []
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"metric", "direction"}:
            raise ConfigError(
                f"{source}: each objective needs exactly 'metric' and 'direction', got {item!r}"
            )
        if item["metric"] not in OBJECTIVE_METRICS:
            raise ConfigError(
                f"{source}: objective metric {item['metric']!r} is not one of "
                f"{', '.join(OBJECTIVE_METRICS)} (per-epoch validation metrics)"
            )
        if item["direction"] not in ("maximize", "minimize"):
            raise ConfigError(
                f"{source}: objective direction {item['direction']!r} must be maximize or minimize"
            )
        out.append(Objective(item["metric"], item["direction"]))
    if len({o.metric for o in out}) != len(out):
        raise ConfigError(f"{source}: objectives repeat a metric")
    return tuple(out)


def load_space(name: str, classes: list[type]) -> SearchSpace:
    """Load study `name` (built-in or YAML path), its targets chosen for the base's `classes`

    (`ResolvedConfig.classes()`: the network's MRO, then the model's)."""
    source = resolve_study(name)
    raw = load_yaml(source)
    unknown = set(raw) - {"description", "objectives", "params"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level keys {sorted(unknown)}; "
            "allowed: description, objectives, params"
        )
    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise ConfigError(f"{source}: 'params' must map parameter names to their ranges")
    params, skipped = [], []
    for pname, spec in params_raw.items():
        param = _param(str(pname), spec, classes, source)
        if param is None:
            skipped.append(str(pname))
        else:
            params.append(param)
    if not params:
        raise ConfigError(
            f"{source}: no parameter of this space applies to {_names(classes)} "
            f"(all targets are null for it: {', '.join(skipped)})"
        )
    targets = [p.target for p in params]
    if len(set(targets)) != len(targets):
        raise ConfigError(f"{source}: two params set the same config key: {targets}")
    return SearchSpace(
        name=source.stem,
        source=source,
        description=str(raw.get("description", "")),
        objectives=_objectives(raw.get("objectives"), source),
        params=tuple(params),
    )


def difference(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two canonical spaces (or any nested mappings)."""
    out = []
    for key in sorted(set(stored) | set(current), key=str):
        where = f"{prefix}{key}"
        if key not in current:
            out.append(f"{where}: was {stored[key]!r}, now absent")
        elif key not in stored:
            out.append(f"{where}: was absent, now {current[key]!r}")
        elif isinstance(stored[key], dict) and isinstance(current[key], dict):
            out += difference(stored[key], current[key], f"{where}.")
        elif (
            isinstance(stored[key], list)
            and isinstance(current[key], list)
            and len(stored[key]) == len(current[key])
        ):
            out += difference(
                dict(enumerate(stored[key])), dict(enumerate(current[key])), f"{where}."
            )
        elif stored[key] != current[key]:
            out.append(f"{where}: was {stored[key]!r}, now {current[key]!r}")
    return out
