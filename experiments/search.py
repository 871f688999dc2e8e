"""Optuna studies tracked in MLflow: one parent run per study, one nested run per trial.

    python -m experiments search lr --trials 20
    python -m experiments search lr --trials 4 --trainer.max_epochs 2
    python -m experiments search regularization --base s1-mlp --workers 2
    python -m experiments search activation --trials 14 --pruner none
    python -m experiments search s3 --base s1-scratch --timeout 1800
    python -m experiments search lr --storage postgresql://user:pw@db/optuna   # many hosts

Built-in studies are the YAML files in experiments/studies/ (lr, regularization,
activation, s3); other flags after the known ones override the base experiment, as with
`python -m experiments run`. Running the same command again resumes the study: finished
trials are kept, trials of killed workers are failed and run again, and the study stops
at exactly --trials COMPLETE+PRUNED trials, however many workers share it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments import study_storage, tracking
from experiments.config import ConfigError, ResolvedConfig, parse
from experiments.study_space import SearchSpace, difference, load_space, study_names

DEFAULT_BASE = "s1-mlp"
WORKER_ENV = "EXPERIMENTS_SEARCH_WORKER"  # "k/N" in the extra worker processes
# Trials run quietly: with several workers, progress bars and model summaries interleave.
QUIET = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]
MAX_CONSECUTIVE_FAILURES = 3


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

    @property
    def prunes(self) -> bool:
        # Optuna cannot prune multi-objective studies (Trial.report is single-objective).
        return self.pruner != "none" and not self.space.multi_objective

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
    return parser


def make_plan(argv: Sequence[str]) -> Plan:
    """Parse and validate everything before any study, run or process is created."""
    args, overrides = build_parser().parse_known_args(argv)
    for flag, value, least in (("--trials", args.trials, 1), ("--workers", args.workers, 1)):
        if value < least:
            raise ConfigError(f"{flag} must be at least {least}, got {value}")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout must be positive seconds, got {args.timeout}")
    stray = [o for o in overrides if o.startswith("-") and not o.startswith("--")]
    if stray:
        raise ConfigError(f"unknown flags {stray}; overrides look like --model.lr 0.01")
    overrides = [*QUIET, *overrides]
    base_config = parse(args.base, overrides)
    strategy = str(base_config.values["trainer"].get("strategy") or "auto")
    if strategy.startswith("ddp"):
        # Lightning's DDP launcher would re-run this whole `search` command per rank.
        raise ConfigError(
            f"trainer.strategy={strategy!r} is not supported inside a study; allowed: "
            "auto or a single-process strategy. Scale a study with --workers N instead."
        )
    space = load_space(args.study, base_config.model_class)
    # The targets and ranges meet the experiment's parser before the study exists, so
    # `target: model.l2` or a type mismatch is refused with the parser's own message.
    parse(args.base, [*overrides, *space.example_overrides()])
    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    storage = args.storage or study_storage.default_storage(tracking.local_root(uri))
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
    )


# --- the study -------------------------------------------------------------------------


def make_pruner(plan: Plan):
    import optuna

    if not plan.prunes:
        return optuna.pruners.NopPruner()
    if plan.pruner == "hyperband":
        max_epochs = plan.base_config.values["trainer"].get("max_epochs") or 0
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs if max_epochs > 0 else "auto"
        )
    # Median of the trials so far at the same epoch; two finished trials before judging.
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def make_sampler(plan: Plan, worker_index: int, existing_trials: int):
    """Seeded TPE. The seed also depends on the worker and on the trials already in the
    study, so parallel workers and a resumed study do not replay the same suggestions;
    a fresh single-worker study is reproducible from --sampler-seed."""
    import optuna

    key = f"{plan.sampler_seed}:{worker_index}:{existing_trials}".encode()
    seed = int.from_bytes(hashlib.sha256(key).digest()[:4], "big")
    if worker_index == 0 and existing_trials == 0:
        seed = plan.sampler_seed
    startup = max(2, min(10, plan.n_trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def open_study(plan: Plan, *, create: bool, worker_index: int = 0):
    """Load (or, for the lead process, create) the study; refuse a changed space."""
    import optuna

    storage = study_storage.open_storage(plan.storage_url)
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
            f"study {plan.study_name!r} in {study_storage.redact(plan.storage_url)} was "
            "created with different settings, so its trials are not comparable:\n  "
            + "\n  ".join(changes)
            + "\nRun it with the original space and overrides to resume, or pass "
            "--study-name NEW to start a new study."
        )


# --- the parent MLflow run -------------------------------------------------------------


def ensure_parent_run(plan: Plan, study, dataset_name: str) -> str:
    """The study's parent run: found again on resume (RUNNING again), else created."""
    from mlflow.exceptions import MlflowException

    client = tracking.client(plan.tracking_uri)
    experiment_id = tracking.ensure_experiment(client, plan.tracking_uri, dataset_name)
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id:
        with contextlib.suppress(MlflowException):
            client.get_run(run_id)
            client.update_run(run_id, status="RUNNING")
            return run_id
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.study_name = '{plan.study_name}' AND tags.study_role = 'parent'",
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        tags = {
            "study": plan.space.name,
            "study_name": plan.study_name,
            "study_role": "parent",
            "experiment": plan.base,
            "task": plan.base_config.task,
            "optuna_storage": study_storage.redact(plan.storage_url),
            "mlflow.note.content": f"Optuna study {plan.study_name}: {plan.space.description}",
            **tracking.environment_tags(),
        }
        run = client.create_run(experiment_id, run_name=plan.study_name, tags=tags)
        run_id = run.info.run_id
        tracking.log_params(
            client,
            run_id,
            {
                "study.base": plan.base,
                "study.space": json.dumps(plan.space.as_dict()["params"]),
                "study.objectives": ", ".join(
                    f"{o.direction} {o.metric}" for o in plan.space.objectives
                ),
                "study.overrides": " ".join(plan.overrides),
                "study.sampler": f"TPE(seed={plan.sampler_seed})",
            },
        )
    study.set_user_attr("mlflow_parent_run_id", run_id)
    client.set_tag(run_id, "study.pruner", plan.pruner if plan.prunes else "none")
    client.set_tag(run_id, "study.n_trials", str(plan.n_trials))
    return run_id


