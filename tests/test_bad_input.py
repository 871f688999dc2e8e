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


# --- every case the issue quoted: refused in words, nothing created ------------------------

NOT_IN_WORDS = (
    "Traceback",
    "NestedArg",
    "Subtypes",
    "<class",
    "Namespace(",
    "PositiveInt",
    "typing.",
    "expected null",
)


def _gpu_present() -> bool:
    import torch

    return torch.cuda.is_available()


#: (argv, fragments of the message). Each was a traceback, a run created by input that
#: should have been refused, an exit 0 with the input accepted, or internals in the message.
QUOTED = [
    (["run", "s1-mlp", "--epochs", "-5"], ["--trainer.max_epochs -5", "at least 1"]),
    (["run", "s1-mlp", "--trainer.accelerator", "gpu"], ["--trainer.accelerator gpu", "cpu"]),
    (["run", "s1-mlp", "--trainer.max_time", "forever"], ["--trainer.max_time forever", "DD:HH"]),
    (["run", "s1-mlp", "--trainer.limit_train_batches", "-1"], ["limit_train_batches -1"]),
    (["run", "s1-mlp", "--trainer.limit_train_batches", "1.5"], ["limit_train_batches 1.5"]),
    (["run", "s1-mlp", "--tracking-uri", "ftp://127.0.0.1/x"], ["ftp://", "sqlite:///"]),
    (["run", "s1-mlp", "--seed", "-1"], ["--seed -1", "4294967295"]),
    (["run", "s1-mlp", "--seed", "99999999999"], ["--seed 99999999999", "4294967295"]),
    (["run", "s1-mlp", "--data.data_dir", "/nonexistent"], ["/nonexistent: no such folder"]),
    (["run", "s1-mlp", "--data.data_dir", "EMPTY"], ["does not hold Fashion-MNIST"]),
    (["run", "s1-mlp", "--trainer.max_epochs", "0"], ["--trainer.max_epochs 0", "at least 1"]),
    (["run", "s1-mlp", "--trainer.max_epochs", "null"], ["max_epochs null", "no end"]),
    (["run", "s1-mlp", "--trainer.devices", "99"], ["--trainer.devices 99", "this machine"]),
    (["run", "s1-mlp", "--model.lr", "abc"], ["--model.lr abc: not a number", "above 0"]),
    (
        ["run", "s1-mlp", "--threads", "abc"],
        ["--threads abc", "whole number above 0 or adaptive, or null"],
    ),
    (
        ["run", "s1-mlp", "--model.class_path", "builtins.eval"],
        ["--model.class_path builtins.eval", "LightningModule subclass"],
    ),
    (["run", "s1-mlp", "--register", "a/b"], ["--register 'a/b'", "not a model name"]),
    (["run", "s1-mlp", "--register", ""], ["--register ''", "not a model name"]),
    (["run", "--config", "missing.yaml"], ["missing.yaml: no such file"]),
    (["run", "--config", "LATIN1"], ["is not UTF-8 text"]),
    (["search", "lr", "--storage", "redis://x"], ["--storage redis://x", "journal file"]),
    (["search", "lr", "--study-name", "../../x"], ["--study-name '../../x'", "plain name"]),
    (["search", "lr", "--storage", "/nonexistent/dir/j.log"], ["no such folder /nonexistent"]),
    (["search", "lr", "--data.batch_size", "-1"], ["--data.batch_size -1: must be above 0"]),
    (["run", "s1-mlp", "--epoch", "3"], ["unknown key --epoch; did you mean --epochs?"]),
    (["run", "s1-mlp", "--batch_sise", "3"], ["did you mean --batch_size?"]),
]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _store_rows(db: Path) -> tuple[int, ...]:
    import sqlite3

    with sqlite3.connect(db) as con:
        return tuple(
            con.execute(f"select count(*) from {table}").fetchone()[0]
            for table in ("experiments", "runs", "registered_models")
        )


