"""Search spaces of the Optuna studies: `experiments/configs/studies/<name>.yaml`, validated.

    python -m experiments search lr            # uses experiments/configs/studies/lr.yaml
    python -m experiments search my_space.yaml # any file in the same format

The file format (objectives, params and their targets, `values`, `sampler: one_factor`):
docs/search.md. Whether a target key exists is checked by the experiment's config parser.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from decimal import Decimal
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
PARAM_KEYS = {"type", "low", "high", "log", "step", "choices", "values", "target"}
TOP_KEYS = ("description", "objectives", "params", "sampler", "base", "at", "factors")
#: `--sampler` choices; `one_factor` is declared by a space file (its `factors`)
SAMPLERS = ("tpe", "random", "grid")
FILE_SAMPLERS = (*SAMPLERS, "one_factor")
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
    #: a numeric parameter's listed values (instead of a range); suggested as categorical
    values: tuple[Any, ...] = ()
    #: a range's own grid points (`values` given beside low/high): used by a grid only
    grid: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        if self.values:
            return trial.suggest_categorical(self.name, list(self.values))
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
        if self.values:
            return self.values[0]
        return self.low

    def grid_values(self) -> list[Any] | None:
        """Every value this parameter can take, or None when that is not a finite list."""
        if self.type == "categorical":
            return list(self.choices)
        if self.values or self.grid:
            return list(self.values or self.grid)
        if self.type == "int":
            return list(range(self.low, self.high + 1, self.step or 1))
        if self.step is None:
            return None
        # Decimal steps: 0.1 + 2 * 0.1 is 0.3 here, not 0.30000000000000004.
        low, step = Decimal(str(self.low)), Decimal(str(self.step))
        count = int((Decimal(str(self.high)) - low) / step) + 1
        return [float(low + k * step) for k in range(count)]

    def check(self, value: Any, where: str) -> Any:
        """`value` (a YAML scalar) if this parameter can take it; else ConfigError."""
        if self.type == "categorical" or self.values:
            allowed = list(self.choices or self.values)
            for choice in allowed:
                if value == choice or str(choice) == str(value):
                    return choice
            raise ConfigError(
                f"{where}: {value!r} is not one of {self.name}'s values "
                f"{allowed}{did_you_mean(str(value), [str(c) for c in allowed])}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {self.name} needs a number, got {value!r}")
        if self.type == "int" and not float(value).is_integer():
            raise ConfigError(f"{where}: {self.name} is an int, got {value!r}")
        if not self.low <= value <= self.high:
            raise ConfigError(
                f"{where}: {self.name}={value!r} is outside its range [{self.low}, {self.high}]"
            )
        return int(value) if self.type == "int" else float(value)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "target": self.target}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        elif self.values:
            out["values"] = list(self.values)
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
    #: the space file's own sampler (`one_factor`, or a default for --sampler) and base
    sampler: str | None = None
    base: str | None = None
    #: one factor at a time: the base point, {param name: value}
    at: dict[str, Any] = field(default_factory=dict)

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

    def param(self, name: str) -> Param:
        """The parameter called `name`, or the one whose target is the config key `name`."""
        for p in self.params:
            if name in (p.name, p.target):
                return p
        names = [p.name for p in self.params] + [p.target for p in self.params]
        raise ConfigError(
            f"{name!r} is not a parameter of study {self.name!r}{did_you_mean(name, names)}; "
            f"its parameters: {', '.join(f'{p.name} ({p.target})' for p in self.params)}"
        )

    def grid(self) -> list[dict[str, Any]]:
        """Every point of the product of the parameters' values, in file order."""
        lists = []
        for p in self.params:
            values = p.grid_values()
            if values is None:
                raise ConfigError(
                    f"{self.source}: param {p.name!r} is a float range without 'step', so "
                    "--sampler grid cannot enumerate it; give it 'values: [...]' or a 'step'"
                )
            lists.append(values)
        names = [p.name for p in self.params]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*lists)]

    def one_factor_points(self) -> list[dict[str, Any]]:
        """The base point, then each factor's other values with the rest at the base."""
        points = [dict(self.at)]
        for p in self.params:
            points += [{**self.at, p.name: v} for v in p.grid_values() if v != self.at[p.name]]
        return points

    def factor_of(self, values: dict[str, Any]) -> list[str]:
        """The factors whose table a one-factor point belongs to (all of them for the base)."""
        moved = [p.name for p in self.params if values.get(p.name) != self.at.get(p.name)]
        if not moved:
            return [p.name for p in self.params]
        return moved if len(moved) == 1 else []

    def as_dict(self) -> dict[str, Any]:
        """Canonical form, stored with the study so a resume can be checked against it."""
        out = {
            "objectives": [{"metric": o.metric, "direction": o.direction} for o in self.objectives],
            "params": {p.name: p.as_dict() for p in self.params},
        }
        if self.at:
            out["at"] = dict(self.at)
        return out


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
    if "values" in spec and not {"low", "high"} & set(spec):
        return _listed(name, kind, target, spec, where)
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(f"{where}: {kind} needs '{key}' (or 'values: [...]')")
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
    grid = ()
    if "values" in spec:  # a range AND values: TPE/random search the range, a grid the values
        grid = _listed(name, kind, target, {"values": spec["values"]}, where).values
    param = Param(name, kind, target, low=low, high=high, log=log, step=step, grid=grid)
    for value in grid:
        param.check(value, f"{where}: values")
    return param


