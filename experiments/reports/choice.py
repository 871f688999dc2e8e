"""Which run the report shows for a seed task: the catalog's own, or one chosen by hand.

The rule (the latest FINISHED run of the task whose logged config equals the catalog
experiment's apart from `IGNORED_KEYS`, compared on its params; which runs are never
chosen; `report --run TASK=RUN_ID` by hand, `picked_runs`) is written out in
docs/tracking.md (Which run a task shows).
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError
from experiments.seed_tasks import SEED_TASKS

#: Config keys a run may differ in from the catalog experiment and still be its run, and why.
IGNORED_KEYS: dict[str, str] = {
    "seed": "runs that differ only in the seed are repeats of one experiment (the report "
    "gives their mean and spread)",
    "threads": "the number of CPU threads torch uses changes the speed, not the experiment",
    "data.data_dir": "where the data files are looked up; which data a run used is in its "
    "lineage tags, shown on the report's data line",
    "data.system_dir": "the same: a second place the data files are looked up",
    "data.download": "the same: whether missing files may be downloaded",
    "trainer.enable_progress_bar": "terminal display only",
    "trainer.enable_model_summary": "prints Lightning's layer table at the start; display only",
    "trainer.log_every_n_steps": "how often Lightning logs per-step metrics; the models log "
    "per epoch or per validation, so it changes no curve",
}

#: Lightning's MLFlowLogger logs each param as `str(value)[:250]`.
PARAM_CHARS = 250


def logged_form(params: dict[str, Any]) -> dict[str, str]:
    """Params as a run logs them (strings, cut to `PARAM_CHARS`)."""
    return {key: str(value)[:PARAM_CHARS] for key, value in params.items()}


@dataclass(frozen=True)
class Reference:
    """A catalog experiment of a task, resolved as `run NAME` would resolve it."""

    name: str
    params: dict[str, str]
    #: the defaults of the classes' signatures, for keys a run may predate
    defaults: dict[str, str]


def references(task: str, folder: Path | None = None) -> list[Reference]:
    """The catalog experiments of `task` (normally one), resolved without training.

    `folder`: where the experiment YAML files are (default: the catalog).
    """
    from experiments.training import config

    entries = config.catalog() if folder is None else config.catalog(folder)
    out = []
    for entry in entries:
        if entry.task != task:
            continue
        cfg = config.parse(str(entry.path), [])
        params = logged_form(cfg.params())
        defaults = {key: cfg.class_default(key) for key in params}
        defaults = {k: v for k, v in defaults.items() if v is not config.MISSING}
        out.append(Reference(entry.name, params, logged_form(defaults)))
    return out


@dataclass(frozen=True)
class Difference:
    key: str
    run: str | None  # None: the run did not log the key
    catalog: str | None  # None: the catalog experiment does not set it

    def __str__(self) -> str:
        run = "not set" if self.run is None else self.run
        catalog = "not set" if self.catalog is None else self.catalog
        return f"{self.key} {run} (catalog: {catalog})"


def differences(run_params: dict[str, str], reference: Reference) -> list[Difference]:
    """Where a run's config differs from the catalog experiment's, ignored keys aside.

    A key the run did not log at all counts as equal when the catalog's value is the class's
    own default: the run predates that setting and ran with its default behaviour.
    """
    out = []
    for key in sorted(set(run_params) | set(reference.params)):
        if key in IGNORED_KEYS:
            continue
        ours, theirs = run_params.get(key), reference.params.get(key)
        if ours == theirs:
            continue
        if ours is None and theirs is not None and reference.defaults.get(key) == theirs:
            continue
        out.append(Difference(key, ours, theirs))
    return out


def override_flags(diffs: Sequence[Difference]) -> str:
    """The `run` flags that make the catalog experiment into the run (keys it logged)."""
    return " ".join(f"--{d.key} {shlex.quote(d.run)}" for d in diffs if d.run is not None)


def is_training_candidate(run: Any) -> bool:
    """A training run that may stand for its task: test metrics, not a study trial or
    parent, not an evaluation, worked-example or summary run."""
    tags = run.data.tags
    return "test/acc" in run.data.metrics and "kind" not in tags and "study_role" not in tags


@dataclass
class Choice:
    """The run shown for a task and why."""

    run: Any | None
    #: "catalog": latest run with the catalog's settings; "hand": `--run`; "none": no run
    how: str
    #: the catalog experiment the runs were compared with ("" when the catalog has none)
    reference: str = ""
    #: runs with the catalog's settings, newest first (the chosen one among them)
    matching: list[Any] = field(default_factory=list)
    #: runs with other settings, newest first, with what differs
    others: list[tuple[Any, list[Difference]]] = field(default_factory=list)
    #: for a hand-picked run: how it differs from the catalog experiment
    picked_differences: list[Difference] = field(default_factory=list)


def _closest(run_params: dict[str, str], refs: list[Reference]) -> tuple[str, list[Difference]]:
    """The catalog experiment the run is closest to, and the differences."""
    scored = [(ref.name, differences(run_params, ref)) for ref in refs]
    return min(scored, key=lambda item: len(item[1])) if scored else ("", [])


def choose_training_run(runs: list[Any], refs: list[Reference], picked: Any | None) -> Choice:
    """The run a training task shows: `picked` when given, else the newest of `runs` (newest
    first, FINISHED) whose config equals one of `refs` apart from `IGNORED_KEYS`."""
    candidates = [r for r in runs if is_training_candidate(r)]
    matching, others = [], []
    for run in candidates:
        name, diffs = _closest(run.data.params, refs)
        if refs and not diffs:
            matching.append(run)
        else:
            others.append((run, diffs))
    reference = refs[0].name if refs else ""
    if picked is not None:
        name, diffs = _closest(picked.data.params, refs)
        return Choice(picked, "hand", name or reference, matching, others, diffs)
    if matching:
        return Choice(matching[0], "catalog", reference, matching, others)
    return Choice(None, "none", reference, matching, others)


def parse_picks(values: Sequence[str]) -> dict[str, str]:
    """`TASK=RUN_ID` strings -> {task: run id}; ConfigError naming what is wrong."""
    picks: dict[str, str] = {}
    for value in values:
        task, eq, run_id = value.partition("=")
        task, run_id = task.strip(), run_id.strip()
        if not eq or not task or not run_id:
            raise ConfigError(f"--run {value!r}: expected TASK=RUN_ID, e.g. --run S1.2=RUN_ID")
        known = {t.upper(): t for t in SEED_TASKS}
        if task.upper() not in known:
            close = difflib.get_close_matches(task.upper(), list(known), n=1)
            hint = f"; did you mean {known[close[0]]}?" if close else ""
            raise ConfigError(
                f"--run {value!r}: {task!r} is not a seed task{hint}\n"
                f"  seed tasks: {', '.join(SEED_TASKS)}"
            )
        task = known[task.upper()]
        if task in picks and picks[task] != run_id:
            raise ConfigError(f"--run: task {task} is chosen twice ({picks[task]}, {run_id})")
        picks[task] = run_id
    return picks


def picked_runs(client: Any, picks: dict[str, str]) -> dict[str, Any]:
    """{task: run} for `--run TASK=RUN_ID`; ConfigError when a run does not exist in the
    store or belongs to another task."""
    from mlflow.exceptions import MlflowException

    out = {}
    for task, run_id in picks.items():
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            raise ConfigError(
                f"--run {task}={run_id}: no run {run_id!r} in this store "
                f"({exc.error_code}); `python -m experiments compare` lists the store's runs"
            ) from exc
        owner = run.data.tags.get("task", "")
        if owner != task:
            belongs = f"belongs to task {owner}" if owner else "has no task tag"
            raise ConfigError(
                f"--run {task}={run_id}: run {run.info.run_name} {belongs}, not {task}"
                + (f"; use --run {owner}={run_id}" if owner in SEED_TASKS else "")
            )
        out[task] = run
    return out
