"""Where runs are recorded: the MLflow store, its experiments, run tags and the local checkpoint dir.

The embedded default is a SQLite store at `mlruns/mlflow.db` with artifacts under
`mlruns/artifacts/`, relative to the working directory; `MLFLOW_TRACKING_URI` or the
`--tracking-uri` flag points elsewhere (another SQLite file, or an `mlflow server`).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunsplit

from experiments.errors import StoreError

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"

#: MLFLOW_TRACKING_URI as this process was started with. Lightning's MLFlowLogger calls
#: `mlflow.set_tracking_uri(run's URI)`, which exports the variable, so read live it would
#: name the store of the last run in this process, not the user's choice: a second run
#: without --tracking-uri would follow the first (tests/test_experiments.py shows it).
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def resolve_tracking_uri(flag: str | None = None) -> str:
    """The flag wins, then MLFLOW_TRACKING_URI as the process started, then the embedded store."""
    return flag or USER_TRACKING_URI or DEFAULT_TRACKING_URI


def redact(uri: str) -> str:
    """`uri` with its password replaced by *** (`postgresql://team:secret@db` -> `team:***@db`).

    For every message, tag and log line that names a tracking URI or an Optuna storage.
    """
    parts = urlsplit(uri)
    if "://" not in uri or parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative or absolute), else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def local_root(uri: str) -> Path:
    """The folder that holds a local store's artifacts and checkpoints.

    For SQLite it is the database's folder, so a store in a temporary directory is
    self-contained; for a remote server, checkpoints are still written locally under
    ./mlruns before they are uploaded as artifacts.
    """
    db = sqlite_path(uri)
    return db.parent if db is not None else Path("mlruns")


def artifact_location(uri: str, experiment_name: str) -> str | None:
    """Artifact location for a new experiment: beside a SQLite store; a server decides itself."""
    if sqlite_path(uri) is None:
        return None
    folder = (local_root(uri) / "artifacts" / experiment_name).resolve()
    return folder.as_uri()


def checkpoint_dir(uri: str, run_id: str) -> Path:
    return local_root(uri) / "checkpoints" / run_id


#: Tracking URI schemes MLflow stores runs in (a database driver may follow `+`). A folder
#: path or file:// is MLflow's file store, which MLflow 3 refuses unless
#: MLFLOW_ALLOW_FILE_STORE=true.
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql")


def check_kind(uri: str) -> None:
    """StoreError unless `uri` names a kind of store MLflow opens (no network, no files)."""
    scheme = urlparse(uri).scheme.split("+")[0].lower() if "://" in uri else ""
    file_store = scheme in ("", "file")
    file_store_allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("true", "1")
    if file_store and uri.strip() and file_store_allowed:
        return
    if file_store or scheme not in TRACKING_SCHEMES:
        what = (
            "a folder path is MLflow's file store, which MLflow 3 no longer opens (set "
            "MLFLOW_ALLOW_FILE_STORE=true to use one)"
            if file_store and uri.strip()
            else f"{scheme}:// is not a tracking store"
            if scheme
            else "no tracking URI given"
        )
        raise StoreError(
            f"--tracking-uri {redact(uri)!r}: {what}; allowed: sqlite:///PATH.db, "
            "http(s)://HOST:PORT (an MLflow server), postgresql://, mysql:// or mssql:// "
            "(a database)"
        )


def client(uri: str):
    """An MlflowClient on `uri` (a kind of store MLflow opens), creating the SQLite file's
    folder first."""
    from mlflow import MlflowClient

    check_kind(uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


#: The kind MLflow 3's UI shows for an experiment (its experiment-kind selector; without the
#: tag the UI guesses or asks). It does not choose the UI's view: the browser's GenAI /
#: "Model training" switch does (`services.ui.runs_page`). Every experiment the project
#: creates or writes to carries it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"


def ensure_experiment(mlflow_client, uri: str, name: str) -> str:
    """The id of experiment `name`, created with a local artifact location when new; tagged as
    a model-training experiment (an older store's experiment gets the tag now)."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is None:
        try:
            return mlflow_client.create_experiment(
                name,
                artifact_location=artifact_location(uri, name),
                tags={EXPERIMENT_KIND_TAG: TRAINING_KIND},
            )
        except MlflowException:
            # Another worker created it between our lookup and create.
            found = mlflow_client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.tags.get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:
        mlflow_client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    return found.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_tags() -> dict[str, str]:
    """Tags that say what produced a run: code version, library versions, hardware."""
    tags = {
        "git_commit": git_commit(),
        "hardware": f"{_cpu_model()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
    }
    for package in ("torch", "lightning", "torchmetrics", "mlflow", "optuna"):
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            tags[f"version.{package}"] = "absent"
    return tags


def metric_history(
    client, run_id: str, key: str, *, step_offset: int = 0
) -> list[tuple[int, float]]:
    """(step + step_offset, value) points of metric `key`, by step; the last value logged at
    a step wins (a resumed run logs its interrupted epoch again at the same step).

    Lightning logs with step = iterations done - 1 (validation and epoch ends run before the
    step counter increments), so `step_offset=1` gives iteration counts: validation every
    100 iterations lands on 100, 200, ...
    """
    points = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key))
    by_step: dict[int, float] = {}
    for step, _, value in points:
        by_step[step + step_offset] = value
    return sorted(by_step.items())


def log_params(mlflow_client, run_id: str, params: Mapping[str, str]) -> None:
    """Log params in batches (MLflow takes at most 100 per call, values up to 6000 chars)."""
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        mlflow_client.log_batch(run_id, params=items[start : start + 100])


def mlflow_command() -> list[str]:
    """How to start MLflow's own CLI: the `mlflow` script beside this Python, else `-m mlflow`."""
    mlflow = shutil.which("mlflow")
    return [mlflow] if mlflow else [sys.executable, "-m", "mlflow"]


#: where `python -m experiments ui` serves a local store (its default --port)
UI_ADDRESS = "http://127.0.0.1:5000"


def run_address(uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI: on the tracking server, or where `python -m
    experiments ui` serves a local store."""
    site = uri.rstrip("/") if urlparse(uri).scheme in ("http", "https") else UI_ADDRESS
    return f"{site}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if urlparse(uri).scheme in ("http", "https"):
        return f"open {uri} in a browser"
    if uri == DEFAULT_TRACKING_URI:
        return "python -m experiments ui"
    return f"python -m experiments ui --tracking-uri {uri}"