def close_runs_of_dead_trials(plan: Plan, trial) -> None:
    run_id = trial.user_attrs.get("mlflow_run_id")
    print(
        f"  trial {trial.number}: worker {trial.user_attrs.get('worker', '?')} is gone; "
        "trial failed and its parameters queued again",
        flush=True,
    )
    if not run_id:
        return
    client = tracking.client(plan.tracking_uri)
    with contextlib.suppress(Exception):
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "end_reason", "worker process died; trial retried")
            client.set_tag(run_id, "trial_state", "FAIL")
            client.set_terminated(run_id, "KILLED")


# --- workers ---------------------------------------------------------------------------


def _raise_exit(signum, frame):  # SIGTERM -> SystemExit, so runs and trials are closed
    raise SystemExit(128 + signum)


def _die_with_parent() -> None:
    """In a worker process: get SIGTERM when the lead process dies (Linux prctl)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _quiet_libraries() -> None:
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def work(plan: Plan, worker_index: int) -> int:
    """Ask, run and tell trials until the study holds --trials COMPLETE+PRUNED trials."""
    import torch
    from optuna.trial import TrialState

    from experiments.study_trial import run_trial

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // plan.workers))
    _quiet_libraries()
    study = open_study(plan, create=False, worker_index=worker_index)
    parent_run_id = study.user_attrs["mlflow_parent_run_id"]
    me = study_storage.this_worker()
    deadline = None if plan.timeout is None else time.monotonic() + plan.timeout
    failures = 0
    prefix = f"[worker {worker_index}] " if plan.workers > 1 else ""
    while True:
        if deadline is not None and time.monotonic() > deadline:
            print(f"{prefix}--timeout reached: no new trials", flush=True)
            return 0
        with study_storage.study_lock(plan.storage_url, plan.study_name):
            study_storage.recover_dead_trials(study, lambda t: close_runs_of_dead_trials(plan, t))
            states = [t.state for t in study.get_trials(deepcopy=False)]
            done = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
            running = states.count(TrialState.RUNNING)
            if done + running >= plan.n_trials:
                return 0
            trial = study.ask()
            trial.set_user_attr(study_storage.WORKER_ATTR, me)
        outcome = run_trial(
            study,
            trial,
            space=plan.space,
            base=plan.base,
            overrides=plan.overrides,
            tracking_uri=plan.tracking_uri,
            parent_run_id=parent_run_id,
            study_name=plan.study_name,
            prune=plan.prunes,
        )
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


def spawn_workers(argv: Sequence[str], count: int) -> list[subprocess.Popen]:
    procs = []
    for index in range(1, count + 1):
        env = {**os.environ, WORKER_ENV: f"{index}/{count + 1}"}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "experiments", "search", *argv],
                env=env,
                preexec_fn=_die_with_parent,
            )
        )
    return procs


# --- the command -----------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    try:
        plan = make_plan(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # SIGTERM (also sent to extra workers when the lead dies) closes the running trial:
    # its MLflow run ends KILLED and its parameters are queued again.
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        worker = os.environ.get(WORKER_ENV)
        if worker:  # an extra worker process started by the lead one
            _die_with_parent()
            return work(plan, int(worker.split("/")[0]))
        return lead(plan, argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def lead(plan: Plan, argv: list[str]) -> int:
    """Create or resume the study and its parent run, run the workers, then summarize."""
    _quiet_libraries()
    try:
        # The data is found and checked once here, so a wrong path fails before the study.
        data = plan.base_config.instantiate()[1]
        try:
            data.prepare_data()
            data.setup("fit")
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(f"data: {exc}") from exc
        dataset_name = data.dataset_name
        del data
        with study_storage.study_lock(plan.storage_url, plan.study_name):
            study = open_study(plan, create=True)
            parent_run_id = ensure_parent_run(plan, study, dataset_name)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    client = tracking.client(plan.tracking_uri)
    print(
        f"study {plan.study_name} ({plan.space.description}) on {plan.base}: "
        f"{plan.n_trials} trials, {plan.workers} worker(s), pruner "
        f"{plan.pruner if plan.prunes else 'none'}; storage "
        f"{study_storage.redact(plan.storage_url)}; MLflow parent run {parent_run_id}",
        flush=True,
    )
    procs = spawn_workers(argv, plan.workers - 1)
    code = 0
    try:
        code = work(plan, 0)
        for proc in procs:
            code = max(code, proc.wait())
    except (KeyboardInterrupt, SystemExit):
        for proc in procs:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait()
        client.set_tag(parent_run_id, "end_reason", "interrupted")
        client.set_terminated(parent_run_id, "KILLED")
        raise
    from experiments.study_report import report_study

    study = open_study(plan, create=False)
    report_study(plan, study, parent_run_id)
    if code != 0:
        client.set_tag(parent_run_id, "end_reason", "a worker stopped on repeated trial failures")
    client.set_terminated(parent_run_id, "FINISHED" if code == 0 else "FAILED")
    return code


def local_study_dir(plan: Plan) -> Path:
    return tracking.local_root(plan.tracking_uri) / "studies" / plan.study_name
