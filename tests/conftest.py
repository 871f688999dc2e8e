"""Shared fixtures: small datasets in the real on-disk formats and throw-away MLflow stores;
the `RunIf` marker's hooks. Plain helpers (REPO, run_cli, data_overrides, ...) are in
tests/helpers/."""

from __future__ import annotations

import os
import shutil

# Keep a developer's MLFLOW_TRACKING_URI from leaking into tests that expect the default:
# before anything imports experiments.tracking.store, which reads it once (USER_TRACKING_URI).
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest

from tests.helpers import run_if


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


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite MLflow store in a temporary working directory; returns its URI."""
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path}/mlruns/mlflow.db"


@pytest.fixture(scope="session")
def empty_store_db(tmp_path_factory):
    """An MLflow SQLite database with its schema created once per session: the schema
    migrations take seconds, so tests that only need *a* store start from a copy."""
    from mlflow import MlflowClient

    db = tmp_path_factory.getbasetemp() / "mlflow-empty-store" / "mlflow.db"
    if not db.exists():
        db.parent.mkdir(exist_ok=True)
        MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def migrated_store(tmp_path, monkeypatch, empty_store_db):
    """Like `store`, but the database already exists (a copy of the migrated empty one)."""
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "mlruns" / "mlflow.db"
    target.parent.mkdir(parents=True)
    shutil.copyfile(empty_store_db, target)
    return f"sqlite:///{target}"