def _listed(name: str, kind: str, target: str, spec: dict, where: str) -> Param:
    """A numeric parameter given by its `values` list instead of a range."""
    extra = sorted(set(spec) & {"low", "high", "log", "step", "choices"})
    if extra:
        raise ConfigError(f"{where}: 'values' replaces a range; drop {extra}")
    values = spec["values"]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: 'values' must be a non-empty list, got {values!r}")
    values = [_number(v, f"{where}: values") for v in values]
    if kind == "int":
        if not all(float(v).is_integer() for v in values):
            raise ConfigError(f"{where}: int values must be whole numbers, got {values}")
        values = [int(v) for v in values]
    else:
        values = [float(v) for v in values]
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}: values {values!r} repeat a value")
    return Param(name, kind, target, low=min(values), high=max(values), values=tuple(values))


def _factor_spec(name: str, spec: Any, source: Path) -> dict:
    """A one-factor `factors:` entry as a param spec: its type inferred from its values."""
    if not isinstance(spec, dict) or not isinstance(spec.get("values"), list):
        raise ConfigError(
            f"{source}: factor {name!r} needs 'values: [...]' and 'target', got {spec!r}"
        )
    if "type" in spec:
        kind = spec["type"]
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in spec["values"]):
        kind = "int"
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec["values"]):
        kind = "float"
    else:
        kind = "categorical"
    if kind == "categorical":
        return {"type": kind, "choices": spec["values"], "target": spec.get("target")}
    return {**spec, "type": kind}


def _base_point(raw: dict, params: list[Param], source: Path) -> dict[str, Any]:
    """The `at:` point of a one-factor space: one listed value per factor."""
    at = raw.get("at")
    names = [p.name for p in params]
    if not isinstance(at, dict):
        raise ConfigError(f"{source}: a one-factor space needs 'at': the base value of {names}")
    missing = [n for n in names if n not in at]
    if missing:
        raise ConfigError(f"{source}: 'at' gives no base value for {missing}")
    point = {}
    for p in params:
        value = p.check(at[p.name], f"{source}: at")
        if value not in p.grid_values():
            raise ConfigError(
                f"{source}: at: {p.name}={value!r} is not among its values {p.grid_values()}; "
                "the base point is a row of every factor's table, so list it there"
            )
        point[p.name] = value
    return point


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
    raw = _raw_space(source)
    one_factor = raw.get("sampler") == "one_factor"
    key = "factors" if one_factor else "params"
    params_raw = raw.get(key)
    if not isinstance(params_raw, dict) or not params_raw:
        raise ConfigError(f"{source}: '{key}' must map parameter names to their values")
    if one_factor:
        params_raw = {k: _factor_spec(str(k), v, source) for k, v in params_raw.items()}
    found = [_param(str(k), spec, classes, source) for k, spec in params_raw.items()]
    params = [p for p in found if p is not None]
    if not params:
        raise ConfigError(
            f"{source}: no parameter of this space applies to {_names(classes)} "
            f"(all targets are null for it: {', '.join(map(str, params_raw))})"
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
        sampler=raw.get("sampler"),
        base=raw.get("base"),
        at=_base_point(raw, params, source) if one_factor else {},
    )


def _raw_space(source: Path) -> dict[str, Any]:
    raw = load_yaml(source)
    unknown = set(raw) - set(TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level keys {sorted(unknown)}; allowed: {', '.join(TOP_KEYS)}"
        )
    sampler = raw.get("sampler")
    if sampler is not None and sampler not in FILE_SAMPLERS:
        raise ConfigError(
            f"{source}: sampler {sampler!r} is not one of {', '.join(FILE_SAMPLERS)}"
            f"{did_you_mean(str(sampler), list(FILE_SAMPLERS))}"
        )
    one_factor = sampler == "one_factor"
    if ("params" in raw) if one_factor else ("at" in raw or "factors" in raw):
        raise ConfigError(
            f"{source}: 'at' and 'factors' go with 'sampler: one_factor', 'params' with the "
            "other samplers"
        )
    base = raw.get("base")
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{source}: 'base' must name an experiment, got {base!r}")
    return raw


def space_base(name: str) -> str | None:
    """The base experiment a space file names (`base:`), if any."""
    return _raw_space(resolve_study(name)).get("base")


def grid_space(values: dict[str, list[Any]], name: str) -> SearchSpace:
    """The space of `search --grid KEY=V1,V2 ...`: one categorical parameter per config key."""
    params = tuple(Param(k, "categorical", k, choices=tuple(v)) for k, v in values.items())
    return SearchSpace(
        name=name,
        source=Path("--grid"),
        description="grid over " + " x ".join(values),
        objectives=(Objective("val/acc", "maximize"),),
        params=params,
        sampler="grid",
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
