"""`python -m experiments compare`: runs of a real SQLite MLflow store, grouped, mean +- std.

python -m pytest tests/test_compare.py
"""

from __future__ import annotations

import pytest

from experiments.reports import compare
from experiments.tracking import store as tracking_store


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Six runs as the S4 comparison leaves them: activation param, test metrics, states.

    One store for the module (the tests only read it): creating a SQLite store runs
    MLflow's schema migrations, the slow part here.
    """
    store = f"sqlite:///{tmp_path_factory.mktemp('compare')}/mlruns/mlflow.db"
    client = tracking_store.client(store)
    experiment = tracking_store.ensure_experiment(client, store, "fashion-mnist")
    made = [
        ("relu", 0.80, "FINISHED", "s4-mlp"),
        ("relu", 0.82, "FINISHED", "s4-mlp"),
        ("relu", 0.84, "FINISHED", "s4-mlp"),
        ("tanh", 0.70, "FINISHED", "s4-mlp"),
        ("tanh", 0.74, "FINISHED", "s1-mlp"),
        ("selu", 0.99, "KILLED", "s4-mlp"),
    ]
    for i, (activation, acc, status, name) in enumerate(made):
        tags = {"experiment": name}
        if name == "s1-mlp":
            tags.update(study_name="activation-s1-mlp", study_role="trial")
        run = client.create_run(experiment, run_name=f"run-{i}", tags=tags)
        run_id = run.info.run_id
        client.log_param(run_id, "model.activation", activation)
        client.log_param(run_id, "trial.activation", activation)
        client.log_metric(run_id, "test/acc", acc)
        client.log_metric(run_id, "test/f1", acc - 0.1)
        client.set_terminated(run_id, status)
    return store


def test_groups_show_mean_and_sample_std(runs, capsys):
    assert compare.main(["--tracking-uri", runs, "--group-by", "activation"]) == 0
    out = capsys.readouterr().out
    groups = out.split("grouped by activation (params model.activation):")[1].splitlines()
    relu = next(line for line in groups if line.startswith("relu"))
    tanh = next(line for line in groups if line.startswith("tanh"))
    assert "0.8200 +- 0.0200 (n=3)" in relu and "0.8000..0.8400" in relu
    assert "0.7200 +- 0.0283 (n=2)" in tanh
    assert groups.index(relu) < groups.index(tanh)  # best mean first
    assert "selu" not in out  # KILLED runs are left out unless --all-states


def test_all_states_metrics_and_filters(runs, capsys):
    argv = ["--tracking-uri", runs, "--group-by", "model.activation", "--all-states"]
    assert compare.main([*argv, "--metric", "test/acc", "--metric", "test/f1"]) == 0
    out = capsys.readouterr().out
    assert "KILLED" in out and "0.9900 (n=1)" in out
    assert "test/f1 mean +- std" in out and "0.7200 +- 0.0200 (n=3)" in out

    assert compare.main(["--tracking-uri", runs, "--study", "activation-s1-mlp"]) == 0
    out = capsys.readouterr().out
    assert "run-4" in out and "run-0" not in out

    assert compare.main(["--tracking-uri", runs, "--group-by", "tag.experiment"]) == 0
    out = capsys.readouterr().out
    assert "0.7900 +- 0.0622 (n=4)" in out  # s4-mlp: 0.80, 0.82, 0.84, 0.70
    assert "s1-mlp" in out


def test_bad_input_is_named(runs, tmp_path, capsys):
    assert compare.main(["--tracking-uri", runs, "--group-by", "optimizer"]) == 2
    assert "'optimizer' is not a param" in capsys.readouterr().err
    assert compare.main(["--tracking-uri", runs, "--experiment", "cifar"]) == 2
    assert "experiment 'cifar' not found; the store has: " in capsys.readouterr().err
    assert compare.main(["--tracking-uri", runs, "--filter", "params.x ==== 1"]) == 2
    assert "--filter" in capsys.readouterr().err
    empty = f"sqlite:///{tmp_path}/nowhere/mlflow.db"
    assert compare.main(["--tracking-uri", empty]) == 2
    assert "no MLflow store" in capsys.readouterr().err


def test_mean_std_of_none_one_and_two_values():
    import math

    from experiments.reports.stats import mean_std

    mean, std = mean_std([])
    assert math.isnan(mean) and std is None  # nothing to average
    assert mean_std([0.7]) == (0.7, None)  # one value: a mean, but no sample spread
    mean, std = mean_std([0.70, 0.74])
    assert mean == pytest.approx(0.72)
    assert std == pytest.approx(math.sqrt(((0.70 - 0.72) ** 2 + (0.74 - 0.72) ** 2) / 1))