@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
@pytest.mark.parametrize(("argv", "expected"), QUOTED, ids=lambda v: " ".join(v) if v else None)
def test_quoted_bad_input_is_refused_in_words_with_nothing_created(
    argv, expected, check, migrated_store, tmp_path, capsys
):
    if "gpu" in argv and _gpu_present():
        pytest.skip("a GPU is present: --trainer.accelerator gpu is allowed here")
    (tmp_path / "empty").mkdir()
    (tmp_path / "latin1.yaml").write_bytes("seed: 1  # caf\xe9\n".encode("latin-1"))
    argv = [
        {"EMPTY": str(tmp_path / "empty"), "LATIN1": str(tmp_path / "latin1.yaml")}.get(a, a)
        for a in argv
    ]
    db = tmp_path / "mlruns" / "mlflow.db"
    before, rows, around = _files(tmp_path), _store_rows(db), _files(tmp_path.parent)
    assert cli([*argv, *(["--check"] if check else [])]) == 2
    captured = capsys.readouterr()
    for fragment in expected:
        assert fragment in captured.err, (fragment, captured.err)
    for word in NOT_IN_WORDS:
        assert word not in captured.err + captured.out, (word, captured.err)
    assert _files(tmp_path) == before  # no run folder, journal, study or checkpoint
    assert _store_rows(db) == rows  # no experiment, run or registered model
    assert _files(tmp_path.parent) == around  # nothing beside the test's folder either


def test_check_creates_nothing_not_even_the_store(no_store, tmp_path, capsys):
    # `--check` on every command that trains or records: exit 0 and no mlruns/ at all.
    for argv in (
        ["run", "s4-mlp", "--trainer.max_steps", "5"],
        ["search", "lr", "--trials", "2"],
        ["compare-activations", "--seeds", "1"],
    ):
        assert cli([*argv, "--check"]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert "nothing was created (--check)" in out
        assert list(tmp_path.iterdir()) == []


def test_a_run_makes_the_checks_of_check_before_its_mlflow_run(migrated_store, tmp_path, capsys):
    # The real run refuses what `--check` refuses, before its MLflow run exists: Lightning
    # would only find these once the run had started (a FAILED run) or never (max_epochs 0
    # left a FINISHED untrained run).
    db = tmp_path / "mlruns" / "mlflow.db"
    rows = _store_rows(db)
    for bad in (["--trainer.max_epochs", "0"], ["--trainer.limit_train_batches", "1.5"]):
        assert cli(["run", "s1-mlp", *bad]) == 2
        assert bad[0] in capsys.readouterr().err
    assert _store_rows(db) == rows
    assert not (tmp_path / "mlruns" / "checkpoints").exists()


def test_run_config_file_with_overrides_runs_one_epoch(migrated_store, fashion_dir, tmp_path):
    from mlflow import MlflowClient

    from experiments.training.config import parse
    from tests.helpers import tiny

    resolved = tmp_path / "best_config.yaml"
    resolved.write_text(parse("s1-mlp", tiny(fashion_dir, epochs=3)).as_yaml())
    argv = ["run", "--config", str(resolved), "--trainer.max_epochs", "1", "--no-system-metrics"]
    assert cli(argv) == 0
    client = MlflowClient(migrated_store)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.params["trainer.max_epochs"] == "1"
    # one epoch, not the file's three: one validation point
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 1


def test_generated_key_specs_match_the_live_signatures():
    # configs/keys.json (the fast check's copy) is what the signatures say today;
    # regenerate with `python -m experiments.training.config`.
    from experiments.training import keyspec
    from experiments.training.config import generated_key_specs

    assert keyspec.KEYS_FILE.read_text() == keyspec.dump(generated_key_specs())


def test_a_mistyped_key_is_refused_before_the_libraries_are_imported(tmp_path):
    # What makes the refusal fast: neither torch, Lightning, MLflow nor jsonargparse loads.
    code = (
        "import sys; from experiments.__main__ import main; "
        "rc = main(['run', 's1-mlp', '--model.lrr', '1']); "
        "print(rc, sorted(m for m in ('torch', 'lightning', 'mlflow', 'jsonargparse') "
        "if m in sys.modules))"
    )
    import subprocess
    import sys

    from tests.helpers import REPO, child_env

    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=child_env(), capture_output=True, text=True
    )
    assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr
    assert "unknown key --model.lrr; did you mean --model.lr?" in proc.stderr
    assert list(tmp_path.iterdir()) == []
    assert REPO.is_dir()
