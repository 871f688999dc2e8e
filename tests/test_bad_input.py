"""Bad input: refused before anything trains, with the key, the value and what is allowed.

    python -m pytest tests/test_bad_input.py

Each case runs the real command (`python -m experiments ...` through its `main`, in this
process; test_experiments.py checks a real process's exit code) in an empty folder and checks that no MLflow
store, run or Optuna study was created. Override typos, bad learning rates, batch sizes,
epochs, names and search-space types are covered in test_experiments.py / test_search.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datamodules.synthetic import write_fashion_mnist, write_idx
from experiments.__main__ import main as cli
from tests.helpers import data_overrides, run_main, write_space


def nothing_recorded(folder: Path) -> bool:
    """No MLflow store (so no run) and no Optuna journal (so no study) in `folder`."""
    return not (folder / "mlruns").exists()


def test_config_file_that_does_not_parse_exits_2_naming_the_file(no_store, tmp_path, capsys):
    bad = tmp_path / "broken.yaml"
    bad.write_text("model:\n  class_path: models.ImageClassifier\n  init_args: [unclosed\n")
    code, _, err = run_main("run", str(bad), capsys=capsys)
    assert code == 2
    assert f"config file {bad} does not parse as YAML" in err
    assert "line 3" in err  # where the parser gave up
    assert nothing_recorded(tmp_path)


@pytest.mark.parametrize("fault", ["32x32 images", "90 labels for 100 images"])
def test_data_files_of_the_wrong_shape_exit_2_naming_the_file(fault, no_store, tmp_path, capsys):
    data = write_fashion_mnist(tmp_path / "data", n_train=100, n_test=20)
    raw = data / "FashionMNIST" / "raw"
    if fault == "32x32 images":  # CIFAR-sized, not 28x28
        bad = raw / "train-images-idx3-ubyte.gz"
        write_idx(bad, np.zeros((100, 32, 32), dtype=np.uint8))
        expected = f"{bad}: images are 32x32, expected 28x28"
    else:
        bad = raw / "train-labels-idx1-ubyte.gz"
        write_idx(bad, np.zeros(90, dtype=np.uint8))
        expected = f"{bad} holds 90 labels"
    overrides = data_overrides("s1-mlp", data, None)
    overrides[overrides.index("--data.val_size") + 1] = "10"
    assert cli(["run", "s1-mlp", *overrides]) == 2
    assert expected in capsys.readouterr().err
    assert nothing_recorded(tmp_path)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--resume", "0123abcd", "s1-mlp"], "takes no experiment"),
        (["run", "--resume", "0123abcd", "--model.lr", "0.1"], "takes no experiment"),
        (["run", "--resume", "0123abcd"], "there is no store at sqlite:///mlruns/mlflow.db"),
    ],
    ids=["with-name", "with-override", "no-store"],
)
def test_bad_resume_requests_exit_2(argv, expected, no_store, tmp_path, capsys):
    assert cli(argv) == 2
    assert expected in capsys.readouterr().err
    assert nothing_recorded(tmp_path)


def test_resume_of_an_unknown_run_names_it(store, capsys):
    from experiments.tracking import store as tracking_store

    tracking_store.client(store).search_experiments()  # an existing, empty store
    assert cli(["run", "--resume", "0123abcd", "--tracking-uri", store]) == 2
    assert f"--resume 0123abcd: no such run in {store}" in capsys.readouterr().err


def test_search_range_with_low_not_below_high_exits_2_without_a_study(no_store, tmp_path, capsys):
    lr = {"type": "float", "low": 0.1, "high": 0.1, "target": "model.lr"}
    space = write_space(tmp_path / "flat.yaml", {"lr": lr})
    code, _, err = run_main("search", str(space), "--trials", "2", capsys=capsys)
    assert code == 2
    assert "param 'lr'" in err and "low (0.1) must be below high (0.1)" in err
    assert nothing_recorded(tmp_path)


def test_search_range_reaching_a_negative_lr_is_refused(no_store, tmp_path, capsys):
    lr = {"type": "float", "low": -0.5, "high": 0.1, "target": "model.lr"}
    space = write_space(tmp_path / "negative.yaml", {"lr": lr})
    assert cli(["search", str(space), "--trials", "2"]) == 2
    err = capsys.readouterr().err
    assert "model.lr" in err and "-0.5" in err
    assert nothing_recorded(tmp_path)
