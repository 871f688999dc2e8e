"""Command-line overrides that point an experiment at conftest's tiny data, and search spaces."""

from __future__ import annotations

from pathlib import Path

import yaml


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
        # No thread probe (a run's default, training/threads.py): the tests' runs are
        # compared with each other, not timed; tests/test_threads.py drops this to probe.
        "--threads",
        "1",
    ]


def catalog_overrides(name: str, fashion_dir, cifar_dir) -> list[str]:
    """`data_overrides` for catalog experiment `name` with two points per learning curve: two
    epochs (the tiny data's every batch), or for the step-driven s4-mlp 20 iterations with
    validation every 10. What conftest's `catalog_run` trains each catalog experiment with."""
    overrides = data_overrides(name, fashion_dir, cifar_dir)
    if name == "s4-mlp":
        at = overrides.index("--trainer.max_epochs")
        del overrides[at : at + 2]
        return [
            *overrides,
            "--trainer.max_epochs",
            "-1",
            "--trainer.max_steps",
            "20",
            "--trainer.val_check_interval",
            "10",
        ]
    overrides[overrides.index("--trainer.max_epochs") + 1] = "2"
    return overrides


def tiny(fashion_dir, epochs: int = 1) -> list[str]:
    """`data_overrides` for s1-mlp on the tiny Fashion-MNIST, trained for `epochs` epochs."""
    overrides = data_overrides("s1-mlp", fashion_dir, None)
    overrides[overrides.index("--trainer.max_epochs") + 1] = str(epochs)
    return overrides


def write_space(path: Path, params: dict) -> Path:
    """A search-space YAML file at `path` with these `params`; returns `path`."""
    path.write_text(yaml.safe_dump({"description": "test space", "params": params}))
    return path
