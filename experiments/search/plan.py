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
from experiments.search.space import SearchSpace, load_space, study_names
from experiments.search.storage import default_storage
from experiments.tracking import labels, store
from experiments.training import outputs
from experiments.training.config import ResolvedConfig, fast_check, parse
from experiments.training.outputs import TRIAL, RunOutputs

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
    #: trials record system metrics, not models; the best trial's model is logged at the end
    outputs: RunOutputs = TRIAL
    #: `--check`: everything checked, nothing created
    check: bool = False
    #: --run-name (the parent run's name; default: the study name) and --tag (every run)
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

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
        return {
            "search_space": self.space.as_dict(),
            "base": self.base,
            "overrides": self.overrides,
        }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments search",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("study", help=f"built-in study ({', '.join(study_names())}) or YAML file")
    parser.add_argument("--base", default=DEFAULT_BASE, help="base experiment (default: s1-mlp)")
    parser.add_argument("--trials", type=int, default=20, help="COMPLETE+PRUNED trials wanted")
    parser.add_argument("--timeout", type=float, help="stop starting trials after S seconds")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this host")
    parser.add_argument("--storage", help="Optuna storage: journal file path or postgresql://")
    parser.add_argument("--study-name", help="default: STUDY-BASE, e.g. lr-s1-mlp")
    parser.add_argument(
        "--pruner",
        choices=("median", "hyperband", "none"),
        default="median",
        help="prune on the first objective (val/acc) after each epoch (default: median)",
    )
    parser.add_argument("--sampler-seed", type=int, default=0, help="TPE sampler seed")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the study, base config, Trainer, data, store and storage; create nothing",
    )
    outputs.add_flags(parser)  # --register NAME: the best trial's model, once the study ends
    labels.add_label_flags(parser, "the study's parent run (default: the study name)")
    return parser


def make_plan(argv: Sequence[str]) -> Plan:
    """Parse and validate everything before any study, run or process is created."""
    args, overrides = build_parser().parse_known_args(argv)
    for flag, value, least in (("--trials", args.trials, 1), ("--workers", args.workers, 1)):
        if value < least:
            raise ConfigError(f"{flag} must be at least {least}, got {value}")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout must be positive seconds, got {args.timeout}")
    fast_check(args.base, overrides)  # a mistyped key or value, before the libraries load
    check_study_name(args.study_name)
    if args.storage is not None:
        check_storage(args.storage)
    overrides = [*QUIET, *overrides]
    base_config = parse(args.base, overrides)
    strategy = str(base_config.trainer.get("strategy") or "auto")
    if strategy.startswith("ddp"):
        # Lightning's DDP launcher would re-run this whole `search` command per rank.
        raise ConfigError(
            f"trainer.strategy={strategy!r} is not supported inside a study; allowed: "
            "auto or a single-process strategy. Scale a study with --workers N instead."
        )
    space = load_space(args.study, base_config.classes())
    # The targets and ranges meet the experiment's parser before the study exists, so
    # `target: model.l2` or a type mismatch is refused with the parser's own message.
    base_config.with_values(space.example_values())
    uri = store.resolve_tracking_uri(args.tracking_uri)
    store.check_kind(uri)
    storage = args.storage or default_storage(store.local_root(uri))
    return Plan(
        space=space,
        base=args.base,
        overrides=overrides,
        base_config=base_config,
        study_name=args.study_name or f"{space.name}-{base_config.name}",
        storage_url=storage,
        tracking_uri=uri,
        n_trials=args.trials,
        timeout=args.timeout,
        workers=args.workers,
        pruner=args.pruner,
        sampler_seed=args.sampler_seed,
        outputs=outputs.from_args(args, log_model=False),
        check=args.check,
        run_name=labels.check_run_name(args.run_name),
        tags=labels.parse_tags(args.tag),
    )


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


def local_study_dir(plan: Plan) -> Path:
    return store.local_root(plan.tracking_uri) / "studies" / plan.study_name
