"""Shared fixtures: small datasets in the real on-disk formats, throw-away MLflow stores,
trained runs shared by the session; the `RunIf` marker's hooks. Plain helpers (REPO, run_cli,
run_main, data_overrides, copy_store, ...) are in tests/helpers/.

Which fixture for a new test (the suite's time goes to training, store creation and fresh
processes, so take the cheapest that keeps the test's point):

* data: `fashion_dir` (600/200 images), `cifar_dir` (20/6 per fine class), session-scoped.
* a store to write to: `store` (a copy of the migrated empty database, cwd = its folder);
  `no_store` when the test asserts that nothing creates a store.
* a trained run to read: `catalog_run(name)` (every catalog experiment, two epochs) or
  `registered_model` (s1-mlp registered as `fashion-mlp`, system metrics on): trained once per
  session and shared, so READ-ONLY; to change one, work on `copy_store(uri, tmp_path)`.
* a command: `run_main(...)` in this process; `run_cli(...)` (a fresh process, ~6 s of
  imports) only where the process is the point: signals, exit codes, the entry point, output
  on a terminal, the environment a process starts with.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# Keep a developer's MLFLOW_TRACKING_URI from leaking into tests that expect the default:
# before anything imports experiments.tracking.store, which reads it once (USER_TRACKING_URI).
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest

from tests.helpers import catalog_overrides, run_if, tiny

if TYPE_CHECKING:
    from experiments.training.config import ResolvedConfig
    from experiments.training.runner import RunResult


def pytest_configure(config):
    run_if.register(config)


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: only selected tests are checked
def pytest_collection_modifyitems(items):
    """`RunIf`: a test whose system component is missing is skipped, with the reason."""
    run_if.skip_missing(items)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """`RunIf` under EXPERIMENTS_REQUIRE_ALL=1 (CI): a missing component fails the test
    instead, before any of its fixtures is set up."""
    run_if.fail_missing(item)


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory):
    """A tiny Fashion-MNIST (gzip IDX files in torchvision's layout): 600 train / 200 test."""
    from datamodules.synthetic import write_fashion_mnist

    return write_fashion_mnist(tmp_path_factory.mktemp("fashion"), n_train=600, n_test=200)


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory):
    """A tiny CIFAR-100 (`cifar-100-python` pickles): 20 train / 6 test images per fine class."""
    from datamodules.synthetic import write_cifar100

    return write_cifar100(
        tmp_path_factory.mktemp("cifar"), n_train_per_class=20, n_test_per_class=6
    )


@pytest.fixture(scope="session")
def empty_store_db(tmp_path_factory):
    """An MLflow SQLite database with its schema created once per session: the schema
    migrations take seconds, so tests that only need *a* store start from a copy."""
    from mlflow import MlflowClient

    db = tmp_path_factory.getbasetemp() / "mlflow-empty-store" / "mlflow.db"
    if not db.exists():
        db.parent.mkdir(exist_ok=True)
        cwd = Path.cwd()
        os.chdir(db.parent)  # MLflow puts the Default experiment's artifacts under ./mlruns
        try:
            MlflowClient(f"sqlite:///{db}").search_experiments()
        finally:
            os.chdir(cwd)
    return db


@pytest.fixture
def store(tmp_path, monkeypatch, empty_store_db):
    """A SQLite MLflow store of its own in a temporary working directory (the cwd); returns its
    URI. The database is a copy of the session's migrated empty one (`empty_store_db`): no
    schema migrations per test. A test that asserts that no store gets created uses
    `no_store` instead."""
    monkeypatch.chdir(tmp_path)
    return _store_from(empty_store_db, tmp_path)


@pytest.fixture
def migrated_store(tmp_path, monkeypatch, empty_store_db):
    """The same store as `store` (the name of the tests written before `store` copied the
    database; some modules define their own `store` as this one)."""
    monkeypatch.chdir(tmp_path)
    return _store_from(empty_store_db, tmp_path)


@pytest.fixture
def no_store(tmp_path, monkeypatch):
    """An empty temporary working directory (the cwd) and the URI of a SQLite store that does
    not exist yet (`mlruns/mlflow.db` in it): for the tests that assert that a refused command
    creates no store, no `mlruns` folder, no run."""
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path}/mlruns/mlflow.db"


# --- trained runs shared by the whole session (read-only) -------------------------------
#
# Training is the suite's main cost, so each of these runs is trained once per session (per
# pytest-xdist worker) and shared by every test that only reads it. A test that changes the
# store (logs a run, resumes, deletes, corrupts a file) works on `copy_store(...)` of it.


@dataclass(frozen=True)
class TrainedRun:
    """A finished run in a shared store: its store's URI, the runner's RunResult, its config."""

    uri: str
    result: RunResult
    cfg: ResolvedConfig


@pytest.fixture(scope="session")
def catalog_run(tmp_path_factory, fashion_dir, cifar_dir, empty_store_db):
    """`catalog_run(name)`: catalog experiment `name` trained on the tiny data with
    `catalog_overrides` (two epochs, or s4-mlp's 20 iterations validated every 10), once per
    session, all of them into one shared store; returns a `TrainedRun`. READ-ONLY: a test that
    changes the store uses `copy_store(run.uri, tmp_path)`."""
    from experiments.training.config import parse
    from experiments.training.runner import run_experiment

    uri = _store_from(empty_store_db, tmp_path_factory.mktemp("catalog-runs"))
    trained: dict[str, TrainedRun] = {}

    def get(name: str) -> TrainedRun:
        if name not in trained:
            cfg = parse(name, catalog_overrides(name, fashion_dir, cifar_dir))
            trained[name] = TrainedRun(uri, run_experiment(cfg, uri), cfg)
        return trained[name]

    return get


@pytest.fixture(scope="session")
def registered_model(tmp_path_factory, fashion_dir, empty_store_db):
    """One tiny s1-mlp run (two epochs on `fashion_dir`) logged with its model, registered as
    `fashion-mlp` (version 1), system metrics sampled every 0.5 s; a `TrainedRun`, trained once
    per session for the model, registry and inference tests. READ-ONLY: a test that logs to the
    store (evaluate, a new run) uses `copy_store(registered_model.uri, tmp_path)`."""
    from experiments.training.config import parse
    from experiments.training.outputs import RunOutputs
    from experiments.training.runner import run_experiment

    uri = _store_from(empty_store_db, tmp_path_factory.mktemp("registered-model"))
    cfg = parse("s1-mlp", tiny(fashion_dir, epochs=2))
    outputs = RunOutputs(register="fashion-mlp", system_metrics_s=0.5)
    result = run_experiment(cfg, uri, verbose=False, outputs=outputs)
    assert result.status == "FINISHED"
    return TrainedRun(uri, result, cfg)


def _store_from(empty_store_db: Path, folder: Path) -> str:
    """The store `folder`/mlruns/mlflow.db, a copy of the migrated empty database unless it
    is there already (a test may ask for both `store` and `migrated_store`); its URI."""
    target = folder / "mlruns" / "mlflow.db"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_store_db, target)
    return f"sqlite:///{target}"
