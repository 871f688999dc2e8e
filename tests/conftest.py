"""Shared fixtures: small datasets in the real on-disk formats, a throw-away MLflow store, and
a helper that runs the CLI in a fresh process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

# Keep a developer's MLFLOW_TRACKING_URI from leaking into tests that expect the default.
os.environ.pop("MLFLOW_TRACKING_URI", None)


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


def data_overrides(name: str, fashion_dir, cifar_dir) -> list[str]:
    """Overrides that point an experiment at the tiny data and keep the run short."""
    cifar = name.startswith("s0")
    return [
        "--data.data_dir",
        str(cifar_dir if cifar else fashion_dir),
        "--data.val_size",
        "20" if cifar else "100",
        "--data.download",
        "false",
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]


REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path, home: Path | None = None, timeout: float = 120):
    """`python -m experiments ARGS` in a fresh process with a minimal environment."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "experiments", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def free_port(ports: range, exclude: tuple[int, ...] = ()) -> int:
    """The first port of `ports` (not in `exclude`) that can be bound on 127.0.0.1."""
    for port in ports:
        if port in exclude:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1} on 127.0.0.1")
