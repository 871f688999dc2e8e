"""Running a planned study: the lead process, its extra worker processes, the summary.

`python -m experiments search` (experiments/search/cli.py) and `compare-activations`
(a grid study) both run their plan through `run_plan`; extra workers are started as the
same command with EXPERIMENTS_SEARCH_WORKER set, and rebuild the same plan from its argv.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from experiments.errors import Refused
from experiments.search.plan import Plan
from experiments.search.storage import dashboard_command, study_lock
from experiments.search.study import (
    ensure_parent_run,
    open_study,
    quiet_libraries,
    sampler_description,
    work,
)
from experiments.tracking import store
from experiments.training import preflight
from experiments.training.config import prepare_data
from experiments.training.interrupts import last_signal

WORKER_ENV = "EXPERIMENTS_SEARCH_WORKER"  # "k/N" in the extra worker processes
#: the extra workers' end of the pipe that tells them the lead process has died
LEAD_PIPE_ENV = "EXPERIMENTS_SEARCH_LEAD_FD"


def _raise_exit(signum, frame):  # SIGTERM -> SystemExit, so runs and trials are closed
    raise SystemExit(128 + signum)


def _stop_when_lead_dies() -> None:
    """In an extra worker: SIGTERM ourselves when the lead process dies, however it dies.

    The worker holds the read end of a pipe whose only write end is the lead's
    (`spawn_workers`); the kernel closes that when the lead exits or is killed, so the
    blocking read returns. SIGTERM then closes the running trial like any interrupt.
    """
    fd = os.environ.get(LEAD_PIPE_ENV)
    if not fd:
        return

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(int(fd), 1):  # nothing is ever written: b"" means EOF
                pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lead-watch", daemon=True).start()


def spawn_workers(
    argv: Sequence[str], count: int, command: str = "search"
) -> list[subprocess.Popen]:
    """Start `count` more workers of this command; each stops when this process dies."""
    if count < 1:
        return []
    read_end, _write_end = os.pipe()  # the write end stays open, unused, until we exit
    procs = []
    try:
        for index in range(1, count + 1):
            env = {**os.environ, WORKER_ENV: f"{index}/{count + 1}", LEAD_PIPE_ENV: str(read_end)}
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "experiments", command, *argv],
                    env=env,
                    pass_fds=(read_end,),
                )
            )
    finally:
        os.close(read_end)
    return procs


def run_plan(plan: Plan, argv: Sequence[str], command: str = "search") -> int:
    """Lead the study (or, in an extra worker process, work on it); the exit code.

    `argv`: the command line of `command` that rebuilds `plan`, for the extra workers."""
    argv = list(argv)
    # SIGTERM (also sent to extra workers when the lead dies) closes the running trial:
    # its MLflow run ends KILLED and its parameters are queued again.
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    worker = os.environ.get(WORKER_ENV)
    try:
        if worker:  # an extra worker process started by the lead one
            _stop_when_lead_dies()
            return work(plan, int(worker.split("/")[0]))
        warn_about_workers(plan.workers)
        return lead(plan, argv, command)
    except (KeyboardInterrupt, SystemExit) as exc:
        code = interrupted_code(exc)
        if not worker:
            print(resume_message(plan, [command, *argv], code), file=sys.stderr, flush=True)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)


#: Measured with `bench search` on a 2-core machine: 8 workers ran 16 trials per minute
#: against 54 with one (every worker trains at once and they share the cores).
OVERSUBSCRIBED = "on 2 cores, 8 workers ran 16 trials/min against 54 with one worker"


def warn_about_workers(workers: int) -> None:
    """A warning, not a refusal, when --workers exceeds the cores: it works, only slower."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores and workers > cores:
        print(
            f"warning: --workers {workers} on {cores} CPU core(s): the workers share the cores "
            f"and the study runs slower, not faster ({OVERSUBSCRIBED}); use --workers {cores} "
            "or fewer on this machine",
            file=sys.stderr,
            flush=True,
        )


def interrupted_code(exc: BaseException) -> int:
    """128 + the signal that stopped the study: SIGTERM -> 143, Ctrl-C -> 130. Lightning
    turns a signal into a SystemExit without a code (its SIGTERMException), so the signal
    the project's handler recorded decides when the exception does not say."""
    if isinstance(exc, SystemExit) and isinstance(exc.code, int) and exc.code:
        return exc.code
    signum = last_signal()
    return 128 + (signum if signum else signal.SIGINT)


