"""The Optuna study behind a search: open or resume it, its parent MLflow run, the workers' loop.

Each worker asks for trials under the study lock (experiments/search/storage.py) until the
study holds --trials COMPLETE + PRUNED trials, and runs each one as a nested MLflow run
(experiments/search/trial.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import warnings

from experiments.errors import ConfigError
from experiments.search.plan import Plan
from experiments.search.space import difference
from experiments.search.storage import (
    WORKER_ATTR,
    dashboard_command,
    open_storage,
    recover_dead_trials,
    study_lock,
    this_worker,
)
from experiments.tracking import store

MAX_CONSECUTIVE_FAILURES = 3


def make_pruner(plan: Plan):
    import optuna

    if not plan.prunes:
        return optuna.pruners.NopPruner()
    if plan.pruner == "hyperband":
        max_epochs = plan.base_config.trainer.get("max_epochs") or 0
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs if max_epochs > 0 else "auto"
        )
    # Median of the trials so far at the same epoch; two finished trials before judging.
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def make_sampler(plan: Plan, worker_index: int, existing_trials: int):
    """Seeded TPE or random; Optuna's GridSampler for a grid or one-factor study.

    The seed also depends on the worker and on the trials already in the study, so
    parallel workers and a resumed study do not replay the same suggestions; a fresh
    single-worker study is reproducible from --sampler-seed. A grid's points are queued
    one at a time by `next_trial` (every parameter fixed), so the grid sampler never picks
    one itself: it would choose among the points not yet visited, and a failed point
    counts as visited there."""
    import optuna

    key = f"{plan.sampler_seed}:{worker_index}:{existing_trials}".encode()
    seed = int.from_bytes(hashlib.sha256(key).digest()[:4], "big")
    if worker_index == 0 and existing_trials == 0:
        seed = plan.sampler_seed
    if plan.points is not None:
        values = {p.name: p.grid_values() for p in plan.space.params}
        return optuna.samplers.GridSampler(values, seed=seed)
    if plan.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = max(2, min(10, plan.n_trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def sampler_description(plan: Plan) -> str:
    if plan.sampler == "tpe":
        return f"TPE(seed={plan.sampler_seed})"
    if plan.sampler == "random":
        return f"random(seed={plan.sampler_seed})"
    return f"{plan.sampler} ({len(plan.points or [])} points, each once)"


def point_key(values: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in values.items()))


def next_trial(plan: Plan, study):
    """Under the study lock: the next trial to run, or None when the study is complete.

    A grid's (or one-factor study's) next point not yet COMPLETE, PRUNED or RUNNING is
    queued first (`enqueue_trial`), unless a retry of a killed trial is already waiting;
    so every point runs exactly once, however many workers share the study and after a
    resume. A point whose training failed is queued again."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    if done + running >= plan.n_trials:
        return None
    if plan.points is not None and not any(t.state == TrialState.WAITING for t in trials):
        live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        taken = {point_key(t.params) for t in trials if t.state in live}
        todo = [p for p in plan.points if point_key(p) not in taken]
        if not todo:
            return None
        study.enqueue_trial(todo[0])
    trial = study.ask()
    if plan.points is not None:
        # Its values set now, inside the lock: the next worker sees this point taken.
        plan.space.suggest(trial)
    return trial


def open_study(plan: Plan, *, create: bool, worker_index: int = 0):
    """Load (or, for the lead process, create) the study; refuse a changed space."""
    import optuna

    storage = open_storage(plan.storage_url)
    exists = plan.study_name in optuna.study.get_all_study_names(storage)
    if not exists and not create:
        raise ConfigError(f"study {plan.study_name!r} does not exist in {plan.storage_url}")
    if exists:
        study = optuna.load_study(study_name=plan.study_name, storage=storage)
        check_resume(plan, study)
    else:
        study = optuna.create_study(
            storage=storage, study_name=plan.study_name, directions=plan.space.directions
        )
        for key, value in plan.study_attrs().items():
            study.set_user_attr(key, value)
        # The dashboard names each objective by its metric (val/acc), not "Objective 0".
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in plan.space.objectives])
    existing = len(study.get_trials(deepcopy=False))
    return optuna.load_study(
        study_name=plan.study_name,
        storage=storage,
        sampler=make_sampler(plan, worker_index, existing),
        pruner=make_pruner(plan),
    )


def check_resume(plan: Plan, study) -> None:
    stored = {k: study.user_attrs.get(k) for k in plan.study_attrs()}
    stored["directions"] = [d.name.lower() for d in study.directions]
    current = {**plan.study_attrs(), "directions": plan.space.directions}
    changes = difference(stored, current)
    if changes:
        raise ConfigError(
            f"study {plan.study_name!r} in {store.redact(plan.storage_url)} was "
            "created with different settings, so its trials are not comparable:\n  "
            + "\n  ".join(changes)
            + "\nRun it with the original space and overrides to resume, or pass "
            "--study-name NEW to start a new study."
        )


