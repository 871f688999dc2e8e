"""Where Optuna studies live, and how workers share them safely.

One host: Optuna's journal file (mlruns/optuna/journal.log); many hosts: an RDB URL
(PostgreSQL). Trials are asked for under one study lock (a file lock, or a PostgreSQL
advisory lock), and a RUNNING trial whose worker (`host:pid:start time`) is gone is failed
and queued again, its MLflow run closed KILLED: docs/search.md (Storage, workers,
resuming), docs/scaling-out.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from experiments.tracking.health import process_alive, process_start_time
from experiments.tracking.store import DEFAULT_TRACKING_URI, local_root, redact

#: The trial user attribute that names the worker process running the trial.
WORKER_ATTR = "worker"
RETRY_ATTR = "retry_of"
HEARTBEAT_INTERVAL = 30  # seconds; RDB storages only
GRACE_PERIOD = 120


def default_storage(local_root: Path) -> str:
    return str(local_root / "optuna" / "journal.log")


def dashboard_command(storage_url: str, tracking_uri: str) -> str:
    """The command that opens the live dashboard on this storage (`python -m experiments
    dashboard`, with --storage unless it is the default store's journal)."""
    if storage_url == default_storage(local_root(DEFAULT_TRACKING_URI)):
        return "python -m experiments dashboard"
    if not is_rdb(storage_url) and storage_url == default_storage(local_root(tracking_uri)):
        return f"python -m experiments dashboard --tracking-uri {redact(tracking_uri)}"
    return f"python -m experiments dashboard --storage {redact(storage_url)}"


def is_rdb(url: str) -> bool:
    return "://" in url


def retry(study, trial) -> None:
    """Queue the parameters of a trial that never finished (`retry_of` it), to run again."""
    if trial.params:
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_ATTR: trial.number})


@functools.cache
def open_storage(url: str):
    """A journal file path -> JournalStorage; an RDB URL -> RDBStorage with heartbeats.

    One object per URL and process: the study is opened on it, and the trial recovery and
    heartbeats below reach the same storage through it, by public storage methods."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if is_rdb(url):
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_INTERVAL,
            grace_period=GRACE_PERIOD,
            heartbeat_stale_trial_callback=retry,
        )
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


# --- the study lock --------------------------------------------------------------------


_pg_connections: dict[str, Any] = {}


@contextlib.contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """Serialize "count trials, then ask for one" between all workers of a study."""
    if url.startswith("postgresql"):
        with _pg_advisory_lock(url, study_name):
            yield
        return
    if is_rdb(url) and not url.startswith("sqlite"):
        raise ValueError(
            f"--storage {redact(url)}: only journal files, sqlite:/// and postgresql:// "
            "storages can be shared safely by workers"
        )
    folder = Path(url[len("sqlite:///") :]).parent if is_rdb(url) else Path(url).parent
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(study_name.encode()).hexdigest()[:12]
    with open(folder / f".study-{digest}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _pg_advisory_lock(url: str, study_name: str) -> Iterator[None]:
    import sqlalchemy

    key = int.from_bytes(hashlib.sha1(f"optuna:{study_name}".encode()).digest()[:8], "big")
    key -= 1 << 63  # PostgreSQL advisory keys are signed 64-bit
    conn = _pg_connections.get(url)
    if conn is None:
        conn = _pg_connections[url] = sqlalchemy.create_engine(url).connect()
    conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
    try:
        yield
    finally:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        conn.commit()


# --- who runs a trial, and is it still alive -------------------------------------------


def this_worker() -> str:
    """`host:pid:start time` of this process, as recorded on the trials it runs."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{process_start_time(pid) or '?'}"


def worker_alive(owner: str | None) -> bool | None:
    """True/False for a worker on this host; None when it runs elsewhere (heartbeat decides)."""
    if not owner:
        return False  # asked but never claimed: its process died inside the study lock
    host, pid, started = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    return process_alive(int(pid), None if started == "?" else started)


def trial_storage_id(storage, study_name: str, number: int) -> int:
    """The storage's id of trial `number`: what its public per-trial methods take."""
    study_id = storage.get_study_id_from_name(study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def recover_dead_trials(study, url: str, on_recovered: Callable[[Any], None]) -> None:
    """Fail RUNNING trials whose worker is gone, queue their params again.

    Call it under the study lock: a trial being asked by a live worker is claimed inside
    the same lock, so an unclaimed RUNNING trial seen here belongs to a dead process.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)  # RDB heartbeats (other hosts); no-op otherwise
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if worker_alive(trial.user_attrs.get(WORKER_ATTR)) is not False:
            continue
        storage = open_storage(url)
        trial_id = trial_storage_id(storage, study.study_name, trial.number)
        storage.set_trial_user_attr(trial_id, "failed_because", "worker process died")
        try:
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile by someone else
        retry(study, trial)
        on_recovered(trial)


class Heartbeat:
    """Record an RDB trial's heartbeat from a thread while it runs (ask/tell has none)."""

    def __init__(self, storage, trial_id: int) -> None:
        self._stop = threading.Event()
        self._thread = None
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        if interval:
            storage.record_heartbeat(trial_id)
            self._thread = threading.Thread(
                target=self._beat, args=(storage, trial_id, interval), daemon=True
            )
            self._thread.start()

    def _beat(self, storage, trial_id: int, interval: int) -> None:
        while not self._stop.wait(interval):
            storage.record_heartbeat(trial_id)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