def resume_message(plan: Plan, argv: Sequence[str], code: int) -> str:
    """What an interrupted study prints: what is kept and the command that resumes it
    (`argv`: the command and its arguments)."""
    name = signal.Signals(code - 128).name if 128 < code < 160 else f"exit {code}"
    return (
        f"Study {plan.study_name} was interrupted ({name}): its finished trials are kept, the "
        "running trial's run was marked KILLED and its parameters are tried again on resume.\n"
        f"Resume it with: python -m experiments {shlex.join(argv)}"
    )


def lead(plan: Plan, argv: list[str], command: str = "search") -> int:
    """Create or resume the study and its parent run, run the workers, then summarize."""
    quiet_libraries()
    try:
        # `--check`'s checks, then the data found and read once here, before the study.
        preflight.check_run(plan.base_config, plan.tracking_uri, plan.outputs.register)
        data = plan.base_config.instantiate()[1]
        prepare_data(data)
        dataset_name = data.dataset_name
        del data
        with study_lock(plan.storage_url, plan.study_name):
            study = open_study(plan, create=True)
            parent_run_id = ensure_parent_run(plan, study, dataset_name)
            for point in plan.enqueue:  # unless the study already has a trial with its values
                study.enqueue_trial(point, skip_if_exists=True)
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    client = store.client(plan.tracking_uri)
    print(
        f"study {plan.study_name} ({plan.space.description}) on {plan.base}: "
        f"{plan.n_trials} trials, {sampler_description(plan)}, {plan.workers} worker(s), pruner "
        f"{plan.pruner if plan.prunes else 'none'}; storage "
        f"{store.redact(plan.storage_url)}; MLflow parent run {parent_run_id}",
        flush=True,
    )
    print(f"live view: {dashboard_command(plan.storage_url, plan.tracking_uri)}", flush=True)
    procs = spawn_workers(argv, plan.workers - 1, command)
    code = 0
    try:
        code = work(plan, 0)
        for proc in procs:
            code = max(code, proc.wait())
        if plan.report:  # an interrupt here too ends the parent run KILLED
            from experiments.search.report import report_study

            report_study(plan, open_study(plan, create=False), parent_run_id)
            _log_best_model(plan, client, parent_run_id)
    except (KeyboardInterrupt, SystemExit):
        for proc in procs:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait()
        client.set_tag(parent_run_id, "end_reason", "interrupted")
        client.set_terminated(parent_run_id, "KILLED")
        raise
    if code != 0:
        client.set_tag(parent_run_id, "end_reason", "a worker stopped on repeated trial failures")
    client.set_terminated(parent_run_id, "FINISHED" if code == 0 else "FAILED")
    return code


def _log_best_model(plan: Plan, client, parent_run_id: str) -> None:
    """The best trial's figures, fit judgement, model summary and model, which trials do not
    log to stay cheap (training/outputs.py); registered with --register NAME. Once per
    study: a resumed study's best may be new."""
    from experiments.training.outputs import BEST_TRIAL, RunOutputs
    from experiments.training.trained import log_outputs_of_run, register_model

    tags = client.get_run(parent_run_id).data.tags
    run_id, register = tags.get("best_run_id"), plan.outputs.register
    if not run_id:
        return
    if tags.get("best_model_run_id") == run_id:  # a resumed study whose best is unchanged
        model_id = tags["best_model_id"]
        registered = (
            register_model(plan.tracking_uri, register, model_id, run_id) if register else None
        )
    else:
        names = tuple(n for n in BEST_TRIAL if n not in plan.outputs.names)
        best = RunOutputs(names=names, register=register)
        found = log_outputs_of_run(plan.tracking_uri, run_id, best)
        model_id, registered = found.get("model_id"), found.get("registered")
        if model_id is None:  # not logged: the warning and the trial's model_error tag say why
            return
        client.set_tag(parent_run_id, "best_model_run_id", run_id)
        client.set_tag(parent_run_id, "best_model_id", model_id)
    where = f", registered as models:/{registered}" if registered else ""
    print(f"best trial's model: models:/{model_id}{where}")
