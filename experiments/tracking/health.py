"""Is the store usable, and is the process that owns a run still alive?

Used by the runner before anything trains, by `--resume`, by the search workers and by
`python -m experiments doctor`. Every run records which process owns it, so a run left
RUNNING by a killed process is found later and marked FAILED (docs/faults-and-security.md).
"""

from __future__ import annotations

import os
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from experiments.errors import StoreError
from experiments.tracking import store
from experiments.tracking.store import redact

#: Seconds a tracking server or database gets to answer the pre-flight check.
REACHABILITY_TIMEOUT = 5.0

#: Tags that say which process owns a RUNNING run (see `process_state`).
PID_TAG = "process.pid"
HOST_TAG = "process.host"
START_TAG = "process.start"
BOOT_TAG = "process.boot_id"


# --- pre-flight: the store answers and can be written -------------------------------------


def check_tracking_server(uri: str, timeout: float = REACHABILITY_TIMEOUT) -> None:
    """Raise StoreError at once if a remote tracking store does not answer.

    MLflow itself retries an unreachable HTTP server for minutes
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7 with exponential backoff) and SQLAlchemy retries a
    database 10 times; one short request up front turns that into an immediate, clear error.
    """
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                return
        except urllib.error.HTTPError:
            return  # it answered: reachable, whatever it thinks of /health
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreError(
                f"tracking server {redact(uri)} is unreachable ({reason}); nothing was trained or "
                "recorded. Start it (`python -m experiments server` or `python -m experiments "
                "ui`) or point --tracking-uri / MLFLOW_TRACKING_URI at a running server."
            ) from exc
    elif scheme in ("postgresql", "mysql", "mssql"):
        default_port = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}[scheme]
        host, port = parsed.hostname or "localhost", parsed.port or default_port
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise StoreError(
                f"tracking database {scheme}://{host}:{port} is unreachable "
                f"({exc.strerror or exc}); nothing was trained or recorded."
            ) from exc


def check_local_storage(uri: str) -> None:
    """Raise StoreError unless the local store folder and its checkpoint folder are writable."""
    root = store.local_root(uri)
    folder = root / "checkpoints"
    for path in (root, folder):
        if path.exists() and not path.is_dir():
            raise StoreError(
                f"{path} is not a directory: the store folder {root} must be a writable "
                "directory for the tracking database and checkpoints; nothing was trained or "
                "recorded. Move the file away or point --tracking-uri elsewhere."
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"probe")
            probe.flush()
    except OSError as exc:
        where = exc.filename or folder
        raise StoreError(
            f"cannot write to {where} ({exc.strerror or exc}): the store folder {root} must be "
            "a writable directory for the tracking database and checkpoints; nothing was "
            "trained or recorded. Fix its permissions or point --tracking-uri elsewhere."
        ) from exc


# --- which process owns a run, and is it alive ------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def process_start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), or None if there is no such pid.

    Field 22 of /proc/PID/stat: it tells the original process from a later one that was
    given the same pid.
    """
    stat = _proc_stat(pid)
    return stat[19] if stat else None


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether `pid` on this host is a live process (not a zombie) that started at `started`.

    `started` None (or "unknown") skips the start-time check. The one liveness check of the
    project: run owners here, Optuna trial workers in `experiments.search.storage`.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is None:
        return False
    if stat[0] in ("Z", "X"):  # zombie: killed, not yet reaped
        return False
    return started in (None, "unknown") or stat[19] == started


def process_tags(pid: int | None = None) -> dict[str, str]:
    """Tags naming the process that owns a run: host, pid, its start time and the boot id."""
    pid = os.getpid() if pid is None else pid
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        START_TAG: process_start_time(pid) or "unknown",
        BOOT_TAG: _boot_id(),
    }


def process_state(tags: Mapping[str, str]) -> str:
    """'alive', 'dead' or 'unknown' (no process tags, or another host) for a run's tags."""
    pid_text = tags.get(PID_TAG, "")
    if not pid_text.isdigit() or tags.get(HOST_TAG) != socket.gethostname():
        return "unknown"
    if tags.get(BOOT_TAG, "unknown") not in ("unknown", _boot_id()):
        return "dead"  # the machine rebooted since
    return "alive" if process_alive(int(pid_text), tags.get(START_TAG)) else "dead"


def running_runs(client) -> list:
    """Every RUNNING run in every active experiment of the store."""
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs: list = []
    token = None
    while experiment_ids:
        page = client.search_runs(
            experiment_ids,
            filter_string="attributes.status = 'RUNNING'",
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


def mark_orphaned_runs(client, found_by: str, *, dry_run: bool = False) -> list:
    """Mark FAILED each RUNNING run whose process on this host is gone; returns those runs."""
    orphans = [r for r in running_runs(client) if process_state(r.data.tags) == "dead"]
    if dry_run:
        return orphans
    for run in orphans:
        tags = run.data.tags
        client.set_tag(run.info.run_id, "failure_reason", "orphaned")
        client.set_tag(
            run.info.run_id,
            "end_reason",
            f"process {tags.get(PID_TAG)} on {tags.get(HOST_TAG)} ended without closing the run "
            f"(killed or crashed); marked FAILED by {found_by}",
        )
        client.set_terminated(run.info.run_id, "FAILED")
    return orphans