def ensure_parent_run(plan: Plan, study, dataset_name: str) -> str:
    """The study's parent run: found again on resume (RUNNING again), else created."""
    from mlflow.exceptions import MlflowException

    client = store.client(plan.tracking_uri)
    experiment_id = store.ensure_experiment(client, plan.tracking_uri, dataset_name)
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id:
        with contextlib.suppress(MlflowException):
            client.get_run(run_id)
            _reopen_parent(client, run_id, plan)
            return run_id
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.study_name = '{plan.study_name}' AND tags.study_role = 'parent'",
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
        _reopen_parent(client, run_id, plan)
    else:
        tags = {
            "study": plan.space.name,
            "study_name": plan.study_name,
            "study_role": "parent",
            "experiment": plan.base,
            "task": plan.base_config.task,
            "optuna_storage": store.redact(plan.storage_url),
            "mlflow.note.content": (
                f"Optuna study {plan.study_name}: {plan.space.description}. Live view of its "
                f"trials: {dashboard_command(plan.storage_url, plan.tracking_uri)}"
            ),
            **store.environment_tags(),
            **plan.tags,
        }
        run = client.create_run(experiment_id, run_name=plan.run_name or plan.study_name, tags=tags)
        run_id = run.info.run_id
        store.log_params(
            client,
            run_id,
            {
                "study.base": plan.base,
                "study.space": json.dumps(plan.space.as_dict()["params"]),
                "study.objectives": ", ".join(
                    f"{o.direction} {o.metric}" for o in plan.space.objectives
                ),
                "study.overrides": " ".join(plan.overrides),
                "study.sampler": sampler_description(plan),
            },
        )
        if plan.space.at:  # one factor at a time: compare --study shows a table per factor
            client.set_tag(run_id, "study.at", json.dumps(plan.space.at))
    study.set_user_attr("mlflow_parent_run_id", run_id)
    client.set_tag(run_id, "study.pruner", plan.pruner if plan.prunes else "none")
    client.set_tag(run_id, "study.kind", plan.sampler)
    client.set_tag(run_id, "study.n_trials", str(plan.n_trials))
    return run_id


def _reopen_parent(client, run_id: str, plan: Plan) -> None:
    """A resumed study's parent: RUNNING again, with this command's --run-name and --tag."""
    client.update_run(run_id, status="RUNNING", name=plan.run_name)
    for key, value in plan.tags.items():
        client.set_tag(run_id, key, value)


def close_runs_of_dead_trials(plan: Plan, trial) -> None:
    run_id = trial.user_attrs.get("mlflow_run_id")
    print(
        f"  trial {trial.number}: worker {trial.user_attrs.get('worker', '?')} is gone; "
        "trial failed and its parameters queued again",
        flush=True,
    )
    if not run_id:
        return
    client = store.client(plan.tracking_uri)
    with contextlib.suppress(Exception):
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "end_reason", "worker process died; trial retried")
            client.set_tag(run_id, "trial_state", "FAIL")
            client.set_terminated(run_id, "KILLED")


def quiet_libraries() -> None:
    import optuna

    from experiments.training import console

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console.quiet_libraries()
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def work(plan: Plan, worker_index: int) -> int:
    """Ask, run and tell trials until the study holds --trials COMPLETE+PRUNED trials, on
    the worker's share of the cores, the first trial's thread probe serving them all; both
    end with the loop (a study run in-process leaves the process's next run as it was)."""
    from experiments.training import threads

    with threads.study_worker(max(1, (os.cpu_count() or 1) // plan.workers)):
        return _ask_run_tell(plan, worker_index)


def _ask_run_tell(plan: Plan, worker_index: int) -> int:
    from optuna.trial import TrialState

    from experiments.search.trial import run_trial

    quiet_libraries()
    study = open_study(plan, create=False, worker_index=worker_index)
    parent_run_id = study.user_attrs["mlflow_parent_run_id"]
    me = this_worker()
    deadline = None if plan.timeout is None else time.monotonic() + plan.timeout
    failures = 0
    prefix = f"[worker {worker_index}] " if plan.workers > 1 else ""
    while True:
        if deadline is not None and time.monotonic() > deadline:
            print(f"{prefix}--timeout reached: no new trials", flush=True)
            return 0
        with study_lock(plan.storage_url, plan.study_name):
            recover_dead_trials(
                study, plan.storage_url, lambda t: close_runs_of_dead_trials(plan, t)
            )
            trial = next_trial(plan, study)
            if trial is None:
                return 0
            trial.set_user_attr(WORKER_ATTR, me)
        outcome = run_trial(plan, study, trial, parent_run_id)
        print(prefix + progress_line(plan, outcome), flush=True)
        failures = failures + 1 if outcome.state == TrialState.FAIL else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:
            print(
                f"{prefix}error: {failures} trials in a row failed; last error: {outcome.error}",
                file=sys.stderr,
            )
            return 1


def progress_line(plan: Plan, outcome) -> str:
    values = ""
    if outcome.values:
        values = " ".join(
            f"{o.metric}={v:.4f}"
            for o, v in zip(plan.space.objectives, outcome.values, strict=True)
        )
    params = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in outcome.params.items()
    )
    retry = f" (retry of {outcome.retry_of})" if outcome.retry_of is not None else ""
    error = f" {outcome.error}" if outcome.error else ""
    return (
        f"trial {outcome.number:>3}{retry} {outcome.state.name:<8} {values} "
        f"epochs={outcome.epochs} {outcome.seconds:.1f}s  [{params}]{error}"
    )
