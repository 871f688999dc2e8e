"""What one `python -m experiments search ...` command asks for: a validated `Plan`.

Everything is parsed and checked here before any study, run or process is created: the
study's space meets the base experiment's own config parser, so a bad target or range is
refused with the parser's message.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError
from experiments.search.space import (
    SAMPLERS,
    SearchSpace,
    grid_space,
    load_space,
    space_base,
    study_names,
)
from experiments.search.storage import default_storage
from experiments.tracking import labels, store
from experiments.training import outputs
from experiments.training.config import ResolvedConfig, fast_check, parse
from experiments.training.outputs import TRIAL, TRIAL_FIGURES, TRIAL_NAMES, RunOutputs

DEFAULT_BASE = "s1-mlp"

# Trials run quietly: with several workers, progress bars and model summaries interleave.
QUIET = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


@dataclass
class Plan:
    """Everything a worker needs to run trials of one study."""

    space: SearchSpace
    base: str
    overrides: list[str]  # base-experiment overrides, the same for every trial
    base_config: ResolvedConfig
    study_name: str
    storage_url: str
    tracking_uri: str
    n_trials: int
    timeout: float | None
    workers: int
    pruner: str
    sampler_seed: int
    #: what trials record besides their metrics (training/outputs.py): the checkpoint, and
    #: with --trial-figures all but the model; the best trial's are logged at the end
    outputs: RunOutputs = TRIAL
    #: `--check`: everything checked, nothing created
    check: bool = False
    #: --run-name (the parent run's name; default: the study name)
    run_name: str | None = None
    #: tpe | random | grid | one_factor
    sampler: str = "tpe"
    #: grid and one_factor: every point the study runs, in order, each once
    points: list[dict[str, Any]] | None = None
    #: --enqueue: points run first (parameter name -> value)
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    #: plots, leaderboard, best config and best model on the parent run once the study ends
    #: (compare-activations logs its own summary instead)
    report: bool = True
    #: more tags of every trial's run and of the parent run
    tags: dict[str, str] = field(default_factory=dict)
    #: a tag on each trial's run from its parameter values: {param name: tag name}
    param_tags: dict[str, str] = field(default_factory=dict)

    @property
    def prunes(self) -> bool:
        # Optuna cannot prune multi-objective studies (Trial.report is single-objective).
        return self.pruner != "none" and not self.space.multi_objective

    def runnable_config(self, values: dict[str, Any]) -> ResolvedConfig:
        """The base experiment with `values` as `run --config` trains it: the base's own
        display settings (progress bar, model summary), not the trials' QUIET ones."""
        return parse(self.base, self.overrides[len(QUIET) :]).with_values(values)

    def study_attrs(self) -> dict[str, Any]:
        """What a resumed study must match: the space, directions, base and overrides."""
        attrs = {
            "search_space": self.space.as_dict(),
            "base": self.base,
            "overrides": self.overrides,
        }
        if self.sampler != "tpe":  # TPE studies made before --sampler resume as they were
            attrs["sampler"] = self.sampler
        if self.points is not None:
            attrs["points"] = self.points
        return attrs


