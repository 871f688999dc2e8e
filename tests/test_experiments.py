"""End to end: each catalog experiment runs on tiny data into a real SQLite MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from experiments.__main__ import main as cli
from experiments.training.config import ConfigError, catalog, parse
from experiments.training.runner import run_experiment
from tests.helpers import data_overrides, run_cli

EXPERIMENTS = [entry.name for entry in catalog()]

#: One epoch on the tiny generated data (datamodules/synthetic.py: a smooth prototype per
#: class plus noise, so the classes are learnable) gave test/acc 0.985-1.0 for every catalog
#: experiment at seed 0, and 0.78 at worst over seeds 0-2 (s1-cnn, seed 1); the shared runs
#: (conftest's `catalog_run`) train two epochs. Chance is 0.1
#: (10 classes) or 0.2 (the 5-class CIFAR superclass): a run that did not learn is far below.
MIN_TEST_ACC = 0.5


def test_catalog_lists_the_seven_experiments(capsys):
    assert cli(["list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == EXPERIMENTS
    tasks = {line.split()[0]: line.split()[1] for line in lines}
    assert tasks == {
        "s0-cnn": "S0.3",
        "s0-mlp": "S0.2",
        "s1-cnn": "S1.3",
        "s1-mlp": "S1.2",
        "s1-scratch": "S1.1",
        "s2-cnn": "S2",
        "s4-mlp": "S4",
    }


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_end_to_end(name, catalog_run):
    # Trained once per session (conftest's `catalog_run`): two epochs, or s4-mlp's 20 steps.
    trained = catalog_run(name)
    store, result, cfg = trained.uri, trained.result, trained.cfg
    assert result.status == "FINISHED"

    client = MlflowClient(store)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for key in ("test/acc", "test/precision", "test/recall", "test/f1", "train/loss", "val/loss"):
        assert key in metrics, key
    # One class-accuracy metric per class: 5 for the CIFAR superclass, 10 for Fashion-MNIST.
    n_classes = sum(key.startswith("test/class_acc/") for key in metrics)
    assert n_classes == (5 if name.startswith("s0") else 10)
    assert 1 / n_classes < MIN_TEST_ACC <= metrics["test/acc"] <= 1.0, metrics["test/acc"]
    assert "val/acc" in metrics and "val/precision" in metrics
    # The params are the resolved config, key by key, as the flags spell them; nothing else
    # (Lightning's own copy of the modules' arguments is off).
    params = run.data.params
    assert params == {key: str(value) for key, value in cfg.params().items()}
    assert params["seed"] == "0"
    assert params["model.class_path"] == cfg.model_class_path
    assert params["trainer.max_epochs"] == str(cfg.trainer["max_epochs"])
    if cfg.net_class_path:  # the network by class path, its arguments under model.net.
        assert params["model.net.class_path"] == run.data.tags["net_class"] == cfg.net_class_path
    tags = run.data.tags
    assert tags["task"] == cfg.task
    assert tags["experiment"] == name
    assert tags["dataset"] == (
        "cifar100-large_man-made_outdoor_things" if name.startswith("s0") else "fashion-mnist"
    )
    assert tags["lineage.source"] == "explicit"
    assert tags["version.torch"] and tags["hardware"]
    # The thread count the run used, and why (experiments/training/threads.py), are on the run
    # (the suite's runs pin one thread: tests/helpers/data.py; test_threads.py probes).
    assert (tags["torch_threads"], params["threads"]) == ("1", "1")
    assert tags["torch_threads_reason"] == "--threads (or threads: in the config)"
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert "config.yaml" in artifacts
    assert [a.path for a in client.list_artifacts(result.run_id, "checkpoints")] == [
        "checkpoints/best.ckpt"
    ]
    logged = yaml.safe_load(
        Path(client.download_artifacts(result.run_id, "config.yaml")).read_text()
    )
    assert logged["model"]["class_path"] == cfg.model_class_path
    assert logged["seed"] == 0


def test_runs_of_one_dataset_share_one_experiment(store, fashion_dir, cifar_dir):
    ids = set()
    for name in ("s1-mlp", "s2-cnn"):
        cfg = parse(
            name,
            [*data_overrides(name, fashion_dir, cifar_dir), "--trainer.limit_train_batches", "2"],
        )
        ids.add(MlflowClient(store).get_run(run_experiment(cfg, store).run_id).info.experiment_id)
    assert len(ids) == 1


def test_same_config_and_seed_give_the_same_metrics(store, fashion_dir, cifar_dir):
    overrides = [
        *data_overrides("s1-cnn", fashion_dir, cifar_dir),
        "--trainer.limit_train_batches",
        "4",
    ]
    first = run_experiment(parse("s1-cnn", overrides), store).test_metrics
    second = run_experiment(parse("s1-cnn", overrides), store).test_metrics
    other_seed = run_experiment(parse("s1-cnn", [*overrides, "--seed", "1"]), store).test_metrics
    assert first == second
    assert first["test/loss"] != other_seed["test/loss"]


def test_resolved_config_file_runs_again(store, fashion_dir, cifar_dir, tmp_path):
    cfg = parse("s1-mlp", [*data_overrides("s1-mlp", fashion_dir, cifar_dir), "--model.lr", "0.05"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.as_yaml())
    again = parse(str(path), [])
    assert again.params() == cfg.params()
    assert again.get("model.lr") == 0.05


BAD_INPUTS = [
    (["run", "s1-mlp", "--model.lr", "-1"], ["model.lr", "-1", "must be above 0"]),
    (["run", "s1-mlp", "--model.lr", "0"], ["model.lr", "0", "must be above 0"]),
    (["run", "s1-mlp", "--data.batch_size", "0"], ["data.batch_size", "0", "must be above 0"]),
    (
        ["run", "s1-mlp", "--model.optimizer", "rmsprop"],
        ["model.optimizer", "rmsprop", "adam", "sgd"],
    ),
    (
        ["run", "s4-mlp", "--model.activation", "nope"],
        [
            "model.activation",
            "nope",
            "relu",
            "leaky_relu",
            "elu",
            "selu",
            "swish",
            "sigmoid",
            "tanh",
        ],
    ),
    (
        ["run", "s0-mlp", "--data.superclass", "spaceships"],
        ["superclass", "spaceships", "large_man-made_outdoor_things", "vehicles_1"],
    ),
    (["run", "nope-experiment"], ["nope-experiment", "s1-mlp", "s4-mlp"]),
    (["run", "s1-mpl"], ["'s1-mpl' is not in the catalog", "did you mean s1-mlp?"]),
    (["run", "s1-mlp", "--trainer.max_epochs", "1.5"], ["trainer.max_epochs", "1.5"]),
    (["run", "s1-mlp", "--model.bogus", "1"], ["--model.bogus", "valid keys under 'model'", "lr"]),
    (["run", "s1-mlp", "--model.lrr", "1"], ["unknown key --model.lrr; did you mean --model.lr?"]),
    (
        ["run", "s1-mlp", "--model.activation", "rellu"],  # the old spelling, checked as the new
        ["--model.net.activation rellu: not one of relu", "did you mean relu?"],
    ),
]


@pytest.mark.parametrize(
    ("argv", "expected"),
    BAD_INPUTS,
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0] == "run" else None,
)
def test_bad_input_fails_before_any_run(argv, expected, no_store, capsys):
    assert cli(argv) == 2
    err = capsys.readouterr().err
    for fragment in expected:
        assert fragment in err, (fragment, err)
    for python in ("typing.", "Literal[", "PositiveInt", "PositiveFloat", "invalid literal"):
        assert python not in err, (python, err)  # said in words, not in Python
    # No MLflow store (hence no run) was created by a rejected command.
    assert not Path("mlruns").exists()


def test_names_and_flags_as_people_type_them_reach_the_one_key():
    # Names without regard to case or separator; short flags; `-` for `_`; the old
    # spelling of a network argument. Each lands on the key it is logged under.
    typed = "--epochs 3 --lr=0.2 --batch-size 32 --model.weight-decay 0.1 --model.hidden_sizes [7]"
    cfg = parse("S1_MLP", typed.split())
    assert cfg.name == "s1-mlp"
    assert (
        cfg.params()
        | {
            "trainer.max_epochs": 3,
            "model.lr": 0.2,
            "data.batch_size": 32,
            "model.weight_decay": 0.1,
            "model.net.hidden_sizes": [7],
        }
        == cfg.params()
    )
    assert "model.hidden_sizes" not in cfg.params()
    # Activation names in any case or separator are the registry's, in the config and run.
    for typed, canonical in (("SELU", "selu"), ("Leaky ReLU", "leaky_relu"), ("silu", "swish")):
        assert (
            parse("s1-mlp", ["--model.activation", typed]).params()["model.net.activation"]
            == canonical
        )
        assert parse("s4-mlp", [f"--model.activation={typed}"]).get("model.activation") == canonical


def test_run_help_shows_this_experiments_values_and_the_command_flags(capsys):
    assert cli(["run", "s1-mlp", "--help"]) == 0
    out = capsys.readouterr().out
    assert "* --model.lr 0.05  (default 0.001)" in out  # s1-mlp's value, the class default
    assert "* --trainer.max_epochs 30  (default null)" in out
    assert "* --model.net.hidden_sizes [512]  (default [128])" in out
    assert "\n  --model.net.activation relu\n" in out  # the same as the default: no mark
    for flag in ("--tracking-uri URI", "--config FILE", "--resume RUN_ID", "-v, --verbose"):
        assert flag in out, flag
    assert "print_shtab" not in out


def test_a_config_logged_before_net_injection_still_runs(tmp_path):
    # config.yaml of a run made with the former MLPClassifier (a resume reads it).
    old = tmp_path / "config.yaml"
    old.write_text(
        "task: S1.2\nseed: 3\nmodel:\n  class_path: models.MLPClassifier\n  init_args:\n"
        "    hidden_sizes: [32]\n    dropout: 0.1\n    lr: 0.02\n    optimizer: sgd\n"
        "data:\n  class_path: datamodules.FashionMNISTDataModule\n  init_args: {batch_size: 16}\n"
        "trainer: {max_epochs: 2}\n"
    )
    cfg = parse(str(old), [])
    assert cfg.model_class_path == "models.ImageClassifier"
    assert cfg.net_class_path == "models.components.MLP"
    assert (cfg.get("model.net.hidden_sizes"), cfg.get("model.net.dropout")) == ([32], 0.1)
    assert (cfg.get("model.lr"), cfg.get("model.optimizer"), cfg.seed) == (0.02, "sgd", 3)
    model, _ = cfg.instantiate()
    assert model.network.net[0].out_features == 32


def test_unparseable_yaml_is_named(store, tmp_path, capsys):
    bad = tmp_path / "broken.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml"):
        parse(str(bad), [])


def test_cli_exit_code_and_no_run_for_unknown_activation(tmp_path):
    proc = run_cli("run", "s4-mlp", "--model.activation", "nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert "relu, leaky_relu, elu, selu, swish, sigmoid, tanh" in proc.stderr.replace("'", "")
    assert not (tmp_path / "mlruns").exists()
