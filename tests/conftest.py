"""Shared fixtures: small datasets in the real on-disk formats and a throw-away MLflow store."""

from __future__ import annotations

import os

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
