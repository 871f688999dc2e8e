"""A user's own run names and tags (`--run-name NAME`, `--tag KEY=VALUE`), and run selection
by age and status (`--since`, `--older-than`, `--status`).

    python -m experiments run s1-mlp --run-name baseline --tag owner=ana --tag purpose=demo
    python -m experiments compare --tag owner=ana --since 2d --status FINISHED,KILLED

A user's tag never overwrites one the project writes (`PROJECT_TAGS`, `PROTECTED_PREFIXES`):
docs/tracking.md (Run names and tags).
"""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from experiments.errors import ConfigError

#: Every tag key the project writes on a run (runner, studies, evaluations, S4 summaries,
#: worked examples, benchmarks, resume, health checks).
PROJECT_TAGS = frozenset(
    {
        # what a run is (training/runner.py) and what produced it (store.environment_tags)
        "task",
        "experiment",
        "dataset",
        "model_family",
        "model_class",
        "net_class",
        "seed",
        "torch_threads",
        "torch_threads_reason",
        "git_commit",
        "hardware",
        "python",
        # how it ended, its figures and model
        "end_reason",
        "pruned_at_epoch",
        "error",
        "failure_reason",
        "model_error",
        "figures_error",
        "fit_judgement",
        "fit_judgement_reason",
        "resume_count",
        "notes",
        "kind",
        "bench",
        # studies
        "study",
        "study_name",
        "study_role",
        "trial_number",
        "retry_of_trial",
        "trial_state",
        "optuna_storage",
        "best_trial",
        "best_run_id",
        "best_model_run_id",
        "best_model_id",
        # evaluations and the S4 comparison
        "evaluated_model",
        "evaluated_run_id",
        "evaluated_model_id",
        "group_id",
        "activation",
        "source_experiment",
    }
)
#: Key prefixes the project or MLflow write under (`system` also covers `system_metrics`).
PROTECTED_PREFIXES = ("mlflow.", "lineage.", "system", "version.", "process.", "resume.", "study.")

TAG_KEY = re.compile(r"^[A-Za-z0-9_\-. /]+$")  # what MLflow accepts as a tag key


def protected(key: str) -> bool:
    return key in PROJECT_TAGS or key.startswith(PROTECTED_PREFIXES)


def parse_tags(values: Iterable[str] | None) -> dict[str, str]:
    """`["owner=ana", "purpose=demo"]` -> {"owner": "ana", "purpose": "demo"}; ConfigError
    (exit 2) naming a malformed or protected tag."""
    tags: dict[str, str] = {}
    for text in values or ():
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--tag {text!r}: expected KEY=VALUE, e.g. --tag owner=ana")
        if not TAG_KEY.match(key) or len(key) > 250:
            raise ConfigError(
                f"--tag {text!r}: a key may hold letters, digits, _ - . / and spaces "
                "(at most 250 characters)"
            )
        if protected(key):
            instead = (
                "name a run with --run-name NAME"
                if key == "mlflow.runName"
                else f"use another key, e.g. --tag my_{key}={value}"
            )
            raise ConfigError(
                f"--tag {key}={value}: {key!r} is a tag the project (or MLflow) writes, so it "
                f"cannot be set by hand; {instead}. Protected: {', '.join(sorted(PROJECT_TAGS))} "
                f"and every key starting with {', '.join(PROTECTED_PREFIXES)}"
            )
        if key in tags and tags[key] != value:
            raise ConfigError(f"--tag {key}: given twice ({tags[key]!r} and {value!r})")
        tags[key] = value
    return tags


def add_label_flags(parser: argparse.ArgumentParser, name_of: str = "the run") -> None:
    """--run-name NAME and --tag KEY=VALUE (repeatable)."""
    parser.add_argument("--run-name", metavar="NAME", help=f"MLflow run name of {name_of}")
    parser.add_argument(
        "--tag",
        action="append",
        metavar="KEY=VALUE",
        help="a tag of your own on the run(s), repeatable (project tags are refused)",
    )


def check_run_name(name: str | None) -> str | None:
    if name is not None and not name.strip():
        raise ConfigError("--run-name: give a non-empty name")
    if name is not None and len(name) > 250:
        raise ConfigError(f"--run-name: at most 250 characters, got {len(name)}")
    return name


# --- selection by age and status --------------------------------------------------------

STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_moment(flag: str, text: str, now: datetime | None = None) -> int:
    """`2d`, `12h`, `30m`, `1w` (that long ago) or a date `2026-12-01` / ISO date-time
    (UTC unless it names its zone) -> epoch milliseconds."""
    now = now or datetime.now(UTC)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", text)
    if match:
        moment = now - timedelta(seconds=float(match.group(1)) * UNITS[match.group(2)])
        return int(moment.timestamp() * 1000)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r}: expected an age like 30m, 12h, 2d, 1w or a date like "
            "2026-12-01 (or 2026-12-01T08:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_statuses(text: str | None) -> set[str] | None:
    """`FAILED,KILLED` -> {"FAILED", "KILLED"}; None for no filter."""
    if text is None:
        return None
    found = {s.strip().upper() for s in text.split(",") if s.strip()}
    unknown = sorted(found - set(STATUSES))
    if unknown or not found:
        close = difflib.get_close_matches(unknown[0], STATUSES, n=1) if unknown else []
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(
            f"--status {text!r}: {', '.join(unknown) or 'empty'} is not a run status; "
            f"allowed: {', '.join(STATUSES)} (comma-separated){hint}"
        )
    return found


def parse_tag_filter(values: Iterable[str] | None) -> dict[str, str]:
    """`--tag KEY=VALUE` of a command that selects runs: any key, project tags included."""
    wanted: dict[str, str] = {}
    for text in values or ():
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--tag {text!r}: expected KEY=VALUE, e.g. --tag owner=ana")
        wanted[key.strip()] = value
    return wanted


def match_tags(run_tags: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(run_tags.get(k) == v for k, v in wanted.items())


def short_id(run_id: str) -> str:
    return run_id[:8]


def start_time(ms: int | None) -> str:
    """A run's start as `2026-12-03 15:04` (UTC)."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def differing(params: Sequence[dict[str, str]]) -> list[str]:
    """The param keys whose values differ between the runs (a missing key counts)."""
    keys = sorted(set().union(*params)) if params else []
    return [k for k in keys if len({p.get(k) for p in params}) > 1]
