"""The tracking store stops answering during a run: how long MLflow's client waits, and how
that failure is recognised once the wait is over.

MLflow's client retries a request to a tracking server that does not answer; the project
sets that retry window explicitly (`RETRY_ENV`, in the environment of every command and
the processes it starts; a value the user exported wins). The window's values, and what a
run does when an outage outlasts it (last.ckpt kept, one paragraph, exit 1, the run marked
FAILED later as orphaned): docs/tracking.md (When the store is down).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

#: MLflow client's retry settings, set explicitly (docs: tracking.md, "When the store is down")
RETRY_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "120",
}
BACKOFF_MAX_S = 120  # urllib3's cap on one backoff wait

#: what the exceptions of an unreachable or locked store say (requests, urllib3, SQLite)
OUTAGE_WORDS = (
    "Max retries exceeded",
    "Connection refused",
    "Read timed out",
    "ConnectTimeout",
    "RemoteDisconnected",
    "database is locked",
)


def set_retry_window() -> None:
    for key, value in RETRY_ENV.items():
        os.environ.setdefault(key, value)


def retry_window_s() -> float:
    """Seconds MLflow's client waits for a server that refuses connections (backoff only)."""
    settings = {**RETRY_ENV, **os.environ}
    retries = int(settings["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    factor = float(settings["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])
    return sum(min(factor * 2**i, BACKOFF_MAX_S) for i in range(retries))


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) says the store did not answer."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = f"{type(exc).__name__}: {exc}"
        if any(word in text for word in OUTAGE_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def outage_message(uri: str, run_id: str, exc: BaseException, checkpoint, resume: str) -> str:
    """The one paragraph a run ended by an outage prints: what failed, the store, what is
    kept, what happens to the run, and the command that resumes it."""
    from experiments.tracking.store import redact

    detail = " ".join(str(exc).split("[SQL:")[0].split())  # not the SQL statement
    detail = detail[:200] + ("..." if len(detail) > 200 else "")
    kept = (
        f"its checkpoint is kept at {checkpoint}"
        if checkpoint.is_file()
        else "it had no checkpoint yet, so there is nothing to resume: run it again"
    )
    return (
        f"the tracking store {redact(uri)} stopped answering during run {run_id}, longer than "
        f"the client waits ({detail}). Training stopped and {kept}. The store could not be "
        "told, so the run shows RUNNING until the next command that reaches the store marks "
        "it FAILED (orphaned). Once the store answers again, resume it with: "
        f"{resume}"
    )


class OutageNotice(logging.Filter):
    """Inside the retry window: one line when the store stops answering, one when it is back.

    Installed on urllib3's connection-pool logger, whose "Retrying (...)" warning MLflow's
    client causes on every retry (a public log record of urllib3's). The retries of the
    training thread say the store stopped answering; they are swallowed, and the first one
    prints one line. The training thread's logging calls block until the store answers, so
    the next `back_if_down` call from it (a Lightning hook) means it answered again. Other
    threads' retries (the system-metrics monitor) are swallowed silently. So is the
    traceback MLflow's SQL store logs when a SQLite lock outlasts its 20 s busy timeout:
    the run then ends with the runner's one paragraph.
    """

    def __init__(self, uri: str) -> None:
        super().__init__()
        self.uri = uri
        self.down_since: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == SQL_STORE:  # a SQLite lock the client waited out: the runner says it
            return not any(word in record.getMessage() for word in OUTAGE_WORDS)
        if not record.getMessage().startswith("Retrying"):
            return True
        if record.threadName == threading.main_thread().name and self.down_since is None:
            self.down_since = time.monotonic()
            print(
                f"warning: the tracking store {self.uri} does not answer; MLflow's client "
                f"retries for about {retry_window_s():.0f} s, training waits",
                file=sys.stderr,
                flush=True,
            )
        return False

    def back_if_down(self) -> None:
        if self.down_since is not None:
            waited = time.monotonic() - self.down_since
            self.down_since = None
            print(
                f"the tracking store {self.uri} answers again (after {waited:.0f} s); "
                "training goes on",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> OutageNotice:
        for name in (URLLIB3_POOL, SQL_STORE):
            logging.getLogger(name).addFilter(self)
        return self

    def __exit__(self, *exc) -> None:
        for name in (URLLIB3_POOL, SQL_STORE):
            logging.getLogger(name).removeFilter(self)


URLLIB3_POOL = "urllib3.connectionpool"
#: MLflow's SQL store logs an OperationalError with its traceback before raising it
SQL_STORE = "mlflow.store.db.utils"