def build_parser(study: bool = True) -> argparse.ArgumentParser:
    """`study`: the command line names a study first (without one, --grid builds the space;
    the positional is left out then, so an override's value is never taken for it)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments search",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if study:
        parser.add_argument(
            "study", help=f"built-in study ({', '.join(study_names())}) or YAML file"
        )
    else:
        parser.set_defaults(study=None)
    parser.add_argument("--base", help="base experiment (default: the space's base:, or s1-mlp)")
    parser.add_argument(
        "--trials", type=int, help="COMPLETE+PRUNED trials wanted (default 20; a grid's size)"
    )
    parser.add_argument("--timeout", type=float, help="stop starting trials after S seconds")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this host")
    parser.add_argument("--storage", help="Optuna storage: journal file path or postgresql://")
    parser.add_argument("--study-name", help="default: STUDY-BASE, e.g. lr-s1-mlp")
    parser.add_argument(
        "--pruner",
        choices=("median", "hyperband", "none"),
        help="prune on the first objective (val/acc) after each epoch "
        "(default: median; none for grid and one-factor studies)",
    )
    parser.add_argument(
        "--sampler",
        choices=SAMPLERS,
        help="tpe (default), random, or grid: every point of a finite space once",
    )
    parser.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2",
        help="grid over a config key's values, repeatable (no space file): the product runs",
    )
    parser.add_argument(
        "--enqueue",
        action="append",
        metavar="NAME=VALUE[,NAME=VALUE]",
        help="a point to run first, repeatable (names: the space's parameters or their keys)",
    )
    parser.add_argument("--sampler-seed", type=int, default=0, help="TPE/random sampler seed")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the study, base config, Trainer, data, store and storage; create nothing",
    )
    parser.add_argument(
        "--trial-figures",
        action="store_true",
        help="every trial logs a plain run's figures, fit judgement and model summary "
        "(default: only the best trial, once the study ends)",
    )
    # --register NAME: the best trial's model, once the study ends; no system/* by default
    outputs.add_flags(parser, metrics_s=None)
    labels.add_label_flags(parser, "the study's parent run (default: the study name)")
    return parser


def _check_flags(args: argparse.Namespace) -> None:
    for flag, value, least in (("--trials", args.trials, 1), ("--workers", args.workers, 1)):
        if value is not None and value < least:
            raise ConfigError(f"{flag} must be at least {least}, got {value}")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout must be positive seconds, got {args.timeout}")
    if args.grid and args.study:
        raise ConfigError(
            f"--grid and a study ({args.study}) do not go together: --grid builds its own space"
        )
    if not args.grid and not args.study:
        raise ConfigError(f"name a study ({', '.join(study_names())}) or give --grid KEY=V1,V2")
    if args.grid and args.sampler not in (None, "grid"):
        raise ConfigError(f"--grid runs a grid; --sampler {args.sampler} does not apply")
    if args.enqueue and (args.grid or args.sampler == "grid"):
        raise ConfigError("--enqueue does not go with a grid: a grid runs every point once anyway")
    check_study_name(args.study_name)
    if args.storage is not None:
        check_storage(args.storage)


def make_plan(argv: Sequence[str]) -> Plan:
    """Parse and validate everything before any study, run or process is created."""
    argv = list(argv)
    named = (bool(argv) and not argv[0].startswith("-")) or "-h" in argv or "--help" in argv
    args, overrides = build_parser(study=named).parse_known_args(argv)
    _check_flags(args)
    base = args.base or (space_base(args.study) if args.study else None) or DEFAULT_BASE
    fast_check(base, overrides)  # a mistyped key or value, before the libraries load
    overrides = [*QUIET, *overrides]
    base_config = parse(base, overrides)
    strategy = str(base_config.trainer.get("strategy") or "auto")
    if strategy.startswith("ddp"):
        # Lightning's DDP launcher would re-run this whole `search` command per rank.
        raise ConfigError(
            f"trainer.strategy={strategy!r} is not supported inside a study; allowed: "
            "auto or a single-process strategy. Scale a study with --workers N instead."
        )
    if args.grid:
        space = grid_space(grid_values(args.grid, base, overrides), _grid_name(args.grid))
    else:
        space = load_space(args.study, base_config.classes())
    # The targets and ranges meet the experiment's parser before the study exists, so
    # `target: model.l2` or a type mismatch is refused with the parser's own message.
    base_config.with_values(space.example_values())
    sampler, points = _sampler_and_points(args, space)
    enqueue = [enqueue_point(text, space, base_config) for text in args.enqueue or []]
    n_trials = _trial_count(args.trials, points, len(enqueue))
    uri = store.resolve_tracking_uri(args.tracking_uri)
    store.check_kind(uri)
    storage = args.storage or default_storage(store.local_root(uri))
    kind = "" if sampler == "tpe" or args.grid else f"-{sampler.replace('_', '-')}"
    return Plan(
        space=space,
        base=base,
        overrides=overrides,
        base_config=base_config,
        study_name=args.study_name or f"{space.name}{kind}-{base_config.name}",
        storage_url=storage,
        tracking_uri=uri,
        n_trials=n_trials,
        timeout=args.timeout,
        workers=args.workers,
        pruner=args.pruner or ("none" if points is not None else "median"),
        sampler_seed=args.sampler_seed,
        outputs=outputs.from_args(args, TRIAL_FIGURES if args.trial_figures else TRIAL_NAMES),
        sampler=sampler,
        points=points,
        enqueue=enqueue,
        check=args.check,
        run_name=labels.check_run_name(args.run_name),
        tags=labels.parse_tags(args.tag),
    )


def _sampler_and_points(args, space: SearchSpace) -> tuple[str, list[dict[str, Any]] | None]:
    """The sampler, and for a grid or one-factor study every point it runs."""
    if space.sampler == "one_factor":
        if args.sampler:
            raise ConfigError(
                f"study {space.name!r} runs one factor at a time (sampler: one_factor in "
                f"{space.source}); --sampler {args.sampler} does not apply"
            )
        if args.enqueue:
            raise ConfigError("--enqueue does not go with a one-factor study: it runs every point")
        return "one_factor", space.one_factor_points()
    sampler = args.sampler or space.sampler or "tpe"
    return sampler, space.grid() if sampler == "grid" else None


def _trial_count(trials: int | None, points: list | None, queued: int) -> int:
    if points is not None and trials is not None and trials > len(points):
        raise ConfigError(
            f"--trials {trials} is more than the {len(points)} points of this study, each "
            f"run once; allowed: 1..{len(points)} (default: all {len(points)})"
        )
    n_trials = trials if trials is not None else (20 if points is None else len(points))
    if queued > n_trials:
        raise ConfigError(f"--enqueue gives {queued} points, more than --trials {n_trials}")
    return n_trials


def _grid_name(grids: list[str]) -> str:
    """`grid-lr-activation` from `--grid model.lr=... --grid model.net.activation=...`."""
    keys = [g.split("=", 1)[0].rsplit(".", 1)[-1] for g in grids]
    return "grid-" + "-".join(re.sub(r"[^A-Za-z0-9_]+", "_", k) for k in keys)


def grid_values(grids: list[str], base: str, overrides: list[str]) -> dict[str, list[Any]]:
    """{config key: values} of --grid flags, each value converted as the override
    `--KEY VALUE` would be (so checked by the experiment's parser)."""
    out: dict[str, list[Any]] = {}
    for text in grids:
        key, sep, values = text.partition("=")
        key = key.strip().removeprefix("--")
        items = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(items):
            raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2 (e.g. model.lr=0.1,0.01)")
        if key in out:
            raise ConfigError(f"--grid {key} is given twice; list all its values in one flag")
        converted = [_converted(base, overrides, key, item) for item in items]
        if len(set(map(repr, converted))) != len(converted):
            raise ConfigError(f"--grid {text!r} repeats a value")
        out[key] = converted
    return out


def _converted(base: str, overrides: list[str], key: str, item: str) -> Any:
    """`item` as the override `--KEY ITEM` sets it; ConfigError naming the flag."""
    try:
        return parse(base, [*overrides, f"--{key}", item]).get(key)
    except ConfigError as exc:
        raise ConfigError(f"--grid {key}={item}: {exc}") from None


def enqueue_point(text: str, space: SearchSpace, base_config: ResolvedConfig) -> dict[str, Any]:
    """`lr=0.01,dropout=0.1` -> {"lr": 0.01, "dropout": 0.1}, checked against the space."""
    import yaml

    point: dict[str, Any] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--enqueue {text!r}: expected NAME=VALUE[,NAME=VALUE]")
        param = space.param(name.strip())
        if param.name in point:
            raise ConfigError(f"--enqueue {text!r} gives {param.name} twice")
        point[param.name] = param.check(yaml.safe_load(value.strip()), f"--enqueue {text!r}")
    base_config.with_values({space.param(k).target: v for k, v in point.items()})
    return point


#: A study name is a plain name: it names a folder under the store (studies/NAME).
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: Optuna storages by URL: its RDB databases (a journal file is a plain path)
STORAGE_SCHEMES = ("postgresql", "mysql", "sqlite")


def check_study_name(name: str | None) -> None:
    if name is not None and (not STUDY_NAME.match(name) or ".." in name):
        raise ConfigError(
            f"--study-name {name!r}: not a plain name; allowed: letters, digits, '.', '_' and "
            "'-' (up to 100, no path: it names the folder studies/NAME in the store)"
        )


def check_storage(url: str) -> None:
    """An Optuna storage this project opens: a journal file in an existing folder, or a
    PostgreSQL/MySQL/SQLite URL; nothing is created."""
    scheme = url.split("://", 1)[0].split("+")[0].lower() if "://" in url else None
    if scheme is not None and scheme not in STORAGE_SCHEMES:
        raise ConfigError(
            f"--storage {store.redact(url)}: {scheme}:// is not a storage this command opens; "
            "allowed: a journal file path (its folder must exist), postgresql://, mysql:// "
            "or sqlite:///PATH"
        )
    if scheme is None:
        path = Path(url).expanduser()
        if not url.strip() or path.is_dir():
            raise ConfigError(f"--storage {url!r}: not a file path; allowed: a journal file path")
        if not path.parent.is_dir():
            raise ConfigError(
                f"--storage {url}: no such folder {path.parent} (it is not created); allowed: "
                "a journal file in an existing folder, or a database URL"
            )
